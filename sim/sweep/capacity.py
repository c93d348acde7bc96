"""`servesim capacity`: the highest request rate whose SLOs hold, by bisection on `rate_scale`.

Each probe replays the trace at `rate_scale` once per seed (`seeds` runs, seeds `seed`,
`seed+1`, ...; a synthetic or `--arrivals` trace draws new arrivals per seed). A probe meets the
SLOs when every request finishes and every SLO metric's mean over the seeds is at most its
bound. Stopping is noise-aware: when a metric's mean lies within `z` standard errors of its
bound, more bisection would only chase the seeds' noise, so the search stops there; otherwise
it stops when the bracket is narrower than `rel_tol`.

Two shortcuts keep a hopeless or deterministic search short. When the seed changes nothing (a
fixed trace file: the first probe's first two seeds give the same summary) each probe runs once.
When the rate falls so low that halving it again leaves every SLO metric unchanged (requests no
longer wait for each other), no lower rate can meet the SLOs and the search says so, as it does
below `MIN_RATE_SCALE_FACTOR` of the starting scale.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from sim.config import ReplayOptions, load_workload

SummaryFn = Callable[[ReplayOptions], dict[str, Any]]

MIN_RATE_SCALE_FACTOR = 1e-6
"""The downward search gives up below this fraction of the starting rate scale."""
SAME_LATENCY_REL_TOL = 1e-9
"""Metrics this close at two rates are the same: the rate no longer matters."""


@dataclass(frozen=True, slots=True)
class Probe:
    rate_scale: float
    means: dict[str, float]
    """Each SLO metric's mean over the seeds."""
    stderrs: dict[str, float]
    meets: bool
    within_noise: bool
    """Some metric's mean lies within z standard errors of its bound."""


@dataclass(slots=True)
class Capacity:
    rate_scale: float
    """The highest probed scale that met the SLOs (or, stopped for noise, the probe that
    could not be told apart from the bound)."""
    rate_req_s: float
    """`rate_scale` times the unscaled trace's mean arrival rate (first seed)."""
    stopped: str
    """`tolerance`, `noise` or `max_probes`."""
    probes: list[Probe] = field(default_factory=list)
    seeds_per_probe: int = 1
    """Runs per probe: `seeds`, or 1 when the seed changed nothing in the first probe."""


def parse_slo(text: str) -> dict[str, float]:
    """`ttft_p99=2,tpot_p99=0.1` -> {"ttft_p99_s": 2.0, "tpot_p99_s": 0.1} (seconds)."""
    slo: dict[str, float] = {}
    for item in text.split(","):
        name, equals, value = item.partition("=")
        name = name.strip()
        try:
            bound = float(value)
        except ValueError:
            bound = math.nan
        if not equals or not name or not bound > 0 or not math.isfinite(bound):
            raise ValueError(f"--slo takes METRIC=SECONDS,... such as ttft_p99=2,tpot_p99=0.1; "
                             f"bad item {item!r}")
        slo[name if name.endswith("_s") else f"{name}_s"] = bound
    return slo


def default_summary(options: ReplayOptions) -> dict[str, Any]:
    from sim.api import simulate
    from sim.config import resolve

    return simulate(resolve(options)).summary


def find_capacity(
    options: ReplayOptions, slo: dict[str, float], *, seeds: int = 3, rel_tol: float = 0.02,
    z: float = 2.0, max_probes: int = 40, summary_fn: SummaryFn = default_summary,
) -> Capacity:
    if seeds < 1 or not 0 < rel_tol < 1 or z < 0 or max_probes < 2:
        raise ValueError("capacity search needs --seeds >= 1, 0 < --rel-tol < 1, --z >= 0")
    if options.executor != "sim":
        raise ValueError("capacity search runs the simulator; it needs --executor sim")
    if options.pace != "trace":
        raise ValueError("capacity search scales arrival times; it needs --pace trace")
    base_rate = mean_rate(options)
    probes: list[Probe] = []
    seeds_per_probe = seeds

    def run(scale: float, i: int) -> dict[str, Any]:
        return summary_fn(options.updated({"rate_scale": scale, "seed": options.seed + i}))

    def probe(scale: float) -> Probe:
        nonlocal seeds_per_probe
        if len(probes) >= max_probes:
            raise _OutOfProbes
        runs = [run(scale, i) for i in range(min(seeds_per_probe, 2))]
        if not probes and len(runs) == 2 and runs[0] == runs[1]:
            seeds_per_probe, runs = 1, runs[:1]  # the seed changes nothing: one run will do
        runs += [run(scale, i) for i in range(len(runs), seeds_per_probe)]
        result = _judge(scale, runs, slo, z)
        probes.append(result)
        return result

    def done(scale: float, stopped: str) -> Capacity:
        return Capacity(scale, scale * base_rate, stopped, probes, seeds_per_probe)

    scale = options.rate_scale
    floor = scale * MIN_RATE_SCALE_FACTOR
    try:
        first = probe(scale)
        if first.within_noise:
            return done(scale, "noise")
        low, high = (scale, None) if first.meets else (None, scale)
        while low is None or high is None:
            if high is not None and scale / 2 < floor:
                raise ValueError(f"no rate meets the SLOs: the search stopped at rate_scale "
                                 f"{scale:g}, {MIN_RATE_SCALE_FACTOR:g} of the start")
            scale = scale * 2 if high is None else scale / 2
            result = probe(scale)
            if result.within_noise:
                return done(scale, "noise")
            if result.meets:
                low = scale
            else:
                high = scale
                _stop_if_rate_no_longer_matters(probes, slo)
        while high - low > rel_tol * low:
            middle = (low + high) / 2
            result = probe(middle)
            if result.within_noise:
                return done(middle, "noise")
            low, high = (middle, high) if result.meets else (low, middle)
        return done(low, "tolerance")
    except _OutOfProbes:
        met = [p.rate_scale for p in probes if p.meets]
        if not met:
            raise ValueError(f"no probed rate_scale (down to {min(p.rate_scale for p in probes):g})"
                             " meets the SLOs") from None
        return done(max(met), "max_probes")


class _OutOfProbes(Exception):
    pass


def _stop_if_rate_no_longer_matters(probes: list[Probe], slo: dict[str, float]) -> None:
    """ValueError when the last two failing probes (a rate and its half) have the same SLO
    metrics: the requests no longer wait for each other, so no lower rate does better."""
    before, last = probes[-2], probes[-1]
    if before.meets or not before.rate_scale == 2 * last.rate_scale:
        return
    same = all(math.isclose(before.means[n], last.means[n], rel_tol=SAME_LATENCY_REL_TOL,
                            abs_tol=1e-12) for n in slo)
    if not same:
        return
    missed = [f"{n} {last.means[n]:.4g} s > {bound:g} s" for n, bound in slo.items()
              if last.means[n] > bound]
    why = ", ".join(missed) if missed else "some requests never finish"
    raise ValueError(f"no rate meets the SLOs: at rate_scale {before.rate_scale:g} and "
                     f"{last.rate_scale:g} the requests no longer wait for each other and the "
                     f"metrics are the same ({why}); a request alone misses them")


def _judge(scale: float, runs: list[dict[str, Any]], slo: dict[str, float], z: float) -> Probe:
    means, stderrs = {}, {}
    for name in slo:
        if name not in runs[0]:
            known = ", ".join(k for k in runs[0] if k.endswith("_s"))
            raise ValueError(f"unknown SLO metric {name!r}; known: {known}")
        values = [run[name] for run in runs]
        if any(v is None for v in values):
            raise ValueError(f"SLO metric {name!r} has no value at rate_scale {scale:g} "
                             "(no request produced it)")
        means[name] = statistics.fmean(values)
        stderrs[name] = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    all_finished = all(run["requests_unfinished"] == 0 for run in runs)
    meets = all_finished and all(means[name] <= bound for name, bound in slo.items())
    within_noise = all_finished and any(
        abs(means[name] - bound) < z * stderrs[name] for name, bound in slo.items())
    return Probe(scale, means, stderrs, meets, within_noise)


def mean_rate(options: ReplayOptions) -> float:
    """The unscaled trace's mean arrival rate, requests/s: what `rate_scale` multiplies."""
    trace = load_workload(options.updated({"rate_scale": 1.0}))
    if trace.closed_loop:
        raise ValueError("capacity search scales a trace's arrival rate; the closed-loop trace "
                         f"{trace.name!r} (inference-perf concurrent stages) has none: replay "
                         "configs with different concurrency_level stages instead")
    arrivals = [r.arrival_time_s for r in trace.requests]
    if len(arrivals) < 2 or max(arrivals) <= min(arrivals):
        raise ValueError("capacity search needs a trace with at least two distinct arrival times")
    return (len(arrivals) - 1) / (max(arrivals) - min(arrivals))
