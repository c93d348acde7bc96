"""The simulated speculative executor: the target's verify pass by its roofline, plus the
speculator's drafting cost, plus acceptance drawn from the acceptance model.

The verify pass of a chunk with k drafts over n verified nodes computes 1 + n tokens and
logits at every one of them (the target must score each draft); the target's `execute` prices
the whole plan (swaps included), this class adds drafting and draws acceptance. Tree
attention is charged as causal attention over the 1 + n tokens, which slightly overstates it
(a node attends only to its ancestors); for contexts of hundreds of tokens the difference is
under 1%.
"""

from __future__ import annotations

from policies.types import Plan, StepResult
from sim.cost.roofline import CostModel
from sim.speculation.acceptance import AcceptanceModel, RequestStream
from sim.speculation.drafting import DraftCost


class SpeculativeExecutor:
    def __init__(self, target: CostModel, drafting: DraftCost, acceptance: AcceptanceModel,
                 *, seed: int, tree_width: int = 1) -> None:
        self.target = target
        self.drafting = drafting
        self.acceptance = acceptance
        self.seed = seed
        self.tree_width = tree_width
        self._streams: dict[int, RequestStream] = {}

    def execute(self, plan: Plan) -> StepResult:
        verify_s = self.target.execute(plan).duration_s
        spec = [c for c in plan.chunks if c.num_spec_tokens]
        plain = [c for c in plan.chunks if not c.num_spec_tokens]
        draft_s = self.drafting.time_s(plain, spec)
        accepted = {c.seq.seq_id: self._draw(c.seq.seq_id, c.num_spec_tokens) for c in spec}
        return StepResult(verify_s + draft_s, accepted, draft_s)

    def _draw(self, request_id: int, k: int) -> int:
        stream = self._streams.get(request_id)
        if stream is None:
            stream = self._streams[request_id] = self.acceptance.stream(self.seed, request_id)
        return self.acceptance.draw(stream, k, self.tree_width)
