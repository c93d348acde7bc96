"""Where cells run: `local` (a process pool on this machine) or `ray` (local or a cluster).

Each backend yields `(index, outcome)` as cells finish, in completion order; a cell whose worker
dies yields an error outcome instead of ending the sweep.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

from sim.extras import install_hint
from sim.sweep.cell import run_cell

BACKENDS = ("local", "ray")
Outcome = dict[str, Any]
Task = Callable[[dict[str, Any]], Outcome]
"""What a worker runs per cell: a top-level function (a pool or Ray ships it by reference)
that returns an error outcome rather than raising."""


def run_cells(
    cells: dict[int, dict[str, Any]], backend: str, *, workers: int | None = None,
    address: str | None = None, task: Task = run_cell,
) -> Iterator[tuple[int, Outcome]]:
    """Run `task(values)` per cell (by default one simulation, `run_cell`)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if address is not None and backend != "ray":
        raise ValueError("--address only applies to --backend ray")
    if not cells:
        return iter(())
    if backend == "local":
        return _run_local(cells, workers or os.cpu_count() or 1, task)
    return _run_ray(cells, workers, address, task)


def _run_local(cells: dict[int, dict[str, Any]], workers: int,
               task: Task) -> Iterator[tuple[int, Outcome]]:
    # imported here: the process pool's modules take ~20 ms, which only a sweep should pay
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    # spawn, not fork: a fresh interpreter inherits no threads (Ray's, rich's) from the driver.
    with ProcessPoolExecutor(max_workers=min(workers, len(cells)),
                             mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(task, values): index for index, values in cells.items()}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - a dead worker is this cell's error
                outcome = {"summary": None, "error": f"worker failed: {type(exc).__name__}: {exc}"}
            yield futures[future], outcome


def ray_runtime_env() -> dict[str, Any]:
    """Local Ray workers import this checkout's packages, the ones the driver runs."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def _run_ray(
    cells: dict[int, dict[str, Any]], workers: int | None, address: str | None, task: Task,
) -> Iterator[tuple[int, Outcome]]:
    try:
        import ray
    except ImportError:
        raise ValueError(
            f"--backend ray needs Ray (or use --backend local): {install_hint('dist')}"
        ) from None
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, runtime_env=ray_runtime_env(),
                     log_to_driver=False)
        else:  # a cluster's nodes run their own installed servesim
            ray.init(address=address, log_to_driver=False)
    remote = ray.remote(num_cpus=1, max_retries=0)(task)
    pending = {remote.remote(values): index for index, values in cells.items()}
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ref)
        try:
            outcome = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a dead worker is this cell's error
            outcome = {"summary": None, "error": f"worker failed: {type(exc).__name__}: {exc}"}
        yield index, outcome
