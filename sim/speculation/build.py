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
from policies.types import Request, ScheduledChunk, Sequence
from sim.config import SimConfig
from sim.cost.memory import ImpossibleConfigError, MemoryBudget
from sim.cost.roofline import CostModel
from sim.speculation.drafting import (CascadeDraftCost, DraftCost, ModelDraftCost, NoDraftCost,
                                      TreeDraftCost, draft_cost_model, draft_rows)
from sim.speculation.executor import SpeculativeExecutor


def k_by_batch(config: SimConfig, speculator, target: CostModel, drafting: DraftCost,
               width: int) -> tuple[tuple[int, int], ...]:
    """For batch sizes 1, 2, 4, ... up to `max_num_seqs`: the k in 0..spec_k whose step gives
    the most expected tokens per second, at the trace's mean context (prompt + half the
    output), by the same cost and acceptance models the run uses. Ties keep the smaller k."""
    o, spec_k = config.options, speculator.params.spec_k
    requests = config.trace.requests or [Request(0, 0.0, 1, 1)]
    context = round(sum(r.prompt_tokens + r.output_tokens / 2 for r in requests) / len(requests))
    probe = Sequence(Request(-1, 0.0, context, spec_k + 2))

    def tokens_per_s(batch: int, k: int) -> float:
        nodes = speculator.num_verify_nodes(k)
        chunk = ScheduledChunk(probe, 1 + nodes, context, k)
        spec, plain = ([chunk] * batch, []) if k else ([], [chunk] * batch)
        draft_s = drafting.time_s(*draft_rows(plain, spec))
        step_s = target.iteration_time([1 + nodes] * batch, [context] * batch,
                                       batch * (1 + nodes)) + draft_s
        return batch * config.acceptance.expected_tokens_per_step(k, width) / step_s

    rows, batch = [], 1
    while True:
        rows.append((batch, max(range(spec_k + 1), key=lambda k: tokens_per_s(batch, k))))
        if batch >= o.max_num_seqs:
            return tuple(rows)
        batch = min(2 * batch, o.max_num_seqs)


def draft_models(config: SimConfig) -> list:
    return [m for m in (config.draft_model, config.tiny_draft_model) if m is not None]


def drafting_cost(config: SimConfig, target: CostModel, fused: bool) -> DraftCost:
    """The speculator's drafting cost; `fused` (the speculator's own statement) decides
    whether its passes pay the per-pass fixed cost."""
    o = config.options
    overhead_s = 0.0 if fused else o.spec_draft_pass_overhead_s

    def model(spec):
        return draft_cost_model(target, spec, overhead_s, fused)

    if o.speculator == "draft":
        return ModelDraftCost(model(config.draft_model))
    if o.speculator == "cascade":
        tiny = config.tiny_draft_model
        return CascadeDraftCost(model(config.draft_model),
                                model(tiny) if tiny is not None else None,
                                o.spec_inner_k, o.spec_inner_acceptance)
    if o.speculator == "tree":
        return TreeDraftCost(target, o.spec_tree_width, fused)
    return NoDraftCost()


def speculate(config: SimConfig, scheduler: Scheduler, target: CostModel,
              options: dict) -> tuple[SpeculativeScheduler, SpeculativeExecutor]:
    o = config.options
    entry = lookup(SPECULATORS, "speculator", o.speculator)
    width = o.spec_tree_width if o.speculator == "tree" else 1
    speculator = entry.policy(entry.make_params(options))
    drafting = drafting_cost(config, target, speculator.fused)
    if o.spec_dynamic:
        table = k_by_batch(config, speculator, target, drafting, width)
        speculator = entry.policy(entry.make_params(dict(options, spec_k_by_batch=table)))
    wrapped = SpeculativeScheduler(scheduler, speculator, config.max_num_batched_tokens)
    executor = SpeculativeExecutor(target, drafting, config.acceptance, seed=o.seed,
                                   tree_width=width)
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
