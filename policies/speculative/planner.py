"""Speculation around any scheduler: the inner scheduler plans as usual, then every decode it
scheduled is widened to verify the speculator's drafts.

Drafts never displace work: their KV slots come only from what the pool has free after the
inner scheduler allocated (a draft that does not fit is not proposed, nothing is preempted for
it), and they fit in what the token budget leaves. The verified nodes are capped at the
remaining outputs - 1, so a request never drafts past its output length (k <= remaining - 1)
and a verify never holds more KV than the request needs at its longest (prompt + output - 1),
which every allocator's reservation already covers. Keeping this a wrapper, not a branch in each
scheduler, gives every present and future scheduler speculation for free.

Runs of speculative steps of one batch are fast-forwarded (`RepeatsVerifyBatch`) when the
inner scheduler repeats its decode batches (`RepeatsDecodeBatch`): drafts change nothing the
inner scheduler decides, so its batch repeats as it would without them.
"""

from __future__ import annotations

from collections.abc import Collection

from policies.fast_forward import RepeatsDecodeBatch, RepeatsVerifyBatch
from policies.kv.base import ShrinksSlots
from policies.scheduler.base import Scheduler, WrappedScheduler
from policies.speculative.base import Speculator
from policies.types import Plan, Sequence


class SpeculativeScheduler(WrappedScheduler, RepeatsVerifyBatch):
    def __init__(self, inner: Scheduler, speculator: Speculator,
                 max_num_batched_tokens: int) -> None:
        super().__init__(inner)
        if not isinstance(inner.allocator, ShrinksSlots):
            raise ValueError(f"speculation gives back rejected drafts' KV slots, which a "
                             f"{type(inner.allocator).__name__} cannot do")
        self.speculator = speculator
        self.max_num_batched_tokens = max_num_batched_tokens
        self._repeats = inner if isinstance(inner, RepeatsDecodeBatch) else None
        """The inner scheduler when it declares that its decode batches repeat."""

    def schedule(self, now_s: float) -> Plan:
        plan = self.inner.schedule(now_s)
        decodes = [c for c in plan.chunks if c.num_new_tokens == 1 and c.seq.is_decoding]
        budget = self.max_num_batched_tokens - plan.num_new_tokens
        for chunk in decodes:
            seq = chunk.seq
            k, nodes = self._fitting_k(seq, len(decodes), budget)
            if k <= 0:
                continue
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens + nodes):
                continue
            chunk.num_new_tokens = 1 + nodes
            chunk.num_spec_tokens = k
            budget -= nodes
        return plan

    def _fitting_k(self, seq: Sequence, num_decoding: int, budget: int) -> tuple[int, int]:
        """The speculator's k for `seq`, lowered until its verified nodes fit the budget left
        and its remaining outputs - 1 (0 or less: no drafts), and those nodes."""
        spec = self.speculator
        k = spec.num_draft_tokens(seq, num_decoding)
        if k <= 0:
            return k, 0
        limit = min(budget, seq.num_remaining_outputs - 1)
        nodes = spec.num_verify_nodes(k)
        while nodes > limit:
            k -= 1
            if k <= 0:
                return k, 0
            nodes = spec.num_verify_nodes(k)
        return k, nodes

    def repeated_batch(self, plan: Plan,
                       decodes: Collection[Sequence] = ()) -> list[Sequence] | None:
        return self._repeats.repeated_batch(plan, decodes) if self._repeats is not None else None

    def drained_batch(self) -> list[Sequence] | None:
        return self._repeats.drained_batch() if self._repeats is not None else None

    def nothing_can_join(self) -> bool:
        return self._repeats is not None and self._repeats.nothing_can_join()

    def padding_contexts(self) -> list[int]:
        return self._repeats.padding_contexts() if self._repeats is not None else []

    def verify_sizes(self, batch: list[Sequence]) -> tuple[list[int], list[int], int]:
        """(k, new tokens) of each chunk `schedule()` plans for the repeated `batch` (each
        decoding one token, nothing else planned) when every draft's slots are given, and
        the steps they hold for. With a fixed k, a request whose remaining outputs and the
        budget left both hold its verify takes it as it is (`_fitting_k` would not lower it)
        without asking the speculator; when every request does, they all do so again at
        each step until the fewest remaining outputs, less at most 1 + k a step (a verify
        emits its accepted drafts and one more), no longer exceed the verify's nodes."""
        budget = self.max_num_batched_tokens - len(batch)
        num_decoding = len(batch)
        fixed_k = self.speculator.fixed_num_draft_tokens()
        fixed_nodes = self.speculator.num_verify_nodes(fixed_k) if fixed_k else 0
        if fixed_nodes and budget >= num_decoding * fixed_nodes:
            fewest_outputs_left = min(
                [seq.request.output_tokens - seq.num_output_tokens for seq in batch], default=0)
            if fewest_outputs_left > fixed_nodes:  # the budget holds every verify: each takes it
                return ([fixed_k] * num_decoding, [1 + fixed_nodes] * num_decoding,
                        -(-(fewest_outputs_left - fixed_nodes) // (1 + fixed_k)))
        fitting_k = self._fitting_k
        spec_tokens, new_tokens = [], []
        for seq in batch:
            if (fixed_nodes and budget >= fixed_nodes
                    and seq.request.output_tokens - seq.num_output_tokens > fixed_nodes):
                k, nodes = fixed_k, fixed_nodes
            else:
                k, nodes = fitting_k(seq, num_decoding, budget)
                if k <= 0:
                    spec_tokens.append(0)
                    new_tokens.append(1)
                    continue
            spec_tokens.append(k)
            new_tokens.append(1 + nodes)
            budget -= nodes
        return spec_tokens, new_tokens, 1
