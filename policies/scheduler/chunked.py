"""Chunked prefill (Sarathi-Serve; vLLM v1's default): one token budget per iteration, shared
by decodes and prefill chunks, so long prompts no longer stall running decodes.

    iteration token budget (e.g. 512)
    | d d d d d d d d | prefill chunk of A (ongoing) | first chunk of B (newly admitted) |
      decodes first      then prefills, oldest first, each capped by the budget left
                         and by long_prefill_token_threshold

`chunked_order="decode-first"` (the Sarathi-Serve policy) serves every running decode before any
prefill token, bounding time-between-tokens; `"prefill-first"` serves prefill chunks first
and decodes with what is left, trading TBT for TTFT (running decodes still take their KV
before new prompts, and an iteration that preempts admits nothing, so prompts cannot starve
the decodes holding the memory they need). A prompt is admitted as soon as one
chunk of it fits; it emits its first token in the iteration that computes its last chunk.
Preemption (recompute or swap) and swap-in work as in `continuous`.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.fast_forward import PlansDecodesApart
from policies.knobs import knob
from policies.kv.base import KVAllocator
from policies.scheduler.base import decodes_grower
from policies.scheduler.continuous import QueuedDecodeRuns, QueueingParams
from policies.scheduler.queue_order import victim_index
from policies.types import Plan, ScheduledChunk, Sequence

ORDERS = ("decode-first", "prefill-first")


@dataclass(frozen=True, slots=True)
class ChunkedParams(QueueingParams):
    token_budget: int = knob(2048, min=1, unset_from="max_num_batched_tokens", help=(
        "chunked scheduler: tokens per iteration, decodes and prefill chunks together "
        "(default --max-num-batched-tokens or 2048)"))
    long_prefill_token_threshold: int = knob(0, min=0, help=(
        "chunked: cap on one prompt's chunk per iteration (0: none)"))
    """Cap on one request's prefill chunk per iteration (0: only the budget caps it), so that
    several prompts can progress together instead of one long prompt taking the budget."""
    chunked_order: str = knob("decode-first", choices=ORDERS, help=(
        "chunked: decode-first (Sarathi) or prefill-first"))

    def step_token_limit(self, engine_limit: int) -> int:
        """The token budget: no step computes more (vLLM's one `max_num_batched_tokens`)."""
        return self.token_budget


class ChunkedScheduler(QueuedDecodeRuns, PlansDecodesApart):
    params: ChunkedParams

    def __init__(self, params: ChunkedParams, allocator: KVAllocator) -> None:
        super().__init__(params, allocator)
        self._lockstep = decodes_grower(allocator)
        """The allocator, when it can grow a step's decodes at once (`_grow_at_once`)."""

    def schedule(self, now_s: float) -> Plan:
        return self._schedule(now_s, apart=False)[1]

    def schedule_decodes_apart(self, now_s: float) -> tuple[list[Sequence], Plan]:
        return self._schedule(now_s, apart=True)

    def _schedule(self, now_s: float, apart: bool) -> tuple[list[Sequence], Plan]:
        """`schedule`'s plan, and with `apart` its leading decodes grown at once
        (`_grow_at_once`) given apart (`PlansDecodesApart`), unless nothing else is planned."""
        plan, _ = self._open_plan(now_s)
        budget = self.params.token_budget
        decodes, prefills, one_token_each = self._split_running()
        lockstep: list[Sequence] = []
        if self.params.chunked_order == "decode-first":
            if one_token_each and self._grow_at_once(decodes, budget):
                if apart:
                    lockstep = decodes
                else:
                    self._plan_decodes(decodes, plan)
                budget = self._schedule_running(prefills, budget - len(decodes), plan)
            else:
                budget = self._schedule_running(decodes + prefills, budget, plan)
            if not self.swapped:
                self._admit(budget, plan)
            if lockstep and not plan.chunks:  # nothing else planned: a plain decode step
                self._plan_decodes(lockstep, plan)
                lockstep = []
        else:
            budget = self._schedule_running(prefills, budget, plan)
            # Running decodes take their KV before new prompts do (they still run with the
            # budget prompts leave), and nothing is admitted in an iteration that preempted
            # (as vLLM): else a prompt too big for the memory left would be preempted and
            # readmitted every iteration, taking the budget the decodes holding that memory
            # need to finish, and nothing would (a livelock).
            if budget > 0 and not (one_token_each and self._grow_at_once(decodes, budget)):
                self._reserve_running(decodes, budget, plan)
            if not self.swapped and not plan.preempted:
                budget = self._admit(budget, plan)
            for seq in decodes:
                if budget <= 0:
                    break
                size = self._chunk_size(seq, seq.num_computed_tokens, budget)
                plan.chunks.append(ScheduledChunk(seq, size, seq.num_computed_tokens))
                budget -= size
        return lockstep, self._wake_for_transfers(plan)

    def _split_running(self) -> tuple[list[Sequence], list[Sequence], bool]:
        """The running sequences past their prompts (decodes, or recomputes of their
        outputs) and those within it (prefills), each in `running` order, in one pass; and
        whether each of the first has exactly one token to compute (`num_uncomputed_tokens`,
        spelled out: this runs every step over the whole batch)."""
        decodes: list[Sequence] = []
        prefills: list[Sequence] = []
        one_token_each = True
        for seq in self.running:
            computed, request = seq.num_computed_tokens, seq.request
            if computed < request.prompt_tokens:
                prefills.append(seq)
                continue
            decodes.append(seq)
            if request.prompt_tokens + seq.num_output_tokens + seq.num_block_tokens - computed != 1:
                one_token_each = False
        return decodes, prefills, one_token_each

    def _grow_at_once(self, decodes: list[Sequence], budget: int) -> bool:
        """Grow each of `decodes` (running sequences, each with exactly one token to
        compute: `_split_running` says) by that token with one growth of the pool for all
        of them (`GrowsInLockstep`, one round: what their `allocate_slots` calls one by one
        would do), when `budget` holds them all and the pool serves them without a
        preemption or a copy. False, with nothing done, otherwise: they then go one by one."""
        return (self._lockstep is not None and bool(decodes) and len(decodes) <= budget
                and self._lockstep.grow_in_lockstep(decodes, 1) is not None)

    @staticmethod
    def _plan_decodes(decodes: list[Sequence], plan: Plan) -> None:
        """Schedule each of `decodes` (in order, grown at once) for its one token."""
        plan.chunks.extend([ScheduledChunk(seq, 1, seq.num_computed_tokens) for seq in decodes])

    def _chunk_size(self, seq: Sequence, start: int, budget: int) -> int:
        """Tokens of `seq` to compute from position `start` under `budget`."""
        size = min(seq.num_known_tokens - start, budget)
        threshold = self.params.long_prefill_token_threshold
        if threshold and start < seq.request.prompt_tokens:
            size = min(size, threshold)
        return size

    def _schedule_running(self, worklist: list[Sequence], budget: int, plan: Plan) -> int:
        """Schedule `worklist` (running sequences, in order) under `budget`; when KV runs out
        preempt among those not yet scheduled (`_allocate_or_give_way`). Returns the budget
        left."""
        index = 0
        while index < len(worklist) and budget > 0:
            seq = worklist[index]
            size = self._chunk_size(seq, seq.num_computed_tokens, budget)
            if self._allocate_or_give_way(worklist, index, size, plan):
                plan.chunks.append(ScheduledChunk(seq, size, seq.num_computed_tokens))
                budget -= size
                index += 1
        return budget

    def _reserve_running(self, worklist: list[Sequence], budget: int, plan: Plan) -> None:
        """KV for each of `worklist`'s next chunk as if it had `budget` alone, preempting as
        `_schedule_running` does (the preempted leave `worklist`); none is scheduled."""
        index = 0
        while index < len(worklist):
            seq = worklist[index]
            size = self._chunk_size(seq, seq.num_computed_tokens, budget)
            if self._allocate_or_give_way(worklist, index, size, plan):
                index += 1

    def _allocate_or_give_way(self, worklist: list[Sequence], index: int, size: int,
                              plan: Plan) -> bool:
        """KV for `size` more tokens of `worklist[index]`; else preempt one of
        `worklist[index:]` (the newest, or the newest of the lowest class) and say False."""
        seq = worklist[index]
        if self.allocator.allocate_slots(seq, seq.num_computed_tokens + size):
            return True
        victim = worklist.pop(index + victim_index(self.params.queue_policy, worklist[index:]))
        self.running.remove(victim)
        self._preempt(victim, plan)
        return False

    def _admit(self, budget: int, plan: Plan) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.params.max_num_seqs:
            seq = self.waiting[0]
            num_cached = self.prefix_cache.match_prefix(seq) if self.prefix_cache is not None else 0
            size = self._chunk_size(seq, num_cached, budget)
            if not self.allocator.allocate_slots(seq, num_cached + size, num_cached):
                break
            self.waiting.popleft()
            self._start(seq, num_cached, plan)
            plan.chunks.append(ScheduledChunk(seq, size, num_cached))
            budget -= size
        return budget
