"""Data shared by every policy, the simulator and (later) the real backend.

Nothing here knows about time sources, SimPy or tensors: a `Plan` is what a scheduler decides
for one engine iteration, a `StepResult` is what an executor reports back.

Token accounting follows vLLM v1: a sequence's known tokens are its prompt plus the outputs
sampled so far; `num_computed_tokens` of them have KV in the cache. A step computes
`num_new_tokens` more; when the computed count reaches the known count, one output token is
sampled. So a request with P prompt and O output tokens computes P + O - 1 tokens in total, and
a sequence preempted by recompute simply restarts from `num_computed_tokens = 0` with its
outputs kept.

Speculative decoding fits the same accounting: a verify step of a decoding sequence computes
its last sampled token plus k draft tokens (`num_spec_tokens = k`); if the executor reports
`a` of the drafts accepted, the step emits a + 1 tokens (the accepted drafts plus the corrected
or bonus token), `num_computed_tokens` advances by 1 + a, and the KV slots of the k - a
rejected drafts go back to the allocator. A request never drafts past its output length
(k <= remaining outputs - 1), so it emits exactly its trace's output length.

Block diffusion (`policies/decoding/block_diffusion.py`) fits it too: the block being denoised
is `num_block_tokens` more known tokens (mask tokens the model reads, or positions committed
in earlier steps of the block) that are never counted as computed, so every scheduler
allocates and schedules them like prompt tokens; `num_final_tokens` (prompt + outputs) are the
ones whose ids are final, the only ones a prefix cache may keep.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from policies.token_times import TokenTimes


@dataclass(frozen=True, slots=True)
class Request:
    """One trace row.

    `request_id` is the row's order in the trace (from 0), so results can be joined back to the
    input. `prefix_block_hashes` are chained hashes of `prefix_block_tokens`-token prompt blocks
    (Mooncake's `hash_ids`), used by prefix-caching allocators; None when the trace has none.
    `prompt_token_ids`, when known, are the prompt itself (the real backend feeds them to the
    model; prefix caching hashes them); their count equals `prompt_tokens`.
    """

    request_id: int
    arrival_time_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_block_hashes: tuple[int, ...] | None = None
    prefix_block_tokens: int | None = None
    prompt_token_ids: tuple[int, ...] | None = None
    priority: int = 0
    """Priority class, 0 the most urgent (used by `--queue-policy priority|edf`)."""
    n: int = 1
    """Parallel samples: n sequences share the prompt and each generates `output_tokens`."""
    beam: bool = False
    """The n sequences are the beams of a beam search: one answer of `output_tokens` returns."""
    stage: int = 0
    """Load stage the request belongs to (inference-perf's stages, from 0); 0 for traces
    without stages."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


MAX_SAMPLES = 1 << 16
"""Samples per request a sequence id can tell apart."""


def sample_seq_id(request: Request, index: int) -> int:
    """The seq_id of `request`'s sample `index`: the request id for sample 0, a negative id
    for the others (the one place the encoding is written)."""
    return request.request_id if index == 0 else -(request.request_id * MAX_SAMPLES + index)


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"
    TRANSFERRING = "transferring"
    FINISHED = "finished"
    REJECTED = "rejected"


@dataclass(slots=True, eq=False)
class Sequence:
    """The engine's live state of one sample of a request (requests with `n > 1` or beam
    search have several, `sample_index` 0 being the one the prompt was prefilled for).

    Timestamps are filled in by the engine (in whatever clock drives it); `token_times_s` holds
    one time per sampled output token, as runs of the engine's timeline
    (`policies.token_times`) so long traces stay cheap.
    `num_draft_tokens_reached` counts drafts the target judged (each draft up to and including
    the first rejected one), `num_draft_tokens_accepted` those it accepted: their ratio is the
    request's measured per-draft acceptance, which dynamic speculators read.
    """

    request: Request
    status: SeqStatus = SeqStatus.WAITING
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    num_preemptions: int = 0
    num_recomputed_tokens: int = 0
    num_swaps: int = 0
    first_scheduled_s: float | None = None
    finish_s: float | None = None
    reason: str = ""
    token_times_s: TokenTimes = field(default_factory=TokenTimes)
    num_draft_tokens_reached: int = 0
    num_draft_tokens_accepted: int = 0
    sample_index: int = 0
    num_block_tokens: int = 0
    """Block diffusion: positions of the block being denoised (0 otherwise, and once done)."""
    num_block_committed: int = 0
    """Block diffusion: positions of that block committed by the steps so far."""
    num_block_steps: int = 0
    """Block diffusion: denoising steps that block has taken."""
    num_diffusion_steps: int = 0
    """Block diffusion: denoising steps this sequence ran (one forward pass over a block each)."""
    seq_id: int = field(init=False)
    """The request id for a request's first sample; negative ids for the others (fixed at
    creation, as the request and sample index are; the hot paths read it constantly)."""

    def __post_init__(self) -> None:
        self.seq_id = sample_seq_id(self.request, self.sample_index)

    @property
    def num_known_tokens(self) -> int:
        """Prompt plus outputs sampled so far (plus a diffusion block's positions): the tokens
        whose KV can be computed now."""
        return self.request.prompt_tokens + self.num_output_tokens + self.num_block_tokens

    @property
    def num_final_tokens(self) -> int:
        """Prompt plus outputs: the tokens whose ids will not change (a prefix cache's)."""
        return self.request.prompt_tokens + self.num_output_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_known_tokens - self.num_computed_tokens

    @property
    def is_done_generating(self) -> bool:
        return self.num_output_tokens >= self.request.output_tokens

    @property
    def num_remaining_outputs(self) -> int:
        return self.request.output_tokens - self.num_output_tokens

    @property
    def is_decoding(self) -> bool:
        """Has sampled a token and has KV for everything before it: the next step is a decode
        (the only kind of step that can verify drafts)."""
        return self.num_output_tokens > 0 and self.num_uncomputed_tokens == 1


@dataclass(slots=True)
class ScheduledChunk:
    """`num_new_tokens` of `seq` computed this step on top of `num_context_tokens` cached ones.

    A speculative verify sets `num_spec_tokens` = k, the most drafts this step can accept (a
    chain's length, a tree's depth); `num_new_tokens` then counts the last sampled token plus
    every draft node verified (1 + k for a chain, 1 + the tree's node count for a tree).

    A block-diffusion denoising step sets `num_block_tokens` = the block's positions, the
    chunk's last ones (bidirectional among themselves); the tokens before them are committed
    ones whose final KV this step computes.
    """

    seq: Sequence
    num_new_tokens: int
    num_context_tokens: int
    num_spec_tokens: int = 0
    num_block_tokens: int = 0


@dataclass(slots=True)
class Plan:
    """One iteration's decisions.

    `chunks` are computed and committed. `padding` chunks are computed but produce nothing
    (static batching keeps finished members in the batch until its longest one ends), so the
    cost model charges them. `swap_out_slots` / `swap_in_slots` are tokens of KV copied to /
    from host memory by swap preemption before this iteration runs. `wake_at_s` tells an idle
    engine when the scheduler wants to be asked again even if nothing arrives (static
    batching's max wait).
    """

    chunks: list[ScheduledChunk] = field(default_factory=list)
    padding: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    swap_out_slots: int = 0
    swap_in_slots: int = 0
    block_copies: list[tuple[int, int, int]] = field(default_factory=list)
    """Device KV copies to make before this iteration: (source, destination, tokens), from
    copy-on-write of a shared partial block or a fork without paging."""
    wake_at_s: float | None = None
    num_admitted: int = 0
    """Waiting sequences this plan started (their first chunk is among `chunks`)."""

    @property
    def is_empty(self) -> bool:
        return not self.chunks and not self.padding

    @property
    def num_new_tokens(self) -> int:
        total = sum([c.num_new_tokens for c in self.chunks])
        return total + sum([c.num_new_tokens for c in self.padding]) if self.padding else total


@dataclass(frozen=True, slots=True)
class StepResult:
    """What an executor reports for one plan: how long it took, in the executor's clock.

    `accepted_tokens` maps the seq_id of every chunk with `num_spec_tokens > 0` to how many of
    its drafts were accepted (a prefix, 0..num_spec_tokens); it is empty when nothing
    speculates. `draft_s` is the part of `duration_s` spent drafting (the rest verifies).
    `committed_tokens` maps the seq_id of every denoising chunk (`num_block_tokens > 0`) to
    the block positions that step committed.
    """

    duration_s: float
    accepted_tokens: dict[int, int] = field(default_factory=dict)
    draft_s: float = 0.0
    committed_tokens: dict[int, int] = field(default_factory=dict)
