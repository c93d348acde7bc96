"""The plan's search: per family (hardware x TP x scheduler knobs x colocated or P:D), the
fewest replicas that meet every SLO at the target load with every request finished.

Replica counts are searched, not enumerated: one replica's capacity (the highest rate scale it
meets, `sim.sweep.capacity.find_capacity`) gives an estimate `ceil(target / capacity)`; that
many replicas are then simulated behind the router at the target load, and the count moves
from there (steps of 1, 2, 4, ... then bisection, so a close estimate costs two or three runs)
to the fewest that pass. The probe of one replica fewer is kept: it is the evidence that the
answer is minimal. A P:D split starts from the colocated estimate and grows the pool the failing metrics point at (TTFT and queueing: prefill; the rest:
decode), then shrinks either pool while it still passes.

`search_family` runs one family in-process; `run_family` is its worker form (plain data in and
out, never raising) for `sim.sweep.backends.run_cells`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from sim.config import ReplayOptions
from sim.cost.specs import ModelSpec
from sim.metrics import LATENCY_METRICS, STATS
from sim.sweep.capacity import SummaryFn, default_summary, find_capacity

TP_DEGREES = (1, 2, 4, 8)
"""Tensor-parallel degrees tried: one node's worth, powers of two."""
TOKEN_BUDGETS = (2048, 8192)
"""Chunked scheduler budgets tried (vLLM's default and a prefill-friendly one)."""
MAX_NUM_SEQS = (128, 256)
CAPACITY_REL_TOL = 0.05
"""Bisection tolerance of the one-replica capacity (an estimate: verification decides)."""
HEADROOM_REL_TOL = 0.05
CAPACITY_MAX_PROBES = 14
PREFILL_METRICS = ("ttft", "queue")
"""Metrics a P:D split fixes with more prefill replicas; the others need more decode ones."""
SLO_METRICS = tuple(f"{m}_{s}_s" for m in LATENCY_METRICS for s in STATS)


@dataclass(frozen=True, slots=True)
class Family:
    """One configuration of the plan's grid, its replica count aside."""

    hardware: str
    tp: int
    scheduler: str
    token_budget: int | None
    """The chunked scheduler's budget; None for the others (they keep the base options')."""
    max_num_seqs: int
    disaggregated: bool

    def knobs(self) -> dict[str, Any]:
        values = {"hardware": self.hardware, "tp": self.tp, "scheduler": self.scheduler,
                  "max_num_seqs": self.max_num_seqs}
        if self.token_budget is not None:
            values["token_budget"] = self.token_budget
        return values


@dataclass(frozen=True, slots=True)
class Target:
    slo: dict[str, float]
    """Summary key -> bound in seconds, e.g. {"ttft_p99_s": 2.0}."""
    rate_scale: float
    max_gpus: int
    num_invalid_rows: int
    """Trace rows rejected at load whatever the configuration: not counted as dropped."""


@dataclass(slots=True)
class Probe:
    """One simulation at the target load: a replica count (or P:D split) and its verdict."""

    replicas: int
    disaggregate: str | None
    meets: bool
    misses: str
    """Why it fails ('' when it meets): dropped requests and each SLO metric over its bound."""


@dataclass(slots=True)
class Candidate:
    family: Family
    feasible: bool
    reason: str = ""
    """Why no replica count of this family meets the target ('' when one does)."""
    replicas: int = 0
    disaggregate: str | None = None
    num_gpus: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    """The chosen configuration as replay options (non-default values only)."""
    summary: dict[str, Any] | None = None
    """The chosen configuration's summary at the target load."""
    one_replica_rate_scale: float | None = None
    headroom_rate_scale: float | None = None
    """The highest rate scale the chosen configuration still meets (bisection)."""
    probes: list[Probe] = field(default_factory=list)
    fewer: list[Probe] = field(default_factory=list)
    """The configurations with one replica fewer, each failing: the proof of minimality."""
    num_simulations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        values = dict(data)
        values["family"] = Family(**values["family"])
        values["probes"] = [Probe(**p) for p in values["probes"]]
        values["fewer"] = [Probe(**p) for p in values["fewer"]]
        return cls(**values)


def check_slo(slo: dict[str, float]) -> None:
    unknown = [name for name in slo if name not in SLO_METRICS]
    if unknown:
        raise ValueError(f"unknown SLO metric {unknown[0].removesuffix('_s')!r}; known: "
                         f"{', '.join(m.removesuffix('_s') for m in SLO_METRICS)}")


def tp_degrees(model: ModelSpec, max_gpus: int) -> list[int]:
    """TP degrees whose split the model allows: the query heads divide evenly, and the KV heads
    either divide evenly or are replicated whole (tp a multiple of them)."""
    return [tp for tp in TP_DEGREES if tp <= max_gpus and model.num_heads % tp == 0
            and (model.num_kv_heads % tp == 0 or tp % model.num_kv_heads == 0)]


def families(hardware: list[str], tps: list[int], scheduler: str, budgets: list[int],
             seqs: list[int], disaggregate: bool) -> list[Family]:
    """The grid in a fixed order; budgets apply to the chunked scheduler only."""
    budget_values: list[int | None] = list(budgets) if scheduler == "chunked" else [None]
    modes = (False, True) if disaggregate else (False,)
    return [Family(h, tp, scheduler, budget, num_seqs, disaggregated)
            for h in hardware for tp in tps for budget in budget_values for num_seqs in seqs
            for disaggregated in modes]


def misses(summary: dict[str, Any], target: Target) -> dict[str, str]:
    """Failing metric -> why ('requests' for dropped ones); empty when the run meets all."""
    out = {}
    total = summary["requests_total"]
    dropped = total - target.num_invalid_rows - summary["requests_finished"]
    if dropped > 0:
        # rejections (a request past max_model_len or any KV pool) are told apart: more GPUs
        # rarely cure them
        rejected = summary["requests_rejected"] - target.num_invalid_rows
        out["requests"] = "; ".join(
            f"{count} of {total} requests {what}"
            for count, what in ((rejected, "rejected"), (dropped - rejected, "not finished"))
            if count > 0)
    for name, bound in target.slo.items():
        value = summary[name]
        if value is None:
            out[name] = f"{name} has no value"
        elif value > bound:
            out[name] = f"{name} {value:.4g} > {bound:g}"
    return out


class _Infeasible(Exception):
    pass


class _Search:
    """One family's simulations at the target load, cached by replica layout."""

    def __init__(self, base: ReplayOptions, family: Family, target: Target,
                 summary_fn: SummaryFn) -> None:
        self.family, self.target = family, target
        self.options = base.updated(family.knobs() | {"rate_scale": target.rate_scale})
        self.summary_fn = summary_fn
        self.num_simulations = 0
        self.runs: dict[tuple[int, str | None], tuple[Probe, dict[str, Any]]] = {}
        self.order: list[Probe] = []

    def simulate(self, options: ReplayOptions) -> dict[str, Any]:
        self.num_simulations += 1
        return self.summary_fn(options)

    def layout(self, replicas: int, disaggregate: str | None) -> ReplayOptions:
        return self.options.updated({"replicas": replicas, "disaggregate": disaggregate})

    def run(self, replicas: int, disaggregate: str | None = None) -> Probe:
        key = (replicas, disaggregate)
        if key not in self.runs:
            summary = self.simulate(self.layout(replicas, disaggregate))
            failing = misses(summary, self.target)
            probe = Probe(replicas, disaggregate, not failing, "; ".join(failing.values()))
            self.runs[key] = (probe, summary)
            self.order.append(probe)
        return self.runs[key][0]

    def max_replicas(self) -> int:
        return self.target.max_gpus // self.family.tp

    def one_replica_rate_scale(self) -> float:
        try:
            capacity = find_capacity(self.layout(1, None), self.target.slo, seeds=1,
                                     rel_tol=CAPACITY_REL_TOL, max_probes=CAPACITY_MAX_PROBES,
                                     summary_fn=self.simulate)
        except ValueError as exc:
            raise _Infeasible(f"one replica: {exc}") from None
        return capacity.rate_scale

    def colocated(self, estimate: int) -> int:
        """The fewest replicas that pass, searched from `estimate`."""
        limit = self.max_replicas()
        replicas = fewest_passing(lambda n: self.run(n).meets, min(max(1, estimate), limit),
                                  limit)
        if replicas is None:
            raise _Infeasible(f"{limit} replicas ({limit * self.family.tp} GPUs, --max-gpus) "
                              f"still miss: {self.run(limit).misses}")
        return replicas

    def split(self, start: tuple[int, int]) -> tuple[int, int]:
        """The smallest passing P:D split found by growing the bottleneck pool from `start`,
        then shrinking either pool while the split still passes."""
        prefill, decode = start
        while True:
            probe = self.run(1, f"{prefill}:{decode}")
            if probe.meets:
                break
            if prefill + decode + 1 > self.max_replicas():
                raise _Infeasible(f"P:D {prefill}:{decode} ({(prefill + decode) * self.family.tp}"
                                  f" GPUs, --max-gpus) still misses: {probe.misses}")
            if any(f"{m}_" in probe.misses for m in PREFILL_METRICS):
                prefill += 1
            else:
                decode += 1
        shrunk = True
        while shrunk:
            shrunk = False
            for p, d in ((prefill - 1, decode), (prefill, decode - 1)):
                if p >= 1 and d >= 1 and self.run(1, f"{p}:{d}").meets:
                    prefill, decode, shrunk = p, d, True
                    break
        return prefill, decode

    def headroom(self, options: ReplayOptions) -> float | None:
        try:
            return find_capacity(options, self.target.slo, seeds=1, rel_tol=HEADROOM_REL_TOL,
                                 max_probes=CAPACITY_MAX_PROBES,
                                 summary_fn=self.simulate).rate_scale
        except ValueError:  # met at the target by one seed, missed at every probe here
            return None


def fewest_passing(passes: Callable[[int], bool], start: int, limit: int) -> int | None:
    """The smallest n in [1, limit] with `passes(n)` (assumed monotone in n), or None.

    From `start`, steps of 1, 2, 4, ... in the direction the first probe points, then
    bisection: a good estimate costs two or three probes, a bad one logarithmically many. The
    answer's n - 1 has always been probed and failed (0 fails by definition), so the caller
    holds the proof of minimality.
    """
    step = 1
    if passes(start):
        low, high = 0, start
        while high > 1:
            probe = max(high - step, 1)
            if not passes(probe):
                low = probe
                break
            high, step = probe, step * 2
    else:
        low = start
        while True:
            if low == limit:
                return None
            probe = min(low + step, limit)
            if passes(probe):
                high = probe
                break
            low, step = probe, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle
    return high


def search_family(base: ReplayOptions, family: Family, target: Target,
                  summary_fn: SummaryFn = default_summary) -> Candidate:
    """The minimal configuration of `family` meeting `target`, or why there is none. An
    impossible configuration (weights that do not fit) is infeasible with its reason."""
    search = _Search(base, family, target, summary_fn)
    candidate = Candidate(family, feasible=False)
    try:
        capacity = search.one_replica_rate_scale()
        candidate.one_replica_rate_scale = capacity
        estimate = math.ceil(target.rate_scale / capacity - 1e-9)
        if family.disaggregated:
            replicas = _disaggregated(search, candidate, estimate)
        else:
            replicas = search.colocated(estimate)
            candidate.replicas = replicas
            candidate.fewer = [search.run(replicas - 1) if replicas > 1
                               else Probe(0, None, False, "zero replicas serve no request")]
    except (_Infeasible, ValueError) as exc:  # ValueError: e.g. the weights do not fit
        candidate.reason = str(exc)
    else:
        chosen = search.layout(candidate.replicas, candidate.disaggregate)
        candidate.feasible = True
        candidate.num_gpus = replicas * family.tp * base.pp
        candidate.summary = search.runs[(candidate.replicas, candidate.disaggregate)][1]
        candidate.options = non_default(chosen)
        # one colocated replica: its capacity search already found the highest scale it meets
        candidate.headroom_rate_scale = (capacity if (candidate.replicas, candidate.disaggregate)
                                         == (1, None) else search.headroom(chosen))
    candidate.probes = search.order
    candidate.num_simulations = search.num_simulations
    return candidate


def _disaggregated(search: _Search, candidate: Candidate, estimate: int) -> int:
    """Search a P:D split (the colocated estimate split a third prefill), fill `candidate`,
    return the total replica count."""
    prefill = max(1, estimate // 3)
    prefill, decode = search.split((prefill, max(1, estimate - prefill)))
    candidate.replicas, candidate.disaggregate = 1, f"{prefill}:{decode}"
    smaller = [(p, d) for p, d in ((prefill - 1, decode), (prefill, decode - 1)) if p and d]
    # 1:1 has no smaller split: one replica fewer is one colocated replica
    candidate.fewer = ([search.run(1, f"{p}:{d}") for p, d in smaller] if smaller
                       else [search.run(1)])
    if not smaller and candidate.fewer[0].meets:
        raise _Infeasible("P:D 1:1 is not minimal: one colocated replica (one fewer) meets the "
                          "target")
    return prefill + decode


def non_default(options: ReplayOptions) -> dict[str, Any]:
    defaults = ReplayOptions()
    return {f.name: getattr(options, f.name) for f in fields(ReplayOptions)
            if getattr(options, f.name) != getattr(defaults, f.name)}


def run_family(values: dict[str, Any]) -> dict[str, Any]:
    """Worker form of `search_family` for `run_cells`: `{"candidate": {...}, "error": None}`,
    or the error of a worker that failed outside the search."""
    try:
        candidate = search_family(ReplayOptions().updated(values["base"]),
                                  Family(**values["family"]), Target(**values["target"]))
    except Exception as exc:  # noqa: BLE001 - one family's crash must not end the plan
        return {"candidate": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"candidate": candidate.to_dict(), "error": None}

