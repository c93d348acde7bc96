"""Fit the measured engine's own terms to recorded runs of that engine, by replaying them.

The kernel tables price the GPU's work; what the engine adds is fitted here, three named
terms per engine (and GPU), never one per run or model:

- `step_overhead_s`, `per_sequence_overhead_s`: time a step takes beyond its kernels (what
  async scheduling leaves on the critical path: input preparation, sampling, the hand-over
  between steps), a constant and a term per scheduled sequence. They change the simulated
  dynamics, so they are fitted over a *design grid* of replays.
- `frontend_latency_s`: the request's time outside the engine's steps (HTTP, tokenization,
  detokenization, streaming). It shifts every TTFT and E2E of a request by the same amount
  and nothing else, so it is added to the replayed figures, not replayed.

Method: replay every run not recorded as overloaded at each grid point (every request, or each
stage's first N for a quick look: a cut stage starts and ends emptier than the recorded one,
which biases its busiest stages low), interpolate each compared figure (per run, stage, metric, statistic) linearly over
the grid, and minimise with scipy the loss below over the three terms (grid bounds; latency
>= 0). The fitted point is then replayed in full (every request) to report its real error.
Leave-one-model-out: the same fit on the runs of all models but one, scored by replaying the
held-out model's runs in full at that fold's point.

Loss: for each metric family (ttft, e2e, itl) the median |log(simulated / measured)| over its
figures, summed over the families: what the fit is judged by (median errors per family), the
three families weighing the same however many figures each has, a figure twice too high
costing what one half as high does, and a few tail figures (a p99 TTFT set by a hiccup the
simulator does not model) unable to pull the terms their way.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.optimize import differential_evolution, minimize

from sim import recorded
from sim.config import SimConfig, resolve
from sim.cost.measured_coefficients import MeasuredCoefficients

DYNAMIC_TERMS = ("step_overhead_s", "per_sequence_overhead_s")
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "step_overhead_s": (0.0, 0.0005, 0.0015),
    "per_sequence_overhead_s": (0.0, 1e-5, 3e-5),
}
"""Where the replays are taken: spans vLLM's step overheads as reported (sub-millisecond
with CUDA graphs and async scheduling, a few ms without) and per-request bookkeeping."""
MAX_FRONTEND_LATENCY_S = 0.05
MISSING_LOG_ERROR = math.log(10.0)
"""A figure the replay could not produce (no finished request) counts as 10x off."""
FAMILIES = recorded.METRICS


@dataclass(frozen=True, slots=True)
class Figure:
    """One compared figure: a run's stage statistic, e.g. stage 1's `ttft_p90`."""

    run: str
    model: str
    stage: int
    metric: str
    measured: float

    @property
    def family(self) -> str:
        return self.metric.split("_", 1)[0]


@dataclass(frozen=True, slots=True)
class Terms:
    step_overhead_s: float
    per_sequence_overhead_s: float
    frontend_latency_s: float

    def applied_to(self, base: MeasuredCoefficients) -> MeasuredCoefficients:
        return dataclasses.replace(base, **dataclasses.asdict(self))


@dataclass(frozen=True, slots=True)
class Surface:
    """Each figure's simulated value at each grid point (frontend latency 0)."""

    figures: tuple[Figure, ...]
    axes: tuple[tuple[float, ...], tuple[float, ...]]
    values: np.ndarray
    """shape (len(axes[0]), len(axes[1]), len(figures)); NaN where the replay had none."""



# ---- replays ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Replay:
    """What one worker needs to replay one run (picklable: configs are rebuilt there)."""

    root: str
    run_path: str
    given: tuple[tuple[str, Any], ...]
    max_requests_per_stage: int | None


@lru_cache(maxsize=64)
def _config(replay: Replay) -> tuple[recorded.RecordedRun, SimConfig]:
    run = recorded.read_run(Path(replay.run_path))
    options = recorded.run_options(run, Path(replay.root), dict(replay.given))
    config = recorded.first_per_stage(resolve(options), replay.max_requests_per_stage)
    if config.measured is None:
        raise ValueError("fitting engine terms needs the measured cost model (--cost-model "
                         "measured)")
    return run, config


def replay_run(replay: Replay, terms: Terms) -> dict[str, Any]:
    """The run replayed with `terms`, compared (`sim.recorded.compare_run`: its figures'
    `rows` and the `overload` verdicts)."""
    from sim.api import simulate

    run, config = _config(replay)
    config = dataclasses.replace(config, measured=terms.applied_to(config.measured))
    results = simulate(config)
    return recorded.compare_run(run, config, results.request_rows())


def _replay_task(task: tuple[Replay, Terms]) -> dict[str, Any]:
    return replay_run(*task)


def run_all(tasks: list[tuple[Replay, Terms]], jobs: int) -> list[dict[str, Any]]:
    """Replays in task order, over `jobs` processes (results do not depend on `jobs`)."""
    if jobs <= 1 or len(tasks) <= 1:
        return [_replay_task(task) for task in tasks]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_replay_task, tasks, chunksize=1))


def design_surface(replays: list[Replay], models: dict[str, str],
                   grid: dict[str, tuple[float, ...]], jobs: int) -> Surface:
    """Replay `replays` at every grid point; `models` maps run names to their model."""
    axes = tuple(tuple(grid[name]) for name in DYNAMIC_TERMS)
    points = [(a, b) for a in axes[0] for b in axes[1]]
    tasks = [(replay, Terms(a, b, 0.0)) for a, b in points for replay in replays]
    rows = [compared["rows"] for compared in run_all(tasks, jobs)]
    first = [row for replay_rows in rows[:len(replays)] for row in replay_rows]
    figures = tuple(Figure(r["run"], models[r["run"]], r["stage"], r["metric"], r["measured"])
                    for r in first)
    index = {(f.run, f.stage, f.metric): k for k, f in enumerate(figures)}
    values = np.full((len(axes[0]), len(axes[1]), len(figures)), np.nan)
    for task_index, replay_rows in enumerate(rows):
        a, b = points[task_index // len(replays)]
        i, j = axes[0].index(a), axes[1].index(b)
        for row in replay_rows:
            k = index.get((row["run"], row["stage"], row["metric"]))
            if k is not None and row["simulated"] is not None:
                values[i, j, k] = row["simulated"]
    return Surface(figures, axes, values)


# ---- the fit ---------------------------------------------------------------------------------

def with_latency(figures: Iterable[Figure], simulated: np.ndarray,
                 frontend_latency_s: float) -> np.ndarray:
    """Simulated figures plus the frontend latency where it shows (TTFT and E2E)."""
    shift = np.array([0.0 if f.family == "itl" else frontend_latency_s for f in figures])
    return simulated + shift


def loss(figures: tuple[Figure, ...], simulated: np.ndarray) -> float:
    measured = np.array([f.measured for f in figures])
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.abs(np.log(simulated / measured))
    errors = np.where(np.isfinite(errors), errors, MISSING_LOG_ERROR)
    total = 0.0
    for family in FAMILIES:
        mask = np.array([f.family == family for f in figures])
        if mask.any():
            total += float(np.median(errors[mask]))
    return total


def fit_terms(surface: Surface, keep: np.ndarray) -> Terms:
    """The terms minimising `loss` over the figures where `keep` is true."""
    figures = tuple(f for f, k in zip(surface.figures, keep) if k)
    values = surface.values[:, :, keep]
    grid = RegularGridInterpolator(surface.axes, values)
    lows = [axis[0] for axis in surface.axes] + [0.0]
    highs = [axis[-1] for axis in surface.axes] + [MAX_FRONTEND_LATENCY_S]
    scale = np.array([highs[0] or 1.0, highs[1] or 1.0, MAX_FRONTEND_LATENCY_S])

    def objective(x: np.ndarray) -> float:
        point = np.clip(x * scale, lows, highs)
        simulated = grid([point[:2]])[0]
        return loss(figures, with_latency(figures, simulated, point[2]))

    # The loss is a sum of medians: piecewise smooth, with flats a local search stalls on,
    # so a seeded global search over the box, then a local polish.
    found = differential_evolution(objective, [(lo / sc, hi / sc) for lo, hi, sc in
                                               zip(lows, highs, scale)],
                                   seed=0, tol=1e-8, polish=False)
    polished = minimize(objective, found.x, method="Nelder-Mead",
                        options={"xatol": 1e-5, "fatol": 1e-8, "maxiter": 2000})
    best = polished.x if polished.fun <= found.fun else found.x
    point = np.clip(best * scale, lows, highs)
    return Terms(*(float(v) for v in point))


# ---- the whole procedure ---------------------------------------------------------------------

def model_key(run: recorded.RecordedRun) -> str:
    """The model a run served, as the cross-validation groups runs."""
    return run.model_name.rsplit("/", 1)[-1].lower()


def fit_recorded(root: Path, given: dict[str, Any], *, grid: dict[str, tuple[float, ...]],
                 max_requests_per_stage: int | None, jobs: int) -> dict[str, Any]:
    """Fit the engine terms to every run under `root` and cross-validate leaving one model
    out; returns the fit record (`fit` in the coefficients file). `given`: replay options
    over each run's own (its measured coefficients are the ones the fitted terms replace)."""
    _config.cache_clear()  # runs are read afresh by each fit
    runs = [(path, recorded.read_run(path)) for path in recorded.find_runs(root)]
    given = dict(given, cost_model="measured")
    kept = [(path, run) for path, run in runs
            if not recorded.recorded_overloaded(run)["overloaded"]]
    if not kept:
        raise ValueError(f"--recorded {root}: every run is recorded as overloaded; nothing "
                         "to fit")
    models = {run.name: model_key(run) for _, run in runs}
    frozen = tuple(sorted(given.items()))
    design = [Replay(str(root), str(path), frozen, max_requests_per_stage) for path, _ in kept]
    surface = design_surface(design, models, grid, jobs)
    everything = np.ones(len(surface.figures), dtype=bool)
    fitted = fit_terms(surface, everything)

    full = {run.name: Replay(str(root), str(path), frozen, None) for path, run in runs}
    folds = sorted({models[run.name] for _, run in kept})
    fold_terms = {model: fit_terms(surface, np.array([f.model != model for f in surface.figures]))
                  for model in folds} if len(folds) > 1 else {}
    tasks = [(full[run.name], fitted) for _, run in runs]
    tasks += [(full[run.name], fold_terms[models[run.name]]) for _, run in kept
              if models[run.name] in fold_terms]
    replayed = run_all(tasks, jobs)
    final, held_out = replayed[:len(runs)], replayed[len(runs):]

    excluded = [run.name for _, run in runs if all(run is not r for _, r in kept)]
    final_rows = [row for compared in final for row in compared["rows"]
                  if row["run"] not in excluded]
    verdicts = {run.name: compared["overload"] for (_, run), compared in zip(runs, final)}
    record: dict[str, Any] = {
        "terms": dataclasses.asdict(fitted),
        "loss": "sum over ttft, e2e, itl of the median |log(simulated / measured)| over their "
                "figures (stage mean, p90, p99 of every run not recorded as overloaded)",
        "design": {"grid": {k: list(v) for k, v in grid.items()},
                   "max_requests_per_stage": max_requests_per_stage,
                   "replays": len(design) * math.prod(len(v) for v in grid.values())},
        "runs": [run.name for _, run in runs],
        "excluded_runs": excluded,
        "replay_flags": dict(given),
        "median_abs_rel_error": recorded.median_errors(final_rows),
        "per_model": {model: recorded.median_errors(
            [row for row in final_rows if models[row["run"]] == model]) for model in folds},
        "overload": {name: {"recorded": v["recorded"]["overloaded"],
                            "simulated": v["simulated"]["overloaded"]}
                     for name, v in verdicts.items()},
        "overload_agreement": sum(v["agree"] for v in verdicts.values()),
    }
    if fold_terms:
        held_rows: dict[str, list[dict[str, Any]]] = {model: [] for model in folds}
        for compared in held_out:
            for row in compared["rows"]:
                held_rows[models[row["run"]]].append(row)
        record["leave_one_model_out"] = {
            "folds": {model: {"terms": dataclasses.asdict(fold_terms[model]),
                              "held_out_median_abs_rel_error":
                                  recorded.median_errors(held_rows[model])}
                      for model in folds},
            "median_abs_rel_error": recorded.median_errors(
                [row for rows in held_rows.values() for row in rows]),
        }
    return record
