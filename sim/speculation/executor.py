"""The simulated speculative executor: the target's verify pass by its roofline, plus the
speculator's drafting cost, plus acceptance drawn from the acceptance model.

The verify pass of a chunk with k drafts over n verified nodes computes 1 + n tokens and
logits at every one of them (the target must score each draft); the target's `execute` prices
the whole plan (swaps included), this class adds drafting and draws acceptance. Tree
attention is charged as causal attention over the 1 + n tokens, which slightly overstates it
(a node attends only to its ancestors); for contexts of hundreds of tokens the difference is
under 1%.

A plan is priced first and its acceptance drawn when it runs (`PricesAhead`), so the
speculative fast-forward can price a step before deciding to run it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from policies.fast_forward import PricesAhead
from policies.types import Plan, StepResult
from sim.cost.roofline import CostModel
from sim.speculation.acceptance import AcceptanceModel, RequestStream
from sim.speculation.drafting import DraftCost


class SpeculativePrice(NamedTuple):
    """A plan's price: the whole step, its drafting share, and the target's own price."""

    duration_s: float
    draft_s: float
    target: Any


class SpeculativeExecutor(PricesAhead):
    def __init__(self, target: CostModel, drafting: DraftCost, acceptance: AcceptanceModel,
                 *, seed: int, tree_width: int = 1) -> None:
        self.target = target
        self.drafting = drafting
        self.acceptance = acceptance
        self.seed = seed
        self.tree_width = tree_width
        self._streams: dict[int, RequestStream] = {}

    def execute(self, plan: Plan) -> StepResult:
        return self.run_priced(plan, self.price(plan))

    def price(self, plan: Plan) -> SpeculativePrice:
        """The target's verify pass plus drafting; nothing drawn or counted."""
        target = self.target.price(plan)
        spec, plain = [], []
        for chunk in plan.chunks:
            (spec if chunk.num_spec_tokens else plain).append(chunk)
        draft_s = self.drafting.time_s(plain, spec)
        return SpeculativePrice(target.duration_s + draft_s, draft_s, target)

    def run_priced(self, plan: Plan, priced: SpeculativePrice) -> StepResult:
        """The target runs its pass (its counters) and every verify draws its acceptance."""
        self.target.run_priced(plan, priced.target)
        streams, draw, width = self._streams, self.acceptance.draw, self.tree_width
        accepted = {}
        for chunk in plan.chunks:
            if chunk.num_spec_tokens:
                seq = chunk.seq
                stream = streams.get(seq.seq_id)
                if stream is None:
                    stream = streams[seq.seq_id] = self.acceptance.stream(
                        self.seed, seq.request.request_id, seq.sample_index)
                accepted[seq.seq_id] = draw(stream, chunk.num_spec_tokens, width)
        return StepResult(priced.duration_s, accepted, priced.draft_s)
