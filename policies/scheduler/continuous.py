"""Iteration-level (continuous) batching as in Orca and vLLM's first scheduler.

Every iteration, waiting prompts are admitted first-come-first-served while they fit the token
budget, the sequence cap and the KV pool; if any prompt was admitted the iteration runs those
prefills alone (whole prompts, never chunked), otherwise it runs one decode token for every
running sequence. A prompt longer than the whole token budget is admitted on its own. When a
decode cannot get a KV slot, the newest running sequence is preempted by recompute until it
can (possibly the sequence itself).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from policies.kv.base import KVAllocator
from policies.scheduler.base import admit, preempt_by_recompute
from policies.types import Plan, ScheduledChunk, Sequence, SeqStatus


@dataclass(frozen=True, slots=True)
class ContinuousParams:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")


class ContinuousScheduler:
    def __init__(self, params: ContinuousParams, allocator: KVAllocator) -> None:
        self.params = params
        self.allocator = allocator
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def on_finished(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.allocator.free(seq)

    def schedule(self, now_s: float) -> Plan:
        plan = Plan()
        self._admit_prefills(plan)
        if not plan.chunks:
            self._schedule_decodes(plan)
        return plan

    def _admit_prefills(self, plan: Plan) -> None:
        budget = self.params.max_num_batched_tokens
        while self.waiting and len(self.running) < self.params.max_num_seqs:
            seq = self.waiting[0]
            num_cached = self.allocator.match_prefix(seq)
            num_new = seq.num_known_tokens - num_cached
            oversized_alone = not plan.chunks and num_new > self.params.max_num_batched_tokens
            if num_new > budget and not oversized_alone:
                break
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens, num_cached):
                break
            self.waiting.popleft()
            admit(seq, num_cached)
            self.running.append(seq)
            plan.chunks.append(ScheduledChunk(seq, num_new, num_cached))
            budget -= num_new
            if oversized_alone:
                break

    def _schedule_decodes(self, plan: Plan) -> None:
        budget = self.params.max_num_batched_tokens
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            num_known = seq.num_known_tokens
            if self.allocator.allocate_slots(seq, num_known):
                num_new = num_known - seq.num_computed_tokens
                plan.chunks.append(ScheduledChunk(seq, num_new, seq.num_computed_tokens))
                budget -= num_new
                index += 1
                continue
            # The newest sequence yields its KV; if that is `seq` itself the loop ends.
            victim = self.running.pop()
            preempt_by_recompute(victim, self.allocator, self.waiting, plan)
