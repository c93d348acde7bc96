"""Fit roofline `Coefficients` to measured timings, and say how well they fit.

The roofline's structure is kept: a fit only chooses the efficiencies and overheads. Each
sample is first reduced to the roofline's terms at unit efficiency (`_Terms`: FLOP time and byte
time per op group at 100% of peak, all-reduce bandwidth time, and how many seconds one second of
each overhead coefficient adds to the part the sample measured), read off
`CostModel.breakdown` itself, so the prediction is the simulator's own formula, evaluated for
thousands of samples at once:

    time = sum_g max(compute_s_g / compute_eff_g, memory_s_g / memory_eff_g)
           + comm_s / comm_bandwidth_eff + sum_k sensitivity_k * overhead_k

A sample contributes only the terms its group covers: "linear" samples the linear group (its
efficiencies and per-layer overhead), "overhead" samples the per-iteration, per-sequence and
TP overheads, "iteration" samples everything.

The fit minimises relative error, `log(predicted / measured)`, so a 1 ms decode step and a 4 s
prefill count alike; each source file gets equal total weight (its residuals are scaled by
1/sqrt(points)), so a 1,800-row operator sweep does not drown a 40-point whole-model profile.
Efficiencies are bounded to [0.01, 1] and times to >= 0. The optimiser (scipy's trust-region
reflective least squares) is deterministic and starts from the `_generic` coefficients;
coefficients the samples cannot pin down keep their starting value (`_Terms.informed`).

Each op group's time is a max() of its compute and memory terms, so the loss is flat in the
efficiency of whichever term does not bind: started where attention is compute-bound
everywhere, the optimiser never learns the memory efficiency that decode steps need (on a
CPU profile it stopped at 21% MAPE with the decode context slope 3-5x too shallow, against
17% from a memory-bound start). So the fit also starts from each group being compute- or
memory-bound (`BINDING_STARTS`) and keeps the best solution.

Hold-out: within each file, in reading order, every `holdout_every`-th sample (the 5th, 10th,
... by default) is left out of the fit and reported separately.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from itertools import product

import numpy as np

from sim.cost.catalog import get_hardware
from sim.cost.coefficients import Coefficients, default_coefficients
from sim.cost.fit_defaults import HOLDOUT_EVERY
from sim.cost.profiles import TimingSample
from sim.cost.roofline import CostModel

BINDING_STARTS = ((0.5, 0.02), (0.02, 0.5))
"""(compute, memory) efficiencies to start a group from: memory-bound, then compute-bound;
the fit starts from every combination of these for the linear and attention groups too."""

EFFICIENCIES: tuple[str, ...] = (
    "linear_compute_eff", "linear_memory_eff", "attention_compute_eff", "attention_memory_eff",
    "comm_bandwidth_eff",
)
OVERHEADS_S: tuple[str, ...] = (
    "iteration_overhead_s", "per_sequence_overhead_s", "layer_overhead_s", "allreduce_latency_s",
    "tp_overhead_s",
)
"""Coefficients that add time linearly: the prediction is linear in each of them."""
FITTED: tuple[str, ...] = EFFICIENCIES + OVERHEADS_S

MIN_EFF = 0.01
OVERHEAD_SCALE_S = 1e-3
"""Overheads are optimised in milliseconds so every parameter moves on a scale of ~1."""

UNIT = Coefficients(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, provenance="unit efficiencies",
                    allreduce_latency_s=0.0, layer_overhead_s=0.0, tp_overhead_s=0.0)
"""Peak efficiencies, no overheads: the breakdown then holds the raw roofline terms."""

ALL = "*"


@dataclass(frozen=True, slots=True)
class _Terms:
    """The roofline terms of n samples at unit efficiency (arrays of length n)."""

    linear: np.ndarray  # (n, 2): compute_s, memory_s of the linear group (0 if not covered)
    lm_head: np.ndarray  # (n, 2)
    attention: np.ndarray  # (n, 2)
    comm_s: np.ndarray  # (n,): all-reduce bandwidth time
    sensitivity: np.ndarray  # (n, len(OVERHEADS_S)): seconds added per second of each overhead
    measured_s: np.ndarray  # (n,)

    def predict(self, values: np.ndarray) -> np.ndarray:
        """Predicted seconds for coefficient values ordered as FITTED."""
        lce, lme, ace, ame, comm_eff = values[:5]
        linear = np.maximum(self.linear[:, 0] / lce, self.linear[:, 1] / lme)
        head = np.maximum(self.lm_head[:, 0] / lce, self.lm_head[:, 1] / lme)
        attention = np.maximum(self.attention[:, 0] / ace, self.attention[:, 1] / ame)
        return (linear + head + attention + self.comm_s / comm_eff
                + self.sensitivity @ values[5:])

    def select(self, mask: np.ndarray) -> _Terms:
        return _Terms(self.linear[mask], self.lm_head[mask], self.attention[mask],
                      self.comm_s[mask], self.sensitivity[mask], self.measured_s[mask])

    def informed(self) -> np.ndarray:
        """Which FITTED coefficients the samples can pin down.

        An efficiency needs some sample whose prediction depends on it. An overhead also needs
        its sensitivity column to be independent of the earlier overheads' (in FITTED order):
        with only TP >= 2 samples, `tp_overhead_s` adds exactly what `iteration_overhead_s`
        adds, so any split between the two fits equally well and it keeps its start value.
        """
        has_linear = bool((self.linear.sum() + self.lm_head.sum()) > 0)
        has_attention = bool(self.attention.sum() > 0)
        flags = [has_linear, has_linear, has_attention, has_attention, bool(self.comm_s.sum() > 0)]
        kept = np.empty((len(self.measured_s), 0))
        for column in self.sensitivity.T:
            norm = np.linalg.norm(column)
            candidate = np.column_stack([kept, column / norm]) if norm > 0 else kept
            independent = norm > 0 and np.linalg.matrix_rank(candidate) > kept.shape[1]
            if independent:
                kept = candidate
            flags.append(bool(independent))
        return np.array(flags)


_COVERED = {
    "linear": lambda cost: cost.groups[0].time_s,
    "iteration": lambda cost: cost.time_s,
}
"""The part of a breakdown each group's samples measured."""


def _sample_terms(sample: TimingSample, models: dict[tuple, list[CostModel]]) -> tuple:
    """(linear, lm_head, attention, comm_s, sensitivity) of one sample, zeros where its group
    does not reach."""
    zero2 = (0.0, 0.0)
    num_seqs = len(sample.new_tokens)
    if sample.group == "overhead":
        # The breakdown's overhead_s, which needs no model: per iteration, per sequence, TP.
        per_name = {"iteration_overhead_s": 1.0, "per_sequence_overhead_s": float(num_seqs),
                    "tp_overhead_s": 1.0 if sample.tp > 1 else 0.0}
        return zero2, zero2, zero2, 0.0, [per_name.get(n, 0.0) for n in OVERHEADS_S]
    key = (sample.model, sample.hardware, sample.tp)
    if key not in models:
        hardware = get_hardware(sample.hardware)
        models[key] = [CostModel(sample.model, hardware, UNIT.with_values(**{name: 1.0}) if name
                                 else UNIT, tp=sample.tp) for name in (None,) + OVERHEADS_S]
    new, ctx = list(sample.new_tokens), list(sample.context_tokens)
    cost = models[key][0].breakdown(new, ctx)
    # Each overhead's sensitivity is what setting it to one second adds to the measured part.
    covered = _COVERED[sample.group]
    sensitivity = [covered(m.breakdown(new, ctx)) - covered(cost) for m in models[key][1:]]
    linear, attention, lm_head = ((g.compute_s, g.memory_s) for g in cost.groups)
    if sample.group == "linear":
        return linear, zero2, zero2, 0.0, sensitivity
    return linear, lm_head, attention, cost.comm_s, sensitivity


def _terms(samples: list[TimingSample]) -> _Terms:
    models: dict[tuple, list[CostModel]] = {}  # unit model + one probe per overhead
    rows = [_sample_terms(s, models) for s in samples]
    return _Terms(
        linear=np.array([r[0] for r in rows], dtype=float).reshape(-1, 2),
        lm_head=np.array([r[1] for r in rows], dtype=float).reshape(-1, 2),
        attention=np.array([r[2] for r in rows], dtype=float).reshape(-1, 2),
        comm_s=np.array([r[3] for r in rows], dtype=float),
        sensitivity=np.array([r[4] for r in rows], dtype=float).reshape(-1, len(OVERHEADS_S)),
        measured_s=np.array([s.measured_s for s in samples], dtype=float),
    )


def holdout_mask(samples: list[TimingSample], holdout_every: int = HOLDOUT_EVERY) -> np.ndarray:
    """True for held-out samples: every k-th sample of each source file, in reading order."""
    if holdout_every < 2:
        raise ValueError(f"holdout_every must be >= 2, got {holdout_every}")
    seen: dict[str, int] = defaultdict(int)
    mask = []
    for s in samples:
        seen[s.source_file] += 1
        mask.append(seen[s.source_file] % holdout_every == 0)
    return np.array(mask)


# ---- error report -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ErrorStats:
    num_points: int
    mape_pct: float
    max_error_pct: float


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """Error of one (file, group, split); file or group ALL ("*") aggregates over them."""

    file: str
    group: str
    split: str  # "held-out" or "all"
    stats: ErrorStats


@dataclass(frozen=True, slots=True)
class FitReport:
    """Relative errors of a coefficient set on samples. Aggregates across files weight each
    file equally (the mean of the files' MAPEs), as the fit does; the max is over points."""

    holdout_every: int
    rows: tuple[ErrorRow, ...]

    def find(self, file: str = ALL, group: str = ALL, split: str = "held-out") -> ErrorStats | None:
        for row in self.rows:
            if (row.file, row.group, row.split) == (file, group, split):
                return row.stats
        return None

    def stats(self, file: str = ALL, group: str = ALL, split: str = "held-out") -> ErrorStats:
        found = self.find(file, group, split)
        if found is None:
            raise KeyError(f"no points for file={file!r} group={group!r} split={split!r}")
        return found

    @property
    def files(self) -> list[str]:
        return sorted({r.file for r in self.rows if r.file != ALL})

    def groups_in(self, file: str = ALL) -> list[str]:
        """The op groups with points in `file` (ALL: in any file)."""
        return sorted({r.group for r in self.rows if r.file == file and r.group != ALL})


def _report(samples: list[TimingSample], rel_err: np.ndarray, held_out: np.ndarray,
            holdout_every: int) -> FitReport:
    files = np.array([s.source_file for s in samples])
    groups = np.array([s.group for s in samples])
    rows = []
    for split, in_split in (("held-out", held_out), ("all", np.ones_like(held_out))):
        for group in sorted(set(groups)) + [ALL]:
            in_group = in_split & ((groups == group) if group != ALL else True)
            per_file = []
            for file in sorted(set(files)):
                sel = in_group & (files == file)
                if sel.any():
                    stats = _stats(np.abs(rel_err[sel]))
                    per_file.append(stats)
                    rows.append(ErrorRow(file, group, split, stats))
            if per_file:
                rows.append(ErrorRow(ALL, group, split, ErrorStats(
                    sum(s.num_points for s in per_file),
                    float(np.mean([s.mape_pct for s in per_file])),
                    max(s.max_error_pct for s in per_file))))
    return FitReport(holdout_every, tuple(rows))


def _stats(abs_rel_err: np.ndarray) -> ErrorStats:
    return ErrorStats(int(abs_rel_err.size), float(100 * abs_rel_err.mean()),
                      float(100 * abs_rel_err.max()))


# ---- fitting ------------------------------------------------------------------------------
SIGNIFICANT_DIGITS = 4
"""Fitted values are rounded (the data does not support more) before the errors are computed,
so a report describes exactly the coefficients that get written."""


@dataclass(frozen=True, slots=True)
class FitResult:
    coefficients: Coefficients
    report: FitReport
    num_fitted: int
    num_held_out: int
    files: tuple[str, ...]
    not_informed: tuple[str, ...]
    """Coefficients no sample pinned down; they keep their starting values."""


def _values(c: Coefficients, hardware: str) -> np.ndarray:
    """FITTED values of `c`; an unset all-reduce latency is the hardware table's."""
    latency_s = get_hardware(hardware).interconnect_latency_s
    return np.array([latency_s if getattr(c, n) is None else float(getattr(c, n)) for n in FITTED])


def _one_hardware(samples: list[TimingSample]) -> str:
    if not samples:
        raise ValueError("no samples")
    hardware = {s.hardware for s in samples}
    if len(hardware) != 1:
        raise ValueError(f"coefficients are per hardware; got samples of {sorted(hardware)}")
    return hardware.pop()


def evaluate(samples: list[TimingSample], coefficients: Coefficients,
             holdout_every: int = HOLDOUT_EVERY) -> FitReport:
    """Relative errors of `coefficients` on `samples` (one hardware), per file, group, split."""
    return _evaluate(samples, _terms(samples), coefficients, holdout_every)


def predict(samples: list[TimingSample], coefficients: Coefficients) -> np.ndarray:
    """What `coefficients` predict for each sample (seconds, the part its group covers)."""
    return _terms(samples).predict(_values(coefficients, _one_hardware(samples)))


def _evaluate(samples: list[TimingSample], terms: _Terms, coefficients: Coefficients,
              holdout_every: int) -> FitReport:
    predicted = terms.predict(_values(coefficients, _one_hardware(samples)))
    return _report(samples, predicted / terms.measured_s - 1.0,
                   holdout_mask(samples, holdout_every), holdout_every)


def fit(samples: list[TimingSample], *, holdout_every: int = HOLDOUT_EVERY,
        fit_date: str | None = None, start: Coefficients | None = None) -> FitResult:
    """Fit coefficients to `samples` (one hardware) and report errors on held-out and all
    points. The provenance names the files, the date and the held-out MAPE."""
    # scipy.optimize takes ~0.45 s to import: a fit pays it, not every importer of this module
    from scipy.optimize import least_squares

    hardware = _one_hardware(samples)
    start = start if start is not None else default_coefficients("_generic")
    held_out = holdout_mask(samples, holdout_every)
    train = [s for s, h in zip(samples, held_out) if not h]
    if not train:
        raise ValueError("every sample is held out; give more samples")
    terms = _terms(samples)
    train_terms = terms.select(~held_out)
    weights = _file_weights(train)
    x0 = _values(start, hardware)
    free = train_terms.informed()
    scale = np.array([1.0] * len(EFFICIENCIES) + [OVERHEAD_SCALE_S] * len(OVERHEADS_S))[free]
    lower = np.array([MIN_EFF] * len(EFFICIENCIES) + [0.0] * len(OVERHEADS_S))[free]
    upper = np.array([1.0] * len(EFFICIENCIES) + [np.inf] * len(OVERHEADS_S))[free]

    def full(theta: np.ndarray) -> np.ndarray:
        values = x0.copy()
        values[free] = theta * scale
        return values

    def residuals(theta: np.ndarray) -> np.ndarray:
        predicted = np.maximum(train_terms.predict(full(theta)), 1e-12)
        return weights * np.log(predicted / train_terms.measured_s)

    solution = min((least_squares(residuals, np.clip(x[free], lower, upper) / scale,
                                  bounds=(lower / scale, upper / scale), method="trf",
                                  max_nfev=2000)
                    for x in _starting_points(x0)), key=lambda found: found.cost)
    fitted = {name: float(f"{v:.{SIGNIFICANT_DIGITS}g}")
              for name, v, f in zip(FITTED, full(solution.x), free) if f}
    coefficients = start.with_values(**fitted)
    report = _evaluate(samples, terms, coefficients, holdout_every)
    files = tuple(sorted({s.source_file for s in samples}))
    not_informed = tuple(name for name, f in zip(FITTED, free) if not f)
    provenance = describe_fit(hardware, files, len(train), int(held_out.sum()), holdout_every,
                              report, not_informed, fit_date or date.today().isoformat())
    return FitResult(coefficients.with_values(provenance=provenance), report, len(train),
                     int(held_out.sum()), files, not_informed)


def _starting_points(x0: np.ndarray) -> list[np.ndarray]:
    """`x0`, then `x0` with the linear and attention groups started compute- or memory-bound
    (`BINDING_STARTS`, every combination). Ties keep the earliest, so the fit stays
    deterministic and a profile the first start fits best keeps that solution."""
    points = [x0]
    for linear, attention in product(BINDING_STARTS, repeat=2):
        x = x0.copy()
        x[[FITTED.index("linear_compute_eff"), FITTED.index("linear_memory_eff")]] = linear
        x[[FITTED.index("attention_compute_eff"), FITTED.index("attention_memory_eff")]] = attention
        points.append(x)
    return points


def _file_weights(samples: list[TimingSample]) -> np.ndarray:
    counts: dict[str, int] = defaultdict(int)
    for s in samples:
        counts[s.source_file] += 1
    return np.array([1.0 / np.sqrt(counts[s.source_file]) for s in samples])


# ---- provenance ---------------------------------------------------------------------------
_MAPE_PATTERN = re.compile(r"held-out MAPE (\d+(?:\.\d+)?)%")


def describe_fit(hardware: str, files: tuple[str, ...], num_fitted: int, num_held_out: int,
                 holdout_every: int, report: FitReport, not_informed: tuple[str, ...],
                 fit_date: str) -> str:
    held = report.stats(split="held-out")
    every = report.stats(split="all")
    kept = f"; not informed, kept at start: {', '.join(not_informed)}" if not_informed else ""
    return (f"fitted {fit_date} by sim.cost.calibrate for {hardware} to {num_fitted} points "
            f"(every {holdout_every}th point of each file held out: {num_held_out}); "
            f"held-out MAPE {held.mape_pct:.1f}% (all points {every.mape_pct:.1f}%, "
            f"mean over files){kept}; files: {', '.join(files)}")


def stated_holdout_mape(provenance: str) -> float:
    """The held-out MAPE (percent) a fitted coefficient set's provenance states."""
    match = _MAPE_PATTERN.search(provenance)
    if match is None:
        raise ValueError(f"provenance states no held-out MAPE: {provenance!r}")
    return float(match.group(1))
