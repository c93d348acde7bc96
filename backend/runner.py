"""The executor for real tensors, and the wall-clock engine loop around `policies/engine.py`.

`RealExecutor.execute(plan)` takes the same `Plan` the cost model takes: per sequence, how
many new tokens on top of how many cached ones, with the KV pages the allocator placed. It runs
the model on those tokens (all sequences packed into one forward pass), samples a token for
every sequence whose computed count reaches its known count (exactly when the engine's commit
counts an output), and reports the measured wall time. A speculative verify chunk (k drafts)
gets its drafts from the drafter (`backend/drafting.py`) before the pass, is computed as its
last sampled token plus the drafts, and emits what greedy or rejection-sampling verification
keeps; the accepted count goes back in `StepResult.accepted_tokens`. A lookahead verify
chunk (`--speculator lookahead`) is instead one lookahead pass, x plus the Jacobi window plus
the pool's candidates under the pass's mask (`backend/lookahead.py`); it emits the longest
matching candidate plus one token, and the accepted drafts' K/V are copied to the slots after
x before the engine shrinks the rest away. The beams of a beam search pick their tokens
together (`backend/beam_search.py`), which also tells the engine which beams to replace by
copies of others. With block diffusion (`decoding`), a denoising
chunk's block positions hold the mask token or what earlier steps committed, attend under the
block mask (`backend/diffusion.py`), and commit their most confident positions; the count goes
back in `StepResult.committed_tokens`, and a finished block's tokens become outputs.

It keeps each request's token ids: the prompt (`Request.prompt_token_ids`, or seeded ids of
the given length for length-only traces) followed by the sampled outputs, so a sequence
preempted by recompute re-prefills exactly the tokens it had.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

import torch

from backend.beam_search import BeamSearch, Hypothesis
from backend.diffusion import attend_ends, denoise
from backend.drafting import Drafter, DraftRequest, Drafts
from backend.kv_cache import KVCache
from backend.lookahead import Lookahead, pass_mask
from backend.model import BatchLayout, LlamaModel
from backend.sampler import (SamplingParams, generator_for, probabilities, sample,
                             verify_greedy, verify_rejection)
from policies.decoding.block_diffusion import BlockDiffusion
from policies.engine import Engine
from policies.kv.base import PageTableAllocator
from policies.speculative.jacobi import LookaheadPass
from policies.types import (Plan, Request, ScheduledChunk, Sequence, SeqStatus, StepResult,
                            sample_seq_id)
from traces.closed_loop import ClosedLoop


def seeded_prompt(request: Request, vocab_size: int, seed: int) -> list[int]:
    """Prompt ids for a request that has none, uniform over the vocabulary.

    Tokens covered by the trace's prefix block hashes (Mooncake's hash_ids) are seeded by
    those ids, so requests that share trace blocks share tokens too, and prefix caching
    (which keys blocks by the same ids) reuses KV that really is theirs. The rest is seeded
    per request.
    """
    ids: list[int] = []
    hashes, block_tokens = request.prefix_block_hashes or (), request.prefix_block_tokens or 0
    for block_hash in hashes:
        if len(ids) >= request.prompt_tokens:
            break
        gen = torch.Generator().manual_seed(hash((seed, 0x7B10C4, block_hash)) % 2**63)
        ids.extend(torch.randint(0, vocab_size, (block_tokens,), generator=gen).tolist())
    del ids[request.prompt_tokens:]
    gen = generator_for(seed, request.request_id, -1)
    rest = request.prompt_tokens - len(ids)
    return ids + torch.randint(0, vocab_size, (rest,), generator=gen).tolist()


class RealExecutor:
    def __init__(
        self,
        model: LlamaModel,
        kv: KVCache,
        allocator: PageTableAllocator,
        *,
        sampling: SamplingParams = SamplingParams(),
        seed: int = 0,
        use_triton: bool = False,
        drafter: Drafter | None = None,
        beams: BeamSearch | None = None,
        decoding: BlockDiffusion | None = None,
        lookahead: Lookahead | None = None,
    ) -> None:
        if decoding is not None and model.spec.mask_token_id is None:
            raise ValueError(f"--decoding block-diffusion needs a model with a mask token "
                             f"(tiny-diffusion); {model.spec.name} has none")
        self.model = model
        self.decoding = decoding
        self._blocks: dict[int, list[int]] = {}
        """Each diffusing sequence's current block: the mask token or committed ids (kept
        across preemptions, as its outputs are)."""
        self.kv = kv
        self.allocator = allocator
        self.sampling = sampling
        self.seed = seed
        self.use_triton = use_triton
        self.drafter = drafter
        self.lookahead = lookahead
        self._step_began_s: float | None = None  # set by `step_began`, taken by `execute`
        self.beams = beams or BeamSearch()
        self.accepted_counts: list[int] = []
        """Accepted drafts of every verify, in order: the measured acceptance trace."""
        self.device = model.norm.weight.device
        self.token_ids: dict[int, list[int]] = {}
        # Each running sequence's pages as of its last step: a sequence preempted by swap has
        # already left the allocator when the plan arrives, but its KV is still in them.
        self._pages: dict[int, list[int]] = {}
        self._swapped: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def prompt_problem(self, request: Request) -> str | None:
        """Why this model cannot read `request`'s prompt ids (None if it can): the loop
        rejects such a request at submission instead of failing mid-batch."""
        ids = request.prompt_token_ids
        if ids is None:
            return None
        vocab_size = self.model.spec.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            return f"prompt token ids {bad[:3]} lie outside the vocabulary of {vocab_size}"
        if self.decoding is not None and self.model.spec.mask_token_id in ids:
            return f"the prompt holds the mask token {self.model.spec.mask_token_id}"
        if len(ids) != request.prompt_tokens:
            return f"{len(ids)} prompt token ids for a {request.prompt_tokens}-token prompt"
        return None

    def tokens_of(self, request: Request) -> list[int]:
        """The token ids of `request`'s first sample (prompt, then outputs so far)."""
        ids = self.token_ids.get(request.request_id)
        if ids is None:
            if request.prompt_token_ids is not None:
                ids = list(request.prompt_token_ids)
            else:
                ids = seeded_prompt(request, self.model.spec.vocab_size, self.seed)
                mask = self.model.spec.mask_token_id
                if mask is not None:  # a seeded prompt never holds the mask token
                    ids = [(t + 1) % self.model.spec.vocab_size if t == mask else t
                           for t in ids]
            self.token_ids[request.request_id] = ids
        return ids

    def _ids(self, seq: Sequence) -> list[int]:
        """Any sample's token ids; a parallel sample's exist from the prefill that forked it."""
        return self.tokens_of(seq.request) if seq.sample_index == 0 else self.token_ids[seq.seq_id]

    def output_ids(self, request: Request) -> list[int]:
        """The request's outputs: its first sample's, or a beam search's best hypothesis."""
        if request.beam:
            hypotheses = self.beam_hypotheses(request)
            return hypotheses[0].token_ids if hypotheses else []
        return self.token_ids.get(request.request_id, [])[request.prompt_tokens:]

    def sample_output_ids(self, request: Request) -> list[list[int]]:
        """Every sample's outputs (`--n`), in sample order; the first is `output_ids`."""
        return [self.token_ids.get(sample_seq_id(request, index), [])[request.prompt_tokens:]
                for index in range(request.n)]

    def step_began(self) -> None:
        """The run loop starts a step now: its reported duration will run from here, so it
        covers the scheduling before `execute` and a token's time is when it exists."""
        self._step_began_s = time.perf_counter()

    def execute(self, plan: Plan) -> StepResult:
        start_s = time.perf_counter()
        if self._step_began_s is not None:
            start_s, self._step_began_s = self._step_began_s, None
        if self.drafter is not None:
            for seq in plan.preempted:
                self.drafter.forget(seq.seq_id)
        self._swap_out(plan)
        for source, destination, num_slots in plan.block_copies:
            self._copy(source, destination, num_slots)
        self._swap_in(plan)
        draft_start_s = time.perf_counter()
        drafts = self._draft(plan)
        draft_s = time.perf_counter() - draft_start_s
        # Padding (a finished member of a static batch) costs a decode but owns no slot past
        # its KV: it recomputes its last cached token, rewriting the same K/V in place.
        padding = [ScheduledChunk(c.seq, 1, c.num_context_tokens - 1) for c in plan.padding]
        token_ids, layout = self._pack(plan.chunks + padding, drafts)
        hidden = self.model(token_ids, layout, self.kv)  # [T, hidden]
        sampling_rows, sampled_chunks = [], []
        accepted: dict[int, int] = {}
        committed: dict[int, int] = {}
        for index, chunk in enumerate(plan.chunks):
            seq = chunk.seq
            if chunk.num_block_tokens:
                end = layout.query_start[index + 1]
                committed[seq.seq_id] = self._denoise(
                    seq, hidden[end - chunk.num_block_tokens:end])
            elif chunk.num_spec_tokens:
                rows = hidden[layout.query_start[index]:layout.query_start[index + 1]]
                proposal = drafts[seq.seq_id]
                if isinstance(proposal, LookaheadPass):
                    emitted = self._commit_lookahead(chunk, rows, proposal)
                else:
                    emitted = self._verify(seq, rows, proposal)
                accepted[seq.seq_id] = len(emitted) - 1
                self.accepted_counts.append(len(emitted) - 1)
                self._emit(seq, emitted)
            elif chunk.num_context_tokens + chunk.num_new_tokens >= seq.num_known_tokens:
                sampling_rows.append(layout.query_start[index + 1] - 1)
                sampled_chunks.append(chunk)
        if sampled_chunks:
            logits = self.model.logits(hidden[sampling_rows])  # [S, vocab]
            beam_rows: dict[int, list[tuple[Sequence, torch.Tensor]]] = {}
            for row, chunk in zip(logits, sampled_chunks):
                seq = chunk.seq
                if seq.request.beam:
                    beam_rows.setdefault(seq.request.request_id, []).append((seq, row))
                    continue
                if seq.request.n > 1 and seq.sample_index == 0 and seq.num_output_tokens == 0:
                    self._fork_first_tokens(seq, row)
                gen = generator_for(self.seed, seq.seq_id, seq.num_output_tokens)
                self._emit(seq, [sample(row, self.sampling, gen)])
            for group in beam_rows.values():
                self._advance_beams(group)
        for chunk in plan.padding:  # finished: its pages will never be swapped
            self._pages.pop(chunk.seq.seq_id, None)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return StepResult(time.perf_counter() - start_s, accepted, draft_s if accepted else 0.0,
                          committed)

    def _block(self, seq: Sequence) -> list[int]:
        """`seq`'s current block ids, all masks when it starts."""
        block = self._blocks.get(seq.seq_id)
        if block is None or len(block) != seq.num_block_tokens:
            block = [self.model.spec.mask_token_id] * seq.num_block_tokens
            self._blocks[seq.seq_id] = block
        return block

    def _denoise(self, seq: Sequence, hidden: torch.Tensor) -> int:
        """Commit positions of `seq`'s block from its hidden states [b, hidden]; a block
        with none masked left becomes outputs. Returns how many committed."""
        block = self._blocks[seq.seq_id]
        count = denoise(self.model.logits(hidden), block, self.model.spec.mask_token_id,
                        self.decoding, seq.num_block_steps)
        if seq.num_block_committed + count == len(block):
            del self._blocks[seq.seq_id]
            self._emit(seq, block)
        return count

    def _fork_first_tokens(self, parent: Sequence, logits: torch.Tensor) -> None:
        """The prompt's prefill samples a first token for every parallel sample (the engine
        forks samples 1..n-1 from it at commit), each with that sample's own generator."""
        request = parent.request
        prompt = self.tokens_of(request)
        for index in range(1, request.n):
            seq_id = sample_seq_id(request, index)
            token = sample(logits, self.sampling, generator_for(self.seed, seq_id, 0))
            self.token_ids[seq_id] = prompt + [token]
        self._share_pages(parent, [sample_seq_id(request, index) for index in range(1, request.n)])

    def _share_pages(self, parent: Sequence, children: list[int]) -> None:
        """Forked samples hold their parent's pages until they first run: a swap can take
        them out before then (unless they are done at birth)."""
        if parent.request.output_tokens == 1:
            return
        for seq_id in children:
            self._pages[seq_id] = list(self._pages[parent.seq_id])

    def _advance_beams(self, group: list[tuple[Sequence, torch.Tensor]]) -> None:
        """Sample a beam request's sequences of this step (backend/beam_search.py): the
        prompt's first tokens, one lockstep step of all W beams, or beams out of lockstep
        one by one. A loser's history becomes its parent's, and so do its pages (what the
        engine's fork gives it after this step)."""
        seq, request = group[0][0], group[0][0].request
        ids = [sample_seq_id(request, index) for index in range(request.n)]
        if len(group) == 1 and seq.sample_index == 0 and seq.num_output_tokens == 0:
            histories = self.beams.start(request, group[0][1], self.tokens_of(request))
            self.token_ids.update(zip(ids, histories))
            self._share_pages(seq, ids[1:])
        elif len(group) == request.n and len({s.num_known_tokens for s, _ in group}) == 1:
            group = sorted(group, key=lambda pair: pair[0].sample_index)
            logits = torch.stack([row for _, row in group])  # [W, vocab]
            histories, pairs = self.beams.advance(request, logits,
                                                  [self.token_ids[i] for i in ids])
            self.token_ids.update(zip(ids, histories))
            for loser, parent in pairs:
                self._pages[ids[loser]] = list(self._pages[ids[parent]])
        else:
            for beam, row in group:
                self.token_ids[beam.seq_id].append(self.beams.advance_alone(beam, row))
        for beam, _ in group:
            if beam.num_output_tokens + 1 >= request.output_tokens:
                self._pages.pop(beam.seq_id, None)

    def beam_hypotheses(self, request: Request) -> list[Hypothesis]:
        """A beam request's best hypotheses, best first (the first is its answer)."""
        return self.beams.ranked(request, self.sample_output_ids(request))

    def _emit(self, seq: Sequence, tokens: list[int]) -> None:
        self.token_ids[seq.seq_id].extend(tokens)
        if seq.num_output_tokens + len(tokens) >= seq.request.output_tokens:
            self._pages.pop(seq.seq_id, None)
            if self.drafter is not None:
                self.drafter.forget(seq.seq_id)
            if self.lookahead is not None:
                self.lookahead.forget(seq.seq_id)

    def _draft(self, plan: Plan) -> dict[int, Drafts | LookaheadPass]:
        """The proposals for every verify chunk of the plan: the drafter's chain of
        `num_spec_tokens` tokens, or with lookahead the pass of `num_spec_tokens` levels
        (what the chunk's extra slots hold either way)."""
        jobs = []
        proposals: dict[int, Drafts | LookaheadPass] = {}
        for chunk in plan.chunks:
            if not chunk.num_spec_tokens:
                continue
            seq = chunk.seq
            if self.lookahead is not None:
                step = self.lookahead.layout(seq.seq_id, self._ids(seq),
                                             seq.request.prompt_tokens, chunk.num_spec_tokens)
                if len(step.tokens) != chunk.num_new_tokens:
                    raise RuntimeError(f"request {seq.seq_id}: a lookahead pass of "
                                       f"{len(step.tokens)} tokens in a chunk of "
                                       f"{chunk.num_new_tokens}")
                proposals[seq.seq_id] = step
                continue
            if self.drafter is None or chunk.num_new_tokens != 1 + chunk.num_spec_tokens:
                raise RuntimeError(f"request {seq.seq_id} verifies {chunk.num_new_tokens - 1} "
                                   f"draft nodes for k = {chunk.num_spec_tokens}, but this "
                                   f"executor drafts only chains"
                                   + ("" if self.drafter else " and has no drafter"))
            jobs.append(DraftRequest(seq.seq_id, self._ids(seq),
                                     chunk.num_spec_tokens, seq.num_output_tokens))
        if jobs:
            proposals.update(self.drafter.propose(jobs))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        return proposals

    def _verify(self, seq: Sequence, hidden: torch.Tensor, drafts: Drafts) -> list[int]:
        """The tokens a verify emits (accepted drafts + the corrected or bonus token), from
        the target's hidden states at the last sampled token and every draft."""
        logits = self.model.logits(hidden)  # [1 + k, vocab]
        if self.sampling.is_greedy:
            return verify_greedy(logits, drafts.token_ids)
        target = probabilities(logits, self.sampling)
        q = drafts.probs
        if q is None:  # a deterministic proposal: q is one-hot on each draft
            q = torch.nn.functional.one_hot(torch.tensor(drafts.token_ids),
                                            logits.shape[-1]).float()
        gen = generator_for(self.seed, seq.seq_id, seq.num_output_tokens)
        return verify_rejection(target, q, drafts.token_ids, gen)

    def _commit_lookahead(self, chunk: ScheduledChunk, hidden: torch.Tensor,
                          step: LookaheadPass) -> list[int]:
        """The tokens a lookahead pass commits, from the hidden states at its every index
        [n, hidden]; the accepted drafts' K/V move from the accepted candidate's slots to the
        slots after x (`backend/lookahead.py` says why a copy is exact)."""
        seq = chunk.seq
        emitted = self.lookahead.commit(seq.seq_id, step, self.model.logits(hidden))
        indices = step.accepted_indices(emitted)
        if indices:
            first = chunk.num_context_tokens
            sources = self._slots(seq.seq_id, [first + i for i in indices])
            destinations = self._slots(seq.seq_id, range(first + 1, first + 1 + len(indices)))
            self.kv.copy_scattered_slots(sources.to(self.device), destinations.to(self.device))
        return emitted

    def _slots(self, seq_id: int, positions: Iterable[int]) -> torch.Tensor:
        """The flat pool slots of `seq_id`'s token positions, through its page table."""
        page_size = self.allocator.page_size
        page_ids = torch.tensor(self.allocator.page_table(seq_id), dtype=torch.long)
        new_pos = torch.tensor(list(positions), dtype=torch.long)
        return page_ids[new_pos // page_size] * page_size + new_pos % page_size

    def _copy(self, source: int, destination: int, num_tokens: int) -> None:
        """A copy the allocator asked for: a shared partial block before a sample writes into
        it (paged: block ids), or a forked sample's whole span (contiguous: slot offsets)."""
        page_size = self.allocator.page_size
        source, destination = source * page_size, destination * page_size
        self.kv.copy_slots(source, destination, num_tokens)
        if self.drafter is not None:
            self.drafter.copy_slots(source, destination, num_tokens)

    def _swap_out(self, plan: Plan) -> None:
        """Run the plan's swaps before its forward pass (vLLM v0 swaps synchronously): copy
        the KV of sequences just preempted by swap to host memory (before a block copy may
        reuse a block they freed), and after the copies (`_swap_in`) copy a swapped-in
        sequence's KV into the blocks it was given now."""
        for seq in plan.preempted:
            # A sequence swapped back in and out again within one schedule never ran: its
            # KV is still the host copy of its first swap-out.
            if seq.status is SeqStatus.SWAPPED and seq.seq_id not in self._swapped:
                pages = self._pages.pop(seq.seq_id, [])
                num_blocks = -(-seq.num_computed_tokens // self.kv.block_size)
                if num_blocks > len(pages):
                    raise RuntimeError(f"request {seq.seq_id} is swapped out with "
                                       f"{seq.num_computed_tokens} tokens of KV this executor "
                                       f"never placed")
                self._swapped[seq.seq_id] = self.kv.swap_out(pages[:num_blocks])

    def _swap_in(self, plan: Plan) -> None:
        for chunk in plan.chunks:
            saved = self._swapped.pop(chunk.seq.seq_id, None)
            if saved is not None:
                pages = self.allocator.page_table(chunk.seq.seq_id)
                self.kv.swap_in(saved, pages[: saved[0].shape[1]])

    def _pack(self, chunks: list[ScheduledChunk],
              drafts: dict[int, Drafts | LookaheadPass]) -> tuple[torch.Tensor, BatchLayout]:
        """Concatenate every chunk's new tokens (a verify's drafts after its last sampled
        token, or its lookahead pass at the pass's own positions and mask) and say where
        their K/V live."""
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[torch.Tensor] = []
        tables: list[list[int]] = []
        query_start, context_lens = [0], []
        ends: list[int] = []
        masks: list[torch.Tensor | None] = []
        page_size = 1
        for chunk in chunks:
            seq = chunk.seq
            ids = self._ids(seq)
            if seq.num_block_tokens:
                ids = ids + self._block(seq)
            if len(ids) != seq.num_known_tokens:
                raise RuntimeError(f"request {seq.seq_id}: {len(ids)} token ids held but "
                                   f"{seq.num_known_tokens} known to the engine")
            first, end = chunk.num_context_tokens, chunk.num_context_tokens + chunk.num_new_tokens
            proposal = drafts.get(seq.seq_id) if chunk.num_spec_tokens else None
            if isinstance(proposal, LookaheadPass):
                tokens.extend(proposal.tokens)
                positions.extend(first + offset for offset in proposal.offsets)
                masks.append(pass_mask(proposal, self.device))
            else:
                if proposal is not None:
                    ids = ids + proposal.token_ids
                tokens.extend(ids[first:end])
                positions.extend(range(first, end))
                masks.append(None)
            if self.decoding is not None:
                ends.extend(attend_ends(first, end, seq.request.prompt_tokens,
                                        seq.request.total_tokens,
                                        self.decoding.params.diffusion_block))
            page_size, pages = self.allocator.page_size, self.allocator.page_table(seq.seq_id)
            self._pages[seq.seq_id] = list(pages)
            slots.append(self._slots(seq.seq_id, range(first, end)))
            tables.append(pages)
            query_start.append(len(tokens))
            context_lens.append(end)
        width = max(len(t) for t in tables)
        page_tables = torch.zeros(len(tables), width, dtype=torch.int32)
        for row, pages in enumerate(tables):
            page_tables[row, : len(pages)] = torch.tensor(pages, dtype=torch.int32)
        device = self.device
        layout = BatchLayout(
            positions=torch.tensor(positions, device=device),
            slots=torch.cat(slots).to(device),
            page_tables=page_tables.to(device),
            page_size=page_size,
            query_start=query_start,
            context_lens=context_lens,
            use_triton=self.use_triton,
            attend_ends=torch.tensor(ends, device=device) if self.decoding else None,
            chunk_masks=masks if any(m is not None for m in masks) else None,
        )
        return torch.tensor(tokens, device=device), layout


def run_wall_clock(
    engine: Engine,
    requests: Iterable[Request],
    *,
    horizon_s: float | None = None,
    reject_reason: Callable[[Request], str | None] = lambda request: None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    between_steps: Callable[[float], float] | None = None,
    closed_loop: ClosedLoop | None = None,
) -> float:
    """Drive `engine` in real time: each request is submitted once the wall clock (from the
    start of the run) passes its arrival time, or rejected there if `reject_reason` names a
    reason; an idle engine sleeps until the next arrival or the scheduler's wake-up. Requests
    that all arrive at 0 run as fast as possible. Returns the run's end time in seconds from
    its start.

    With `closed_loop` (whose `finished` the engine's `on_done` must call) its requests are
    sent as earlier ones finish, each with the wall-clock time it was sent as its arrival
    time, instead of `requests`.

    `between_steps(now_s)`, if given, runs before each step (a speed meter's reading,
    `backend.speed`) and returns the seconds it took; those are taken out of the run's clock,
    so the run is timed as if it had not run."""
    pending = sorted(requests, key=lambda r: r.arrival_time_s)
    if closed_loop is not None and pending:
        raise ValueError("give a closed loop or timed requests, not both")
    # An executor that times itself may start each step's clock here rather than at its
    # forward pass, so token times include the scheduling as a server's would.
    step_began = getattr(engine.executor, "step_began", None)

    def submit(request: Request, now_s: float) -> None:
        reason = reject_reason(request)
        if reason is None:
            engine.submit(request, now_s)
        else:
            engine.reject(request, reason, now_s)

    origin = clock()
    index = 0
    while True:
        now_s = clock() - origin
        if horizon_s is not None and now_s >= horizon_s:
            return now_s
        while index < len(pending) and pending[index].arrival_time_s <= now_s:
            submit(pending[index], now_s)
            index += 1
        # A rejection frees its slot at once, so ask again until nothing more is due.
        while closed_loop is not None and (due := closed_loop.due()):
            for request in due:
                submit(dataclasses.replace(request, arrival_time_s=now_s), now_s)
        if between_steps is not None:
            origin += between_steps(now_s)
        if step_began is not None:
            step_began()
        outcome = engine.step(now_s)
        if outcome.duration_s is not None:
            continue
        wake = [t for t in (outcome.wake_at_s,) if t is not None]
        if index < len(pending):
            wake.append(pending[index].arrival_time_s)
        if not wake:
            return now_s
        target = min(wake) if horizon_s is None else min(min(wake), horizon_s)
        sleep(max(0.0, target - (clock() - origin)))
