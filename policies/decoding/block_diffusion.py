"""Block diffusion (MDLM/BDLM serving: LLaDA 2.0, SDAR): masked diffusion inside a block of B
output positions, autoregressive across blocks. The decisions live here, as plain data, so
the simulator and the real backend take exactly the same steps.

    prompt ........ | block 1 (B) | block 2 (B) | ... | last block (the rest, <= B)
                      S steps       S steps
    one step = one forward pass over the block's B positions (bidirectional among them) on
    top of the cached KV of everything before the block

Accounting (`policies/types.py`): a sequence's current block is `num_block_tokens` known but
never-computed tokens, so every scheduler allocates and schedules it like prompt tokens (a
block's KV slots are allocated when it starts; memory grows a block at a time). A chunk that
reaches the end of the block is a denoising step; a chunk that would cut the block is cut
back to the committed tokens before it (a bidirectional block cannot be split).

Which positions commit (per step, among those still masked):
    fixed            B / S of them (the last block, shorter, takes ceil(size / (B / S)) steps)
    threshold:T      every position whose confidence (top probability) is >= T, and at least
                     the most confident one (Fast-dLLM's rule), and all that are left at a
                     block's S-th step (S caps a block's steps); the real backend reads the
                     confidences, the simulator draws how many clear T (`sim/decoding.py`)
The real backend commits the most confident masked positions, however many.

When the block's last position commits, its tokens are emitted together (TTFT is the first
block's end; inter-token gaps come in bursts) and the next block starts. Its KV is then still
that of the step before the last commit, so the block is recomputed once with its final
tokens: folded into the next block's first step (that chunk computes the finished block, then
the new block's positions), which costs no extra pass. The last block's final KV is never
needed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from policies.knobs import check_knobs, knob

from policies.scheduler.base import Scheduler, WrappedScheduler
from policies.types import Plan, Request, ScheduledChunk, Sequence

DECODING_SUMMARIES = {
    "ar": "autoregressive: one token per decode step (speculators may verify more)",
    "block-diffusion": "masked diffusion within blocks of --diffusion-block positions, "
                       "--diffusion-steps denoising passes each; autoregressive across blocks",
}
"""What each `--decoding` mode does (`servesim list decodings`)."""
DECODINGS = tuple(DECODING_SUMMARIES)
DEFAULT_THRESHOLD = 0.9
"""Confidence threshold of a bare `--diffusion-commit threshold` (Fast-dLLM's default)."""


@dataclass(frozen=True, slots=True)
class DiffusionParams:
    """The decoding knobs (`--decoding`, `--diffusion-*`)."""

    decoding: str = knob("ar", choices=DECODINGS, help=(
        "ar: one token per decode step; block-diffusion: masked diffusion within blocks of "
        "--diffusion-block positions, autoregressive across blocks"))
    diffusion_block: int = knob(32, min=1, help="block diffusion: output positions per block (B)")
    diffusion_steps: int = knob(8, min=1, help=(
        "block diffusion: denoising steps per block (S): fixed commits B/S per step; threshold "
        "commits the rest at a block's S-th step"))
    diffusion_commit: str = knob("fixed", help=(
        "block diffusion: fixed (B/S positions per step) or threshold[:T] (positions with "
        f"confidence >= T, at least one, the rest at the S-th step; T defaults to "
        f"{DEFAULT_THRESHOLD})"))

    def __post_init__(self) -> None:
        check_knobs(self)
        threshold = parse_commit(self.diffusion_commit)
        if threshold is None and self.diffusion_block % self.diffusion_steps:
            raise ValueError(f"--diffusion-commit fixed commits B/S positions per step: "
                             f"--diffusion-block {self.diffusion_block} is not divisible by "
                             f"--diffusion-steps {self.diffusion_steps}")

    @property
    def enabled(self) -> bool:
        return self.decoding == "block-diffusion"

    @property
    def threshold(self) -> float | None:
        """T of `threshold:T`; None under `fixed`."""
        return parse_commit(self.diffusion_commit)

    @property
    def positions_per_step(self) -> int:
        """Positions a fixed-commit step commits (B / S)."""
        return self.diffusion_block // self.diffusion_steps


def parse_commit(text: str) -> float | None:
    """`fixed` -> None; `threshold` or `threshold:T` (0 < T <= 1) -> T."""
    if text == "fixed":
        return None
    name, sep, value = text.partition(":")
    if name != "threshold":
        raise ValueError(f"--diffusion-commit takes fixed or threshold[:T], got {text!r}")
    if not sep:
        return DEFAULT_THRESHOLD
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"--diffusion-commit threshold:T needs 0 < T <= 1, got {value!r}")
    return threshold


class BlockDiffusion:
    """Starts blocks, says how many positions a step commits, and commits a step's outcome."""

    def __init__(self, params: DiffusionParams) -> None:
        self.params = params
        self.threshold = params.threshold

    @staticmethod
    def kv_request(request: Request) -> Request:
        """`request` as the KV pool must see it: every output position holds KV at its longest
        (the last block's positions attend to each other), one more than autoregressive
        decoding, which never computes its last token's KV."""
        return replace(request, output_tokens=request.output_tokens + 1)

    def start_block(self, seq: Sequence) -> None:
        """Give `seq` its next block (the rest of its outputs, at most B), if it has none."""
        if not seq.num_block_tokens:
            seq.num_block_tokens = min(self.params.diffusion_block, seq.num_remaining_outputs)
            seq.num_block_committed = 0
            seq.num_block_steps = 0

    def num_to_commit(self, num_masked: int, num_block_steps: int,
                      confidences: list[float] | None = None,
                      num_cleared: int | None = None) -> int:
        """Positions the next step of a block commits, with `num_masked` masked ones after
        `num_block_steps` steps: fixed, B / S (or what is left); threshold, those whose
        confidence clears T, from the masked positions' `confidences` (the real backend) or
        their count `num_cleared` (the simulator's draw), at least one, and all of them at
        the S-th step."""
        if self.threshold is None:
            return min(self.params.positions_per_step, num_masked)
        if num_block_steps + 1 >= self.params.diffusion_steps:
            return num_masked
        if confidences is not None:
            if len(confidences) != num_masked:
                raise RuntimeError(f"{len(confidences)} confidences for {num_masked} masked "
                                   f"positions")
            num_cleared = sum(1 for c in confidences if c >= self.threshold)
        if num_cleared is None:
            raise ValueError("a threshold commit needs the confidences or their cleared count")
        return max(1, min(num_masked, num_cleared))

    def commit(self, chunk: ScheduledChunk, committed_tokens: dict[int, int]) -> int:
        """Advance `chunk.seq` past the chunk and return the tokens it emits (a finished
        block's, else 0); the engine adds them to the outputs and stamps them."""
        seq = chunk.seq
        if not chunk.num_block_tokens:
            seq.num_computed_tokens += chunk.num_new_tokens
            return 0
        masked = seq.num_block_tokens - seq.num_block_committed
        committed = committed_tokens.get(seq.seq_id)
        least = self.num_to_commit(masked, seq.num_block_steps, num_cleared=0)
        if committed is None or not least <= committed <= masked or (
                self.threshold is None and committed != least):
            raise RuntimeError(f"executor reported {committed!r} committed positions for "
                               f"request {seq.seq_id}, which had {masked} masked")
        seq.num_computed_tokens = seq.num_final_tokens  # the block's own KV is not final
        seq.num_diffusion_steps += 1
        seq.num_block_committed += committed
        seq.num_block_steps += 1
        if seq.num_block_committed < seq.num_block_tokens:
            return 0
        emitted = seq.num_block_tokens
        seq.num_block_tokens = min(self.params.diffusion_block,
                                   seq.num_remaining_outputs - emitted)
        seq.num_block_committed = 0
        seq.num_block_steps = 0
        return emitted


class BlockDiffusionScheduler(WrappedScheduler):
    """Any scheduler, decoding by block diffusion: the inner scheduler plans as usual (a
    block is known tokens to it), then each chunk is marked as a denoising step when it
    reaches the block's end, or cut back to the committed tokens when it would split it."""

    def __init__(self, inner: Scheduler, policy: BlockDiffusion) -> None:
        super().__init__(inner)
        self.policy = policy

    def add(self, seq: Sequence) -> None:
        self.policy.start_block(seq)
        self.inner.add(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        raise ValueError("block diffusion decodes one sample per request (no --n, no beams)")

    def add_transfer(self, seq: Sequence, transfer_s: float) -> None:
        raise ValueError("block diffusion does not run on disaggregated replicas")

    def schedule(self, now_s: float) -> Plan:
        plan = self.inner.schedule(now_s)
        kept = []
        for chunk in plan.chunks:
            seq = chunk.seq
            end = chunk.num_context_tokens + chunk.num_new_tokens
            if seq.num_block_tokens and end >= seq.num_known_tokens:
                chunk.num_block_tokens = seq.num_block_tokens
            elif end > seq.num_final_tokens:
                chunk.num_new_tokens = seq.num_final_tokens - chunk.num_context_tokens
            if chunk.num_new_tokens > 0:
                kept.append(chunk)
        plan.chunks = kept
        return plan
