"""`simulate(config) -> Results`: replay a config's trace on SimPy replicas and collect.

Pure: no file or network I/O, no globals, no wall-clock reads; the same config gives the same
results. The trace arrives already loaded inside the config (see `sim.config.resolve`); the
engines and cost models come from `sim.assembly`, which the real backend shares.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Callable, Iterator

import simpy

from policies.engine import Engine
from policies.types import Sequence
from sim.assembly import (ExecutorObserver, SimCostModel, build_cost_model, build_engine,
                          cost_model_summary)
from sim.cluster import Cluster
from sim.config import SimConfig
from sim.cost.memory import MemoryBudget
from sim.metrics import summarize
from sim.results import Results
from traces.closed_loop import ClosedLoop

ProgressFn = Callable[[int, int], None]
YOUNG_COLLECTION_ALLOCATIONS = 100_000
"""Allocations between the cyclic collector's young collections while simulating (Python's
default: 700). A replay allocates small objects by the million and frees nearly all of them
by reference counting, while millions of requests and sequences stay alive: at the default,
older collections keep walking those, about a twentieth of a million-request replay."""


@contextmanager
def rare_collections() -> Iterator[None]:
    """Collect cyclic garbage rarely (`YOUNG_COLLECTION_ALLOCATIONS`, older generations
    after 50 and 100 of the younger ones), restoring the process's thresholds after."""
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


def simulate(
    config: SimConfig, progress: ProgressFn | None = None, *,
    observe: ExecutorObserver | None = None,
) -> Results:
    """Replay `config.trace` on the configured replicas (see `sim.cluster`);
    `progress(done, total)` is called as requests complete. Cyclic garbage is collected
    rarely meanwhile (`rare_collections`).

    `observe` wraps each engine's executor, in engine order (so an observer such as the
    dashboard's `sim.cost.intensity.IterationRecorder` sees one engine's iterations in that
    engine's order), whichever cost model prices them.
    """
    with rare_collections():
        return _simulate(config, progress, observe)


def _simulate(config: SimConfig, progress: ProgressFn | None,
              observe: ExecutorObserver | None) -> Results:
    """`simulate`, under whatever collection thresholds the caller set."""
    total = config.trace.num_rows
    done = len(config.trace.invalid_rows)
    step = max(1, total // 200)

    def on_done(_: Sequence) -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % step == 0 or done == total):
            progress(done, total)

    cost = build_cost_model(config)
    budgets: list[MemoryBudget | None] = []
    engine_costs: list[SimCostModel] = []

    def engine_factory(callback: Callable[[Sequence], None]) -> Engine:
        engine_costs.append(build_cost_model(config))
        engine, budget = build_engine(config, engine_costs[-1], callback, now=lambda: env.now,
                                      observe=observe)
        budgets.append(budget)
        return engine

    env = simpy.Environment()
    cluster = Cluster(env, config, cost, engine_factory, on_done)
    trace = config.trace
    if trace.closed_loop:
        env.process(cluster.closed_loop(ClosedLoop(trace.requests, trace.closed_loop)))
    else:
        env.process(cluster.arrivals(trace.requests))
    env.run(until=config.options.horizon_s)
    engines = cluster.engines
    summary = summarize(config, engines, env.now) | cost_model_summary(config, engine_costs)
    if budgets[0] is not None:
        summary |= budgets[0].summary()
    return Results(config=config, engines=engines, memory=budgets[0], summary=summary,
                   end_s=env.now)
