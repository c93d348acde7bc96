"""The simulated speculative executor: the target's verify pass by its roofline, plus the
speculator's drafting cost, plus acceptance drawn from the acceptance model.

The verify pass of a chunk with k drafts over n verified nodes computes 1 + n tokens and
logits at every one of them (the target must score each draft); the target's `execute` prices
the whole plan (swaps included), this class adds drafting and draws acceptance. Tree
attention is charged as causal attention over the 1 + n tokens, which slightly overstates it
(a node attends only to its ancestors); for contexts of hundreds of tokens the difference is
under 1%.

A plan is priced first and its acceptance drawn when it runs (`PricesAhead`); the
speculative fast-forward prices its steps from their sizes, without a plan (`PricesVerifies`,
the same price bit for bit), before deciding to run them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from policies.fast_forward import PricesAhead, PricesRows, PricesVerifies
from policies.types import Plan, Sequence, StepResult
from sim.cost.roofline import CostModel
from sim.speculation.acceptance import AcceptanceModel, RequestStream
from sim.speculation.drafting import NO_PLAIN_ROWS, DraftCost, DraftRows, PlainRows, draft_rows


PRICES_REMEMBERED = 1 << 17
"""Uniform steps' prices kept (cleared when full): the full Azure conv trace's speculative
steps have about 72,000 distinct ones, which hold 24 MiB (a price keeps no breakdown)."""


class SpeculativePrice(NamedTuple):
    """A plan's price: the whole step, its drafting share, and the target's own price."""

    duration_s: float
    draft_s: float
    target: Any


class SpeculativeExecutor(PricesAhead, PricesVerifies):
    def __init__(self, target: CostModel, drafting: DraftCost, acceptance: AcceptanceModel,
                 *, seed: int, tree_width: int = 1) -> None:
        self.target = target
        self.drafting = drafting
        self.acceptance = acceptance
        self.seed = seed
        self.tree_width = tree_width
        self._streams: dict[int, RequestStream] = {}
        self._rows = target if isinstance(target, PricesRows) else None
        """The target, when it prices rows without a plan (`price_verifies` needs it)."""
        self._by_context_sum = (self._rows is not None and self._rows.prices_by_context_sum
                                and drafting.prices_by_context_sum)
        self._prices: dict[tuple[int, int, int, int], SpeculativePrice] = {}
        """Prices of uniform steps (every row verifies k drafts in n new tokens) by (rows,
        n, k, cached tokens in all), when both models price by that sum: about half of the
        Azure conv trace's uniform steps repeat an earlier one's key."""
        self._batch: list[Sequence] | None = None
        self._batch_streams: list[RequestStream] = []
        """The streams of `_batch`'s sequences: a fast-forwarded run hands the same batch
        (a list nothing changes) to `run_verifies` at each of its steps."""

    def execute(self, plan: Plan) -> StepResult:
        return self.run_priced(plan, self.price(plan))

    def price(self, plan: Plan) -> SpeculativePrice:
        """The target's verify pass plus drafting; nothing drawn or counted."""
        target = self.target.price(plan)
        spec, plain = [], []
        for chunk in plan.chunks:
            (spec if chunk.num_spec_tokens else plain).append(chunk)
        draft_s = self.drafting.time_s(*draft_rows(plain, spec))
        return SpeculativePrice(target.duration_s + draft_s, draft_s, target)

    def run_priced(self, plan: Plan, priced: SpeculativePrice) -> StepResult:
        """The target runs its pass (its counters) and every verify draws its acceptance."""
        self.target.run_priced(plan, priced.target)
        accepted = {}
        for chunk in plan.chunks:
            if chunk.num_spec_tokens:
                seq = chunk.seq
                accepted[seq.seq_id] = self._draw(seq, chunk.num_spec_tokens)
        return StepResult(priced.duration_s, accepted, priced.draft_s)

    def price_verifies(self, context_tokens: list[int], new_tokens: list[int],
                       spec_tokens: list[int]) -> SpeculativePrice | None:
        """`price` of a plan of these decodes and verifies (no swaps, no copies), from their
        sizes: the same target rows (logits at every token of a verify, at the one of a
        decode) and drafting rows; None when the target cannot price rows."""
        if self._rows is None:
            return None
        if 0 in spec_tokens:  # plain decodes among the verifies
            return self._price_mixed(context_tokens, new_tokens, spec_tokens)
        if (self._by_context_sum and new_tokens.count(new_tokens[0]) == len(new_tokens)
                and spec_tokens.count(spec_tokens[0]) == len(spec_tokens)):
            key = (len(new_tokens), new_tokens[0], spec_tokens[0], sum(context_tokens))
            found = self._prices.get(key)
            if found is None:
                if len(self._prices) >= PRICES_REMEMBERED:
                    self._prices.clear()
                found = self._prices[key] = self._price_verifies_only(
                    context_tokens, new_tokens, spec_tokens)
            return found
        return self._price_verifies_only(context_tokens, new_tokens, spec_tokens)

    def _price_verifies_only(self, context_tokens: list[int], new_tokens: list[int],
                             spec_tokens: list[int]) -> SpeculativePrice:
        """`price_verifies` of a step with no plain decode."""
        priced = self._rows.price_rows(new_tokens, context_tokens, sum(new_tokens))
        draft_s = self.drafting.time_s(DraftRows(context_tokens, spec_tokens), NO_PLAIN_ROWS)
        return SpeculativePrice(priced.duration_s + draft_s, draft_s, priced)

    def _price_mixed(self, context_tokens: list[int], new_tokens: list[int],
                     spec_tokens: list[int]) -> SpeculativePrice:
        """`price_verifies` of a step with plain decodes (k = 0) among its verifies."""
        spec_contexts, spec_ks, plain_new, plain_contexts = [], [], [], []
        for context, new, k in zip(context_tokens, new_tokens, spec_tokens):
            if k:
                spec_contexts.append(context)
                spec_ks.append(k)
            else:
                plain_new.append(new)
                plain_contexts.append(context)
        num_sampling = sum([new if k else 1 for new, k in zip(new_tokens, spec_tokens)])
        priced = self._rows.price_rows(new_tokens, context_tokens, num_sampling)
        draft_s = self.drafting.time_s(DraftRows(spec_contexts, spec_ks),
                                       PlainRows(plain_new, plain_contexts))
        return SpeculativePrice(priced.duration_s + draft_s, draft_s, priced)

    def run_verifies(self, seqs: list[Sequence], spec_tokens: list[int],
                     priced: SpeculativePrice) -> list[int]:
        """What `run_priced` does for the plan `price_verifies` priced: the target's
        counters, then each verify's accepted drafts (0 for a plain decode), in order."""
        self.target.ran_rows(priced.target)
        streams = self._streams
        if 0 not in spec_tokens:
            if seqs is not self._batch:
                self._batch = seqs
                self._batch_streams = [streams.get(seq.seq_id) or self._stream(seq)
                                       for seq in seqs]
            return self.acceptance.draw_each(self._batch_streams, spec_tokens, self.tree_width)
        verifies = [(seq, k) for seq, k in zip(seqs, spec_tokens) if k]
        drawn = iter(self.acceptance.draw_each(
            [streams.get(seq.seq_id) or self._stream(seq) for seq, _ in verifies],
            [k for _, k in verifies], self.tree_width) if verifies else ())
        return [next(drawn) if k else 0 for k in spec_tokens]

    def _draw(self, seq: Sequence, num_spec_tokens: int) -> int:
        """`seq`'s accepted drafts of `num_spec_tokens`, from its own stream."""
        stream = self._streams.get(seq.seq_id)
        return self.acceptance.draw(stream if stream is not None else self._stream(seq),
                                    num_spec_tokens, self.tree_width)

    def _stream(self, seq: Sequence) -> RequestStream:
        """A new stream for `seq` (its first verify)."""
        stream = self._streams[seq.seq_id] = self.acceptance.stream(
            self.seed, seq.request.request_id, seq.sample_index)
        return stream
