"""Speculation around any scheduler: the inner scheduler plans as usual, then every decode it
scheduled is widened to verify the speculator's drafts.

Drafts never displace work: their KV slots come only from what the pool has free after the
inner scheduler allocated (a draft that does not fit is not proposed, nothing is preempted for
it), and they fit in what the token budget leaves. The verified nodes are capped at the
remaining outputs - 1, so a request never drafts past its output length (k <= remaining - 1)
and a verify never holds more KV than the request needs at its longest (prompt + output - 1),
which every allocator's reservation already covers. Keeping this a wrapper, not a branch in each
scheduler, gives every present and future scheduler speculation for free.
"""

from __future__ import annotations

from policies.kv.base import ShrinksSlots
from policies.scheduler.base import Scheduler, WrappedScheduler
from policies.speculative.base import Speculator
from policies.types import Plan


class SpeculativeScheduler(WrappedScheduler):
    def __init__(self, inner: Scheduler, speculator: Speculator,
                 max_num_batched_tokens: int) -> None:
        super().__init__(inner)
        if not isinstance(inner.allocator, ShrinksSlots):
            raise ValueError(f"speculation gives back rejected drafts' KV slots, which a "
                             f"{type(inner.allocator).__name__} cannot do")
        self.speculator = speculator
        self.max_num_batched_tokens = max_num_batched_tokens

    def schedule(self, now_s: float) -> Plan:
        plan = self.inner.schedule(now_s)
        decodes = [c for c in plan.chunks if c.num_new_tokens == 1 and c.seq.is_decoding]
        budget = self.max_num_batched_tokens - plan.num_new_tokens
        spec = self.speculator
        for chunk in decodes:
            seq = chunk.seq
            k = spec.num_draft_tokens(seq, len(decodes))
            limit = min(budget, seq.num_remaining_outputs - 1)
            while k > 0 and spec.num_verify_nodes(k) > limit:
                k -= 1
            if k <= 0:
                continue
            nodes = spec.num_verify_nodes(k)
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens + nodes):
                continue
            chunk.num_new_tokens = 1 + nodes
            chunk.num_spec_tokens = k
            budget -= nodes
        return plan
