"""What drafting costs per engine step, on the target's hardware, by the same roofline.

Overheads, stated per speculator (a "pass" is one forward of a model):

- The engine step's CPU overhead (`iteration_overhead_s`, `per_sequence_overhead_s`:
  scheduling, input preparation, detokenization) is paid once per step by the target's
  verify pass; drafting runs inside the same step.
- `draft`, `cascade` (not fused): every draft pass is a forward of its own and pays the same
  per-pass fixed cost a target pass pays, the launch and tail latency of its layers
  (`layer_overhead_s` x its layers), plus `spec_draft_pass_overhead_s` (default 0) for engines
  that also re-prepare inputs on the CPU per draft pass (vLLM v0's spec-decode worker).
- `tree` (fused): the one-layer drafter's k level passes are captured into the target's step;
  they pay their FLOPs and bytes (one decoder layer of the target's shape plus the shared
  lm_head for every candidate) but no per-pass fixed cost.
- `ngram` (fused): a CPU lookup overlapped with the GPU step: no cost at all.

A draft model keeps its own KV: pass 1 of a step feeds it the token the target sampled last
step (its own accepted drafts are already in its cache), passes 2..k its previous draft; it
also computes every prefill chunk the target computes, in that first pass.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple, Protocol

from policies.types import ScheduledChunk
from sim.cost.measured import MeasuredCostModel
from sim.cost.roofline import CostModel
from sim.speculation.acceptance import iid_expected_tokens


class DraftCost(Protocol):
    def time_s(self, spec: DraftRows, plain: PlainRows) -> float:
        """Drafting time of a step with `spec` verifies and `plain` other chunks."""

    @property
    def prices_by_context_sum(self) -> bool:
        """Whether `time_s` of verifies that all draft the same k (and no other chunks)
        depends on their cached tokens only through their sum."""


class DraftRows(NamedTuple):
    """A step's verifies: each one's cached tokens and its k (both in the step's order)."""

    context_tokens: list[int]
    spec_tokens: list[int]


class PlainRows(NamedTuple):
    """A step's other chunks: each one's new and cached tokens."""

    new_tokens: list[int]
    context_tokens: list[int]


NO_PLAIN_ROWS = PlainRows([], [])


def draft_rows(plain: list[ScheduledChunk],
               spec: list[ScheduledChunk]) -> tuple[DraftRows, PlainRows]:
    """The rows of a plan's `spec` verify chunks and `plain` other chunks."""
    return (DraftRows([c.num_context_tokens for c in spec], [c.num_spec_tokens for c in spec]),
            PlainRows([c.num_new_tokens for c in plain], [c.num_context_tokens for c in plain]))


def _overhead_coefficients(cost: CostModel, pass_overhead_s: float, fused: bool):
    values = {"iteration_overhead_s": pass_overhead_s, "per_sequence_overhead_s": 0.0,
              "tp_overhead_s": 0.0}
    if fused:
        values["layer_overhead_s"] = 0.0
    return cost.coefficients.with_values(**values)


def draft_cost_model(target: CostModel | MeasuredCostModel, draft_spec, pass_overhead_s: float,
                     fused: bool = False) -> CostModel | MeasuredCostModel:
    """`draft_spec` on the target's hardware and TP degree, priced the target's way, with
    per-pass overheads only. (The measured model's kernel times carry their own launch
    costs, so a fused pass is priced as a plain one there.)"""
    if isinstance(target, MeasuredCostModel):
        return target.with_model(draft_spec, step_overhead_s=pass_overhead_s,
                                 per_sequence_overhead_s=0.0)
    return CostModel(draft_spec, target.hardware,
                     _overhead_coefficients(target, pass_overhead_s, fused), tp=target.tp,
                     weight_dtype=target.weight_dtype, kv_dtype=target.kv_dtype)


class NoDraftCost:
    prices_by_context_sum = True

    def time_s(self, spec: DraftRows, plain: PlainRows) -> float:
        return 0.0


class ModelDraftCost:
    """k sequential single-token passes of a draft model (the first also catches up prefills)."""

    def __init__(self, draft: CostModel) -> None:
        self.draft = draft
        self.prices_by_context_sum = draft.prices_by_context_sum

    def time_s(self, spec: DraftRows, plain: PlainRows) -> float:
        return _sequential_passes(self.draft, plain, spec.context_tokens, spec.spec_tokens,
                                  tokens_per_pass=1)


class CascadeDraftCost:
    """The small drafter verifies the tiny drafter's chains of `inner_k`: about
    ceil(k / E_inner) small passes of 1 + inner_k tokens, each after inner_k tiny passes."""

    def __init__(self, small: CostModel, tiny: CostModel | None, inner_k: int,
                 inner_acceptance: float) -> None:
        self.small = small
        self.tiny = tiny
        self.inner_k = inner_k
        self.inner_tokens_per_pass = iid_expected_tokens(inner_acceptance, inner_k)
        self.prices_by_context_sum = small.prices_by_context_sum and (
            tiny is None or tiny.prices_by_context_sum)

    def time_s(self, spec: DraftRows, plain: PlainRows) -> float:
        passes = [math.ceil(k / self.inner_tokens_per_pass) for k in spec.spec_tokens]
        contexts = spec.context_tokens
        total = _sequential_passes(self.small, plain, contexts, passes, 1 + self.inner_k)
        if self.tiny is not None:
            for _ in range(self.inner_k):
                total += _sequential_passes(self.tiny, plain, contexts, passes, 1)
        return total


class TreeDraftCost:
    """A one-layer drafter of the target's shape run once per tree level (fused): level 1
    reads the root, level j > 1 the width candidates of level j - 1; every candidate gets
    logits from the shared lm_head."""

    def __init__(self, target: CostModel, width: int, fused: bool) -> None:
        one_layer = replace(target.model, name=f"{target.model.name}-drafter", num_layers=1)
        self.drafter = draft_cost_model(target, one_layer, 0.0, fused)
        self.width = width
        self.prices_by_context_sum = self.drafter.prices_by_context_sum

    def time_s(self, spec: DraftRows, plain: PlainRows) -> float:
        total = 0.0
        rows = list(zip(spec.context_tokens, spec.spec_tokens))
        for level in range(max(spec.spec_tokens, default=0)):
            active = [context for context, k in rows if k > level]
            tokens = 1 if level == 0 else self.width
            new = [tokens] * len(active)
            ctx = [context + level for context in active]
            total += self.drafter.iteration_time(new, ctx, self.width * len(active))
        return total


def _sequential_passes(model: CostModel, plain: PlainRows, contexts: list[int],
                       passes: list[int], tokens_per_pass: int) -> float:
    """Pass j runs every spec chunk (on `contexts`) with more than j passes; pass 0 also the
    plain chunks.
    Single-token passes over the same chunks are one decode batch growing in lockstep:
    each such stretch of passes is priced by the model's `lockstep_decode_sum_s`, which adds
    what each pass's `iteration_time` gives, bit for bit, in one call (chunks near their
    last outputs draft fewer passes, so the batch narrows from stretch to stretch); so is a
    pass 0 whose plain chunks are all one-token decodes on a cached context."""
    total = 0.0
    has_plain = bool(plain.new_tokens)
    if (tokens_per_pass == 1 and not has_plain and passes
            and passes.count(passes[0]) == len(passes)):  # one stretch: most steps
        stretch_total_s = model.lockstep_decode_sum_s(contexts, passes[0])
        if stretch_total_s is not None:
            return stretch_total_s
    num_passes = max(max(passes, default=0), 1 if has_plain else 0)
    j = 0
    while j < num_passes:
        left = passes if j == 0 else [p for p in passes if p > j]  # all draft pass 0 (k >= 1)
        active = (contexts if len(left) == len(contexts)
                  else [c for c, p in zip(contexts, passes) if p > j])
        if tokens_per_pass == 1 and active and (j or not has_plain):
            stretch = min(left) - j
            stretch_total_s = model.lockstep_decode_sum_s(active, stretch, j, total)
            if stretch_total_s is not None:
                total = stretch_total_s
                j += stretch
                continue
        if (j == 0 and tokens_per_pass == 1 and has_plain
                and plain.new_tokens.count(1) == len(plain.new_tokens)
                and min(plain.context_tokens) > 0):  # plain decodes: pass 0 decodes alone
            pass_total_s = model.lockstep_decode_sum_s(active + plain.context_tokens, 1, 0,
                                                       total)
            if pass_total_s is not None:
                total = pass_total_s
                j = 1
                continue
        new = [tokens_per_pass] * len(active)
        ctx = [c + j * tokens_per_pass for c in active]
        if j == 0:
            new += plain.new_tokens
            ctx += plain.context_tokens
        if new:
            total += model.iteration_time(new, ctx)
        j += 1
    return total
