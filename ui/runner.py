"""One dashboard run: the CLI's `resolve` and `simulate`, each replica's executor observed by
an `IterationRecorder` (whichever cost model prices the run).

`cached_run` is the only entry the pages use: results are cached per `ReplayOptions` (frozen,
hashable, and naming every input, including an uploaded trace by its content-addressed path),
and a fresh run draws a progress bar while it simulates. The bar is created inside the cached
function because Streamlit replays a cached function's elements and cannot replay a call on
an element made outside it.
"""

from __future__ import annotations

from typing import Callable

import streamlit as st

from sim.api import simulate
from sim.public import Executor, IterationRecorder, ReplayOptions, resolve, roofline_cost_model
from ui.data import RunView, run_view

ProgressFn = Callable[[int, int], None]


def run(options: ReplayOptions, progress: ProgressFn | None = None) -> RunView:
    """Resolve and simulate `options`; ValueError (a clear message) on bad input."""
    config = resolve(options)
    counts = roofline_cost_model(config)
    recorders: list[IterationRecorder] = []

    def record(executor: Executor) -> IterationRecorder:
        recorders.append(IterationRecorder(executor, counts))
        return recorders[-1]

    results = simulate(config, progress, observe=record)
    return run_view(results, recorders)


@st.cache_data(show_spinner=False, max_entries=32)
def cached_run(options: ReplayOptions) -> RunView:
    bar = st.progress(0.0, text="simulating...")

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"simulating: {done}/{total} requests")

    try:
        return run(options, progress)
    finally:
        bar.empty()
