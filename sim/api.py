"""`simulate(config) -> Results`: build the policies and cost model, replay, collect.

Pure: no file or network I/O, no globals, no wall-clock reads; the same config gives the same
results. The trace arrives already loaded inside the config (see `sim.config.resolve`).
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from policies.engine import Engine
from policies.registry import ALLOCATORS, SCHEDULERS, lookup
from policies.types import Request, Sequence
from sim.config import SimConfig
from sim.cost.memory import MemoryBudget, kv_budget
from sim.cost.roofline import CostModel
from sim.metrics import summarize
from sim.replica import SimReplica
from sim.results import Results

ProgressFn = Callable[[int, int], None]


def build_cost_model(config: SimConfig, cls: type[CostModel] = CostModel) -> CostModel:
    """The config's cost model; `cls` may be a subclass that observes iterations."""
    o = config.options
    return cls(config.model, config.hardware, config.coefficients, tp=o.tp,
               weight_dtype=o.weight_dtype, kv_dtype=o.kv_dtype)


def build_engine(
    config: SimConfig, cost: CostModel, on_done: Callable[[Sequence], None] | None = None
) -> tuple[Engine, MemoryBudget | None]:
    """The replica's engine; the memory budget is None when `num_gpu_blocks` was given."""
    o = config.options
    budget = None
    num_blocks = o.num_gpu_blocks
    if num_blocks is None:
        budget = kv_budget(cost, block_size=o.block_size,
                           gpu_memory_utilization=o.gpu_memory_utilization,
                           max_num_batched_tokens=config.max_num_batched_tokens,
                           max_num_seqs=o.max_num_seqs)
        num_blocks = budget.num_blocks
    options = dict(config.policy_options, num_blocks=num_blocks)
    alloc_entry = lookup(ALLOCATORS, "allocator", o.allocator)
    allocator = alloc_entry.policy(alloc_entry.make_params(options))
    sched_entry = lookup(SCHEDULERS, "scheduler", o.scheduler)
    scheduler = sched_entry.policy(sched_entry.make_params(options), allocator)
    engine = Engine(scheduler, cost, max_model_len=config.max_model_len, on_done=on_done)
    return engine, budget


def _arrivals(
    env: simpy.Environment, requests: list[Request], replica: SimReplica
) -> Generator[simpy.Event, None, None]:
    for request in requests:
        delay = request.arrival_time_s - env.now
        if delay > 0:
            yield env.timeout(delay)
        replica.submit(request)


def simulate(
    config: SimConfig, progress: ProgressFn | None = None, *, cost: CostModel | None = None
) -> Results:
    """Replay `config.trace`; `progress(done, total)` is called as requests complete.

    `cost` replaces the cost model built from the config, for callers that observe each
    iteration (the dashboard's `sim.cost.intensity.RecordingCostModel`); it must be built
    from the same config, or the results describe another system.
    """
    requests = config.trace.requests
    total = config.trace.num_rows
    done = len(config.trace.invalid_rows)
    step = max(1, total // 200)

    def on_done(_: Sequence) -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % step == 0 or done == total):
            progress(done, total)

    if cost is None:
        cost = build_cost_model(config)
    engine, budget = build_engine(config, cost, on_done)
    env = simpy.Environment()
    replica = SimReplica(env, engine)
    env.process(_arrivals(env, requests, replica))
    env.run(until=config.options.horizon_s)
    end_s = env.now
    summary = summarize(config, engine, end_s)
    return Results(config=config, engine=engine, memory=budget, summary=summary, end_s=end_s)
