"""Assembly: a `SimConfig` made into replicas' engines and cost models, with no clock.

What a replica is built from, for every harness that drives one: the simulator's SimPy loop
(`sim.api.simulate`, `sim.cluster`) and the real backend's wall-clock loop (`backend.replay`,
`backend.bench`) alike. Nothing here imports simpy: the backend builds its engines from this
module and never loads the simulator's event loop (a contract in pyproject.toml's
`[tool.importlinter]`, checked by tests/test_layering.py).
"""

from __future__ import annotations

from typing import Callable

from policies.beam import BeamParams, BeamReparenter, RandomBeamReparenter
from policies.decoding.block_diffusion import BlockDiffusion, BlockDiffusionScheduler
from policies.engine import Engine, Executor
from policies.kv.base import ForksSequences, KVAllocator
from policies.kv.layout import KVLayout
from policies.registry import ALLOCATORS, SCHEDULERS, lookup
from policies.types import Sequence
from sim.config import SimConfig, diffusion_params
from sim.cost.memory import MemoryBudget, kv_budget, kv_layout
from sim.cost.measured import MeasuredCostModel
from sim.cost.roofline import CostModel
from sim.decoding import DiffusionExecutor
from sim.machine_speed import SpeedScaledExecutor

SimCostModel = CostModel | MeasuredCostModel
ExecutorObserver = Callable[[Executor], Executor]
"""Wraps a replica's simulated executor to watch the iterations it prices (the dashboard's
`sim.cost.intensity.IterationRecorder`); it must return what the executor returns."""


def roofline_cost_model(config: SimConfig) -> CostModel:
    """The roofline model of one replica: it prices the run unless the measured model does,
    and counts iterations' FLOPs and bytes either way."""
    o = config.options
    return CostModel(config.model, config.hardware, config.coefficients, tp=o.tp, pp=o.pp,
                     weight_dtype=o.weight_dtype, kv_dtype=o.kv_dtype)


def build_cost_model(config: SimConfig) -> SimCostModel:
    """The cost model `resolve` chose (`--cost-model`, `SimConfig.cost_model_choice`)."""
    o = config.options
    if config.measured is not None:
        # no --weight-dtype (None): the checkpoint's own dtypes, quantized parts included
        return MeasuredCostModel(config.model, config.hardware, config.measured, tp=o.tp,
                                 pp=o.pp, weight_dtype=o.weight_dtype, kv_dtype=o.kv_dtype)
    return roofline_cost_model(config)


def cost_model_summary(config: SimConfig, costs: list[SimCostModel]) -> dict[str, object]:
    """summary.json's `cost_model` (e.g. `roofline`, `measured:vllm-0.24.0/h100`), why it was
    chosen (`cost_model_choice`) and, for the measured model, how many kernel lookups of the
    executed iterations were inside the measured ranges and how many were extrapolated by the
    roofline, and (`cost_model_notes`, only when there are any) which kernels no table
    measures at the run's dtypes."""
    summary: dict[str, object] = {"cost_model": costs[0].name,
                                  "cost_model_choice": config.cost_model_choice}
    measured = [c for c in costs if isinstance(c, MeasuredCostModel)]
    if measured:
        in_range = sum(c.lookups_in_range for c in measured)
        extrapolated = sum(c.lookups_extrapolated for c in measured)
        total = in_range + extrapolated
        summary.update(kernel_lookups_in_range=in_range,
                       kernel_lookups_extrapolated=extrapolated,
                       kernel_lookups_in_range_share=in_range / total if total else None)
        notes = list(dict.fromkeys(line for c in measured for line in c.stand_ins()))
        if notes:
            summary["cost_model_notes"] = notes
    return summary


def build_engine(
    config: SimConfig,
    cost: SimCostModel,
    on_done: Callable[[Sequence], None] | None = None,
    executor_for: Callable[[KVAllocator], Executor] | None = None,
    beams: BeamReparenter | None = None,
    now: Callable[[], float] | None = None,
    token_indexed_pool: bool = False,
    observe: ExecutorObserver | None = None,
) -> tuple[Engine, MemoryBudget | None]:
    """The replica's engine; the memory budget is None when `num_gpu_blocks` was given.

    The executor is the cost model unless `executor_for(allocator)` builds another one (the
    real backend, whose KV pool is addressed by that allocator's block ids). With a speculator
    other than `none` the scheduler is wrapped to verify drafts and the executor is the
    speculative one around `cost` (or the real one, which drafts and verifies on tensors);
    with `none` both are exactly as without. Beam search (`beam_width` > 1) reparents beams
    with `beams` if given (the real backend's score-driven search), else with the simulator's
    random churn. With `--decoding block-diffusion` the scheduler is wrapped to denoise blocks
    (`policies.decoding.block_diffusion`) and the simulated executor reports each step's
    commits (`sim.decoding`); the real executor builds the same policy from the options.
    With a speed trace (`--speed-trace`) the simulated executor's prices are
    scaled by the trace's factors at `now()`, the simulation's clock (`sim.machine_speed`).
    `token_indexed_pool`: the executor keeps every layer's KV for every token in one block
    table per sequence (the real backend, whose attention masks windows itself), so the
    allocator gets the plain layout whatever the model's layer kinds. `observe` wraps the
    simulated executor, whichever it is (not the real one).
    """
    o = config.options
    budget = None
    num_blocks = o.num_gpu_blocks
    if num_blocks is None:
        budget = kv_budget(cost, block_size=o.block_size,
                           gpu_memory_utilization=o.gpu_memory_utilization,
                           max_num_batched_tokens=config.max_num_batched_tokens,
                           max_num_seqs=o.max_num_seqs)
        if config.acceptance is not None:
            # Speculation's modules (numpy.random with them, ~10 ms) load for a run that uses it.
            from sim.speculation.build import with_draft_memory

            budget = with_draft_memory(budget, config, cost)
        num_blocks = budget.num_blocks
    layout, block_bytes = kv_layout(cost, o.block_size)
    if token_indexed_pool:
        layout, block_bytes = KVLayout(), o.block_size * cost.kv_bytes_per_token_replica
    num_cpu_blocks = int(o.swap_space_gb * 1024**3 * o.tp * o.pp // block_bytes)
    options = dict(config.policy_options, num_blocks=num_blocks, num_cpu_blocks=num_cpu_blocks,
                   layout=layout)
    alloc_entry = lookup(ALLOCATORS, "allocator", o.allocator)
    allocator = alloc_entry.policy(alloc_entry.make_params(options))
    if (o.n > 1 or o.beam_width > 1) and not isinstance(allocator, ForksSequences):
        raise ValueError(f"--n and --beam-width fork a request into sequences sharing its KV, "
                         f"which --allocator {o.allocator} cannot do")
    sched_entry = lookup(SCHEDULERS, "scheduler", o.scheduler)
    scheduler = sched_entry.policy(sched_entry.make_params(options), allocator)
    executor = cost
    if config.acceptance is not None:
        from sim.speculation.build import speculate  # (loaded for a speculating run only)

        scheduler, executor = speculate(config, scheduler, cost, options)
    decoding = None
    if diffusion_params(o).enabled:
        decoding = BlockDiffusion(diffusion_params(o))
        scheduler = BlockDiffusionScheduler(scheduler, decoding)
        executor = DiffusionExecutor(executor, decoding, o.seed)
    if executor_for is not None:
        executor = executor_for(allocator)
    elif config.speed is not None:
        if now is None:
            raise ValueError("a speed trace scales steps by the time they start: build the "
                             "engine with the simulation's clock (now=)")
        executor = SpeedScaledExecutor(executor, config.speed, now, cost)
    if observe is not None and executor_for is None:
        executor = observe(executor)
    if o.beam_width > 1 and beams is None:
        beams = RandomBeamReparenter(BeamParams(beam_churn=o.beam_churn, seed=o.seed))
    # A closed loop sends a request when one finishes, which only the finishing step reveals:
    # decode runs cannot be jumped past it (`sim.cluster.Cluster.closed_loop`).
    # Fast-forward jumps runs of one-token decodes, which block diffusion never has.
    fast_forward = (o.fast_forward and executor_for is None and not config.trace.closed_loop
                    and decoding is None)
    engine = Engine(scheduler, executor, max_model_len=config.max_model_len, on_done=on_done,
                    beams=beams, fast_forward=fast_forward, decoding=decoding,
                    async_scheduling=async_scheduling(config, executor_for is not None))
    return engine, budget


def async_scheduling(config: SimConfig, real_executor: bool) -> bool:
    """Whether the engine plans each step while the one before runs (`--async-scheduling`):
    `auto` follows the engine the measured cost model prices; the real backend never does."""
    choice = config.options.async_scheduling
    if choice == "auto":
        return (not real_executor and config.measured is not None
                and config.measured.async_scheduling)
    return choice == "on"
