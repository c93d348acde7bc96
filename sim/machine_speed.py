"""Replaying a real run's measured machine speed in the simulator (`--speed-trace`).

A validation asks whether the cost model prices each step right. On a shared machine the
real run's steps also carry the machine's speed state, which switches for about a second at
a time (1.75x apart on the 2-core development VM, in thread CPU time too). No cost model can
predict that, so it decides most of a repeat's error: the same 80 requests ran with busy
shares of 0.49 and 0.70. The real run therefore reads a speed meter before every step
(`backend.speed`: a dispatch probe and a compute probe), and the simulator can replay those
readings, as it replays a run's measured speculative acceptance. What is left is the model's
own error.

A slow state slows per-step overheads (Python, op dispatch) and arithmetic differently, so a
step's price is split: its overhead terms (`IterationCost.overhead_s`) are scaled by the
dispatch probe's factor, the rest (the roofline's compute and memory terms) by the compute
probe's. With the dispatch factor alone, prefills came out 13-32% cheap in TTFT P50.

Both sides are put on one scale, the reference probe times (the profiles' medians): the
profile a calibration is fitted to is first normalized (`fit_at_reference_speed`: every
timed step divided by its own share-weighted factor), so the coefficients price steps at
reference speed, and the run's factors are its probe times over the same references.

Speed trace CSV: a header `time_s,dispatch_probe_s,compute_probe_s,overhead_factor,
roofline_factor`, then one reading per row in time order; each factor holds from its
reading until the next (the first reading's also before it); the probe times are kept as
measured. A trace with a single `factor` column scales whole steps by it.
"""

from __future__ import annotations

import bisect
import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple

from policies.types import Plan, StepResult
from sim.cost.catalog import get_hardware, get_model
from sim.cost.roofline import CostModel

if TYPE_CHECKING:  # fitting (below) is for `servesim validate`; a replay never fits
    from sim.cost.calibrate import FitResult

COLUMNS = ("time_s", "dispatch_probe_s", "compute_probe_s", "overhead_factor",
           "roofline_factor")
REFITS = 2
"""Fits after the first (normalized by the dispatch factor alone): each takes the overhead
shares from the last. The shares settle by the second."""


@dataclass(frozen=True, slots=True)
class SpeedTrace:
    """Price multipliers over run time: from `times_s[i]` on, a step's overhead terms cost
    `overhead_factors[i]` times their price and the rest `roofline_factors[i]` times."""

    times_s: tuple[float, ...]
    overhead_factors: tuple[float, ...]
    roofline_factors: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.times_s or not (len(self.times_s) == len(self.overhead_factors)
                                    == len(self.roofline_factors)):
            raise ValueError("a speed trace needs factors for every reading, and some readings")
        if any(b < a for a, b in zip(self.times_s, self.times_s[1:])):
            raise ValueError("speed trace readings must be in time order")
        if not all(math.isfinite(f) and f > 0
                   for f in self.overhead_factors + self.roofline_factors):
            raise ValueError("speed trace factors must be finite and > 0")

    def factors_at(self, time_s: float) -> tuple[float, float]:
        """(overhead, roofline) factors of the last reading at or before `time_s` (the first
        reading's before any)."""
        index = max(0, bisect.bisect_right(self.times_s, time_s) - 1)
        return self.overhead_factors[index], self.roofline_factors[index]


class Reference(NamedTuple):
    """The probe times that mean factor 1."""

    dispatch_s: float
    compute_s: float


def speed_trace(readings: Iterable[tuple[float, float, float]],
                reference: Reference) -> list[tuple]:
    """Rows (COLUMNS) of a meter's (time, dispatch probe, compute probe) readings: each
    probe time over its reference. (Neither a running median over 5 or 9 readings nor an
    elasticity below 1 fitted within profile points did better on the development VM's runs.)"""
    if not (reference.dispatch_s > 0 and reference.compute_s > 0):
        raise ValueError(f"reference probe times must be > 0, got {reference}")
    return [(t, d, c, d / reference.dispatch_s, c / reference.compute_s)
            for t, d, c in readings]


def write_speed_trace(path: str | Path, rows: list[tuple]) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def read_speed_trace(path: str | Path) -> SpeedTrace:
    """Read a speed trace CSV; errors name the file and row."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ValueError(f"speed trace not found: {path}") from None
    header = set(rows[0]) if rows else set()
    split = {"overhead_factor", "roofline_factor"} <= header
    if "time_s" not in header or not (split or "factor" in header):
        raise ValueError(f"{path}: a speed trace needs a header with time_s and factor (or "
                         f"overhead_factor and roofline_factor), and rows")
    names = ("overhead_factor", "roofline_factor") if split else ("factor", "factor")
    times, overheads, rooflines = [], [], []
    for line, row in enumerate(rows, start=2):
        try:
            times.append(float(row["time_s"]))
            overheads.append(float(row[names[0]]))
            rooflines.append(float(row[names[1]]))
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{line}: times and factors must be numbers") from None
    try:
        return SpeedTrace(tuple(times), tuple(overheads), tuple(rooflines))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class SpeedScaledExecutor:
    """Prices each plan with `inner` and scales it by the trace's factors at `now()`, the
    step's start, weighted by the overhead share of the plan's price under `cost`. It offers
    no decode fast-forward: a run of steps would cross readings."""

    def __init__(self, inner, trace: SpeedTrace, now: Callable[[], float],
                 cost: CostModel) -> None:
        self.inner = inner
        self.trace = trace
        self.now = now
        self.cost = cost

    def execute(self, plan: Plan) -> StepResult:
        result = self.inner.execute(plan)
        breakdown = self.cost.plan_cost(plan)
        share = breakdown.overhead_s / breakdown.time_s if breakdown.time_s > 0 else 0.0
        factor = _blend(share, *self.trace.factors_at(self.now()))
        return StepResult(result.duration_s * factor, result.accepted_tokens,
                          result.draft_s * factor)


def _blend(overhead_share: float, overhead_factor: float, roofline_factor: float) -> float:
    """The share-weighted factor; exactly the factor when both are equal."""
    return roofline_factor + overhead_share * (overhead_factor - roofline_factor)


# ---- profiles -------------------------------------------------------------------------------
def reference_of(profiles: Iterable[dict]) -> Reference:
    """The median dispatch and compute probe times over every timed step of `profiles`."""
    dispatch, compute = [], []
    for profile in profiles:
        for sample in profile["samples"]:
            d, c = _step_speeds(sample)
            dispatch += d
            compute += c
    return Reference(statistics.median(dispatch), statistics.median(compute))


def speed_normalized(profile: dict, reference: Reference,
                     overhead_share: Callable[[dict], float]) -> dict:
    """A copy of profile JSON whose `measured_s` are at reference speed: each timed step
    divided by its factor (the probes' factors blended by `overhead_share(sample)`), then the
    trimmed mean again (`raw_measured_s` keeps the original)."""
    from sim.cost.profiles import trimmed_mean_s

    samples = []
    for sample in profile["samples"]:
        share = overhead_share(sample)
        scaled = [t / _blend(share, d / reference.dispatch_s, c / reference.compute_s)
                  for t, d, c in zip(sample["steps_s"], *_step_speeds(sample))]
        samples.append(sample | {"measured_s": trimmed_mean_s(scaled),
                                 "raw_measured_s": sample["measured_s"]})
    machine = dict(profile.get("machine", {}), speed_reference_s=list(reference))
    return profile | {"samples": samples, "machine": machine}


def fit_at_reference_speed(named_profiles: list[tuple[str, dict]], reference: Reference
                           ) -> tuple[FitResult, list[dict]]:
    """Fit the roofline to `named_profiles` (source name, profile JSON) at reference speed;
    returns the fit and the normalized profiles. A step's overhead share comes from the
    previous fit (the first normalizes by the dispatch factor alone), `REFITS` times."""
    from sim.cost.calibrate import fit
    from sim.cost.profiles import profile_from_json

    def fit_with(share_of: Callable[[dict], float]) -> tuple[FitResult, list[dict]]:
        normalized = [speed_normalized(profile, reference, share_of)
                      for _, profile in named_profiles]
        samples = [s for (name, _), profile in zip(named_profiles, normalized)
                   for s in profile_from_json(profile, name).timing_samples(name)]
        return fit(samples), normalized

    result, normalized = fit_with(lambda sample: 1.0)
    for _ in range(REFITS):
        result, normalized = fit_with(_overhead_shares(named_profiles[0][1], result))
    return result, normalized


def _overhead_shares(profile: dict, result: FitResult) -> Callable[[dict], float]:
    cost = CostModel(get_model(profile["model"]), get_hardware(profile["hardware"]),
                     result.coefficients, tp=profile["tp"])

    def share(sample: dict) -> float:
        breakdown = cost.breakdown(list(sample["new_tokens"]), list(sample["context_tokens"]))
        return breakdown.overhead_s / breakdown.time_s if breakdown.time_s > 0 else 0.0

    return share


def _step_speeds(sample: dict) -> tuple[list[float], list[float]]:
    dispatch = sample.get("steps_speed_s")
    compute = sample.get("steps_compute_speed_s")
    steps = len(sample.get("steps_s", ()))
    if not dispatch or not compute or not len(dispatch) == len(compute) == steps:
        raise ValueError("this profile has no speed meter readings (steps_speed_s and "
                         "steps_compute_speed_s): profile again with this servesim")
    return dispatch, compute
