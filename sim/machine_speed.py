"""Replaying a real run's measured machine speed in the simulator (`--speed-trace`).

A validation asks whether the cost model prices each step right. On a shared machine the
real run's steps also carry the machine's speed state, which switches for about a second at
a time (1.75x apart on the 2-core development VM, in thread CPU time too). No cost model can
predict that, so it decides most of a repeat's error: the same 80 requests ran with busy
shares of 0.49 and 0.70. The real run therefore reads a speed meter every few dozen
milliseconds (`backend.speed`), and the simulator can replay those readings, as it replays a
run's measured speculative acceptance: each step's price is scaled by the machine's speed
factor when the step starts. What is left is the model's own error.

Both sides are put on one scale, the reference probe time: the profile a calibration is fitted
to is first normalized (`speed_normalized`: every timed step scaled by reference / its probe
time), so the coefficients price steps at reference speed, and the run's factors are its
probe times over the same reference.

Speed trace CSV: a header `time_s,probe_s,factor`, then one reading per row in time order;
`time_s` is the run's time of the reading, `factor` the price multiplier from then until the
next reading (the first reading's also before it); `probe_s` is kept as measured.
"""

from __future__ import annotations

import bisect
import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from policies.types import Plan, StepResult
from sim.cost.profiles import trimmed_mean_s

COLUMNS = ("time_s", "probe_s", "factor")


@dataclass(frozen=True, slots=True)
class SpeedTrace:
    """Price multipliers over run time: `factors[i]` holds from `times_s[i]` on."""

    times_s: tuple[float, ...]
    factors: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.factors):
            raise ValueError("a speed trace needs one factor per reading, and some readings")
        if any(b < a for a, b in zip(self.times_s, self.times_s[1:])):
            raise ValueError("speed trace readings must be in time order")
        if not all(math.isfinite(f) and f > 0 for f in self.factors):
            raise ValueError("speed trace factors must be finite and > 0")

    def factor_at(self, time_s: float) -> float:
        """The factor of the last reading at or before `time_s` (the first before any)."""
        return self.factors[max(0, bisect.bisect_right(self.times_s, time_s) - 1)]


def speed_trace(readings: Iterable[tuple[float, float]], reference_s: float) -> list[tuple]:
    """(time_s, probe_s, factor) rows of a meter's (time, probe seconds) readings: each
    reading's own probe time over the reference. (Neither a running median over the last 5
    or 9 readings nor an elasticity below 1, fitted within profile points, gave smaller
    validation errors on the development VM's runs; the plain ratio did best.)"""
    if not reference_s > 0:
        raise ValueError(f"the reference probe time must be > 0, got {reference_s}")
    return [(t, p, p / reference_s) for t, p in readings]


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
    if not rows or not {"time_s", "factor"} <= set(rows[0]):
        raise ValueError(f"{path}: a speed trace needs a header with time_s and factor, and rows")
    times, factors = [], []
    for line, row in enumerate(rows, start=2):
        try:
            times.append(float(row["time_s"]))
            factors.append(float(row["factor"]))
        except (TypeError, ValueError):
            raise ValueError(f"{path}:{line}: time_s and factor must be numbers") from None
    try:
        return SpeedTrace(tuple(times), tuple(factors))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class SpeedScaledExecutor:
    """Prices each plan with `inner` and scales it by the trace's factor at `now()`, the
    step's start. It offers no decode fast-forward: a run of steps would cross readings."""

    def __init__(self, inner, trace: SpeedTrace, now: Callable[[], float]) -> None:
        self.inner = inner
        self.trace = trace
        self.now = now

    def execute(self, plan: Plan) -> StepResult:
        result = self.inner.execute(plan)
        factor = self.trace.factor_at(self.now())
        return StepResult(result.duration_s * factor, result.accepted_tokens,
                          result.draft_s * factor)


# ---- profiles -------------------------------------------------------------------------------
def reference_probe_s(profiles: Iterable[dict]) -> float:
    """The median probe time over every timed step of `profiles` (profile JSON dicts)."""
    speeds = [s for profile in profiles for sample in profile["samples"]
              for s in _step_speeds(sample)]
    return statistics.median(speeds)


def speed_normalized(profile: dict, reference_s: float) -> dict:
    """A copy of profile JSON whose `measured_s` are at reference speed: each timed step times
    reference_s / its probe time, then the trimmed mean again (`raw_measured_s` keeps the
    original)."""
    samples = []
    for sample in profile["samples"]:
        scaled = [t * reference_s / s for t, s in zip(sample["steps_s"], _step_speeds(sample))]
        samples.append(sample | {"measured_s": trimmed_mean_s(scaled),
                                 "raw_measured_s": sample["measured_s"]})
    machine = dict(profile.get("machine", {}), speed_reference_s=reference_s)
    return profile | {"samples": samples, "machine": machine}


def _step_speeds(sample: dict) -> list[float]:
    speeds = sample.get("steps_speed_s")
    if not speeds or len(speeds) != len(sample.get("steps_s", ())):
        raise ValueError("this profile has no speed meter readings (steps_speed_s): profile "
                         "again with this servesim")
    return speeds
