"""The simulator's error against real runs: relative errors of summary metrics and of each
request's latencies, and their medians and spread over repeated real runs.

A relative error is `simulated / measured - 1`: +0.1 means the simulator says 10% more than
the real run measured. `validation.json` (see `validation_report`) holds

- `rel_error`: per summary key (`ttft_p50_s`, ...), the median over repeats of the signed
  relative error; `rel_error_spread` its min, max and every repeat's value;
- `median_abs_rel_error`: per repeat, the median of |relative error| over `HEADLINE_KEYS`;
  then the median over repeats, with `median_abs_rel_error_spread` (min, max, each repeat);
- `per_request`: quantiles of each request's relative error of TTFT, TPOT and E2E, pooled
  over repeats (the summary can agree while requests disagree in opposite directions).

Pure: no I/O, no clocks; the real runs and the simulations are done by `backend.validate`.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable, Mapping

import numpy as np

HEADLINE_KEYS: tuple[str, ...] = (
    "ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p90_s", "e2e_p50_s", "e2e_p90_s",
)
"""The keys `median_abs_rel_error` is the median over (the issue's contract)."""

LATENCY_KEYS: tuple[str, ...] = tuple(
    f"{metric}_{stat}_s" for metric in ("ttft", "tpot", "itl", "e2e", "queue")
    for stat in ("mean", "p50", "p90", "p99"))
THROUGHPUT_KEYS: tuple[str, ...] = (
    "output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_req_s",
)
COMPARED_KEYS: tuple[str, ...] = LATENCY_KEYS + THROUGHPUT_KEYS + ("batch_size_mean",)

PER_REQUEST_METRICS: tuple[str, ...] = ("ttft_s", "tpot_s", "e2e_s")
PER_REQUEST_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


def rel_error(simulated: float | None, measured: float | None) -> float | None:
    """`simulated / measured - 1`; None when either is missing or the measurement is 0
    (a relative error of a zero is undefined, e.g. the queueing time of an idle replica)."""
    if simulated is None or measured is None or measured == 0:
        return None
    return float(simulated) / float(measured) - 1.0


def rel_errors(simulated: Mapping[str, Any], measured: Mapping[str, Any],
               keys: Iterable[str] = COMPARED_KEYS) -> dict[str, float | None]:
    """Relative error of every key in `keys` between two summaries (summary.json maps)."""
    return {key: rel_error(simulated.get(key), measured.get(key)) for key in keys}


def median_abs_rel_error(errors: Mapping[str, float | None],
                         keys: Iterable[str] = HEADLINE_KEYS) -> float | None:
    """The median of |relative error| over `keys` (None if any of them is missing: a
    headline number over fewer keys would not be comparable between runs)."""
    values = [errors.get(key) for key in keys]
    if any(v is None for v in values):
        return None
    return float(statistics.median(abs(v) for v in values))


def spread(values: list[float | None]) -> dict[str, Any]:
    """Median, min, max and each value of one quantity over repeats (None values skipped in
    the statistics, kept in `per_repeat`)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "per_repeat": values}
    return {"median": float(statistics.median(present)), "min": float(min(present)),
            "max": float(max(present)), "per_repeat": values}


def per_request_errors(simulated: list[Mapping[str, Any]], measured: list[Mapping[str, Any]],
                       metrics: Iterable[str] = PER_REQUEST_METRICS) -> dict[str, list]:
    """Each request's relative error per metric, over the requests both runs finished
    (request rows as `Results.request_rows()` gives them, joined on `request_id`)."""
    sim_rows = {row["request_id"]: row for row in simulated if row["status"] == "finished"}
    errors: dict[str, list] = {metric: [] for metric in metrics}
    for row in measured:
        other = sim_rows.get(row["request_id"])
        if row["status"] != "finished" or other is None:
            continue
        for metric in errors:
            value = rel_error(_number(other[metric]), _number(row[metric]))
            if value is not None:
                errors[metric].append(value)
    return errors


def _number(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def distribution(values: list[float]) -> dict[str, Any]:
    """Quantiles of per-request relative errors, their mean and the mean of their absolute
    values (None entries when there are no values)."""
    out: dict[str, Any] = {"n": len(values)}
    array = np.asarray(values, dtype=float)
    for q in PER_REQUEST_QUANTILES:
        out[f"p{round(q * 100)}"] = float(np.quantile(array, q)) if array.size else None
    out["mean"] = float(array.mean()) if array.size else None
    out["mean_abs"] = float(np.abs(array).mean()) if array.size else None
    return out


def validation_report(sim_summaries: list[Mapping[str, Any]],
                      real_summaries: list[Mapping[str, Any]],
                      per_request: list[dict[str, list]]) -> dict[str, Any]:
    """The error part of validation.json from one (simulated, measured) pair per repeat."""
    if not real_summaries or len({len(sim_summaries), len(real_summaries), len(per_request)}) != 1:
        raise ValueError("validation needs one simulated and one measured summary per repeat")
    by_repeat = [rel_errors(s, r) for s, r in zip(sim_summaries, real_summaries)]
    headline = [median_abs_rel_error(errors) for errors in by_repeat]
    spreads = {key: spread([errors[key] for errors in by_repeat]) for key in COMPARED_KEYS}
    pooled = {metric: [v for repeat in per_request for v in repeat[metric]]
              for metric in PER_REQUEST_METRICS}
    return {
        "median_abs_rel_error": spread(headline)["median"],
        "median_abs_rel_error_spread": spread(headline),
        "headline_keys": list(HEADLINE_KEYS),
        "rel_error": {key: s["median"] for key, s in spreads.items()},
        "rel_error_spread": spreads,
        "per_request": {metric: distribution(values) for metric, values in pooled.items()},
        "repeats": len(real_summaries),
    }
