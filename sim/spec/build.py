"""Assemble speculation for one replica: the speculator around the scheduler, the simulated
speculative executor, and the KV pool share the draft models take.

A draft model's weights and KV live on the same devices as the target's: when the KV pool is
sized from memory, the draft weights come off the top and every pool slot is sized to hold the
target's and the drafters' KV of one token (each running request has KV in every model). With
`--num-gpu-blocks` the pool is taken as given and the draft KV is assumed to live outside it.
"""

from __future__ import annotations

from dataclasses import replace

from policies.registry import SPECULATORS, lookup
from policies.scheduler.base import Scheduler
from policies.speculative.planner import SpeculativeScheduler
from sim.config import SimConfig
from sim.cost.memory import ImpossibleConfigError, MemoryBudget
from sim.cost.roofline import CostModel
from sim.spec.drafting import (CascadeDraftCost, DraftCost, ModelDraftCost, NoDraftCost,
                               TreeDraftCost, draft_cost_model)
from sim.spec.executor import SpeculativeExecutor


def verify_knee_tokens(cost: CostModel) -> int:
    """Tokens per pass where the target's GEMMs turn from memory- to compute-bound (the
    roofline ridge): below it a verify pass of 1 + k tokens per request costs about as much
    as a plain decode; above it every extra token costs its FLOPs."""
    one = cost.breakdown([1], [0]).groups[0]
    two = cost.breakdown([2], [0]).groups[0]
    compute_per_token = two.compute_s - one.compute_s
    memory_per_token = two.memory_s - one.memory_s
    memory_fixed = one.memory_s - memory_per_token
    if compute_per_token <= memory_per_token:
        return 1
    return max(1, round(memory_fixed / (compute_per_token - memory_per_token)))


def draft_models(config: SimConfig) -> list:
    return [m for m in (config.draft_model, config.tiny_draft_model) if m is not None]


def drafting_cost(config: SimConfig, target: CostModel) -> DraftCost:
    o = config.options
    overhead_s = o.spec_draft_pass_overhead_s
    if o.speculator == "draft":
        return ModelDraftCost(draft_cost_model(target, config.draft_model, overhead_s))
    if o.speculator == "cascade":
        tiny = config.tiny_draft_model
        return CascadeDraftCost(
            draft_cost_model(target, config.draft_model, overhead_s),
            draft_cost_model(target, tiny, overhead_s) if tiny is not None else None,
            o.spec_inner_k, o.spec_inner_acceptance,
        )
    if o.speculator == "tree":
        return TreeDraftCost(target, o.spec_tree_width)
    return NoDraftCost()


def speculate(config: SimConfig, scheduler: Scheduler, target: CostModel,
              options: dict) -> tuple[SpeculativeScheduler, SpeculativeExecutor]:
    entry = lookup(SPECULATORS, "speculator", config.options.speculator)
    params = entry.make_params(dict(options, spec_knee_tokens=verify_knee_tokens(target)))
    speculator = entry.policy(params)
    wrapped = SpeculativeScheduler(scheduler, speculator, config.max_num_batched_tokens)
    width = config.options.spec_tree_width if config.options.speculator == "tree" else 1
    executor = SpeculativeExecutor(target, drafting_cost(config, target), config.acceptance,
                                   seed=config.options.seed, tree_width=width)
    return wrapped, executor


def with_draft_memory(budget: MemoryBudget, config: SimConfig, target: CostModel) -> MemoryBudget:
    """The pool left once the draft models' weights and per-token KV are accounted for."""
    drafts = [draft_cost_model(target, m, 0.0) for m in draft_models(config)]
    if not drafts:
        return budget
    tp = target.tp
    draft_weights = sum(d.model.weight_bytes(d.weight_dtype) for d in drafts) / tp
    kv_per_device = budget.kv_bytes_per_device - draft_weights
    block_size = config.options.block_size
    per_block = (target.kv_bytes_per_token_replica
                 + sum(d.kv_bytes_per_token_replica for d in drafts)) * block_size
    num_blocks = int(kv_per_device * tp // per_block) if kv_per_device > 0 else 0
    if num_blocks < 1:
        raise ImpossibleConfigError(
            f"no room for the draft model(s) {', '.join(d.model.name for d in drafts)} next to "
            f"{target.model.name} on {target.hardware.name}"
        )
    return replace(budget, weights_bytes_per_device=budget.weights_bytes_per_device + draft_weights,
                   kv_bytes_per_device=kv_per_device, kv_bytes_per_block=per_block,
                   num_blocks=num_blocks)
