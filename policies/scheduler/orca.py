"""Orca's iteration-level scheduling (Yu et al., OSDI 2022), the baseline vLLM compared with.

Each iteration runs one decode token for every running request and, in the same batch,
whole-prompt prefills of newly admitted ones (Orca's selective batching mixes both), up to
`max_num_seqs` requests; there is no token budget. Orca reserved each request's KV span for
its maximum length up front, so pair it with `--allocator contiguous` (`--reserve max` is
Orca-Max, `pow2` and `oracle` the paper's other variants); with a paged allocator it still
runs, preempting the newest request by recompute when KV runs out.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.scheduler.continuous import QueuedDecodeRuns, QueueingParams
from policies.types import Plan, ScheduledChunk


@dataclass(frozen=True, slots=True)
class OrcaParams(QueueingParams):
    """Orca has no token budget: only the sequence cap and the shared queueing knobs."""


class OrcaScheduler(QueuedDecodeRuns):
    def schedule(self, now_s: float) -> Plan:
        plan, _ = self._open_plan(now_s)
        index = 0
        while index < len(self.running):
            seq = self.running[index]
            if self.allocator.allocate_slots(seq, seq.num_known_tokens):
                plan.chunks.append(ScheduledChunk(seq, seq.num_uncomputed_tokens, seq.num_computed_tokens))
                index += 1
            else:
                self._preempt(self._pop_victim(index), plan)
        while not self.swapped and self.waiting and len(self.running) < self.params.max_num_seqs:
            seq = self.waiting[0]
            num_cached = self.prefix_cache.match_prefix(seq) if self.prefix_cache is not None else 0
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens, num_cached):
                break
            self.waiting.popleft()
            self._start(seq, num_cached, plan)
            plan.chunks.append(ScheduledChunk(seq, seq.num_known_tokens - num_cached, num_cached))
        return self._wake_for_transfers(plan)
