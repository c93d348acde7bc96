"""From `Results` to the tables the dashboard draws: plain pandas, no streamlit.

A `RunView` is what the dashboard caches per configuration: small, picklable, and enough for
every panel (the engine and its sequences are not kept, so a cached run costs kilobytes per
request, not the whole simulator state).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.public import (REQUEST_COLUMNS, Engine, IterationRecorder, ReplayOptions, Results,
                        options_to_toml, run_notes)

SUMMARY_CARDS: tuple[tuple[str, str, str], ...] = (
    ("TTFT P50 (s)", "ttft_p50_s", "lower"),
    ("TTFT P99 (s)", "ttft_p99_s", "lower"),
    ("TPOT P50 (s)", "tpot_p50_s", "lower"),
    ("TPOT P99 (s)", "tpot_p99_s", "lower"),
    ("E2E P50 (s)", "e2e_p50_s", "lower"),
    ("E2E P99 (s)", "e2e_p99_s", "lower"),
    ("Output throughput (tok/s)", "output_throughput_tok_s", "higher"),
    ("Goodput (req/s)", "goodput_req_s", "higher"),
)
"""(label, summary key, which way is better) of the metric cards, in display order."""

CDF_METRICS = ("ttft_s", "tpot_s", "e2e_s")
CDF_POINTS = 201
"""Quantiles drawn per latency CDF: enough for a smooth curve, few enough for any run size."""


@dataclass(frozen=True, slots=True)
class RunView:
    options: ReplayOptions
    summary: dict[str, Any]
    requests: pd.DataFrame
    """One row per trace row, columns `sim.results.REQUEST_COLUMNS`."""
    iterations: pd.DataFrame
    """One row per executed iteration of each replica: its engine's log, FLOPs, bytes moved."""
    kv_total_slots: int
    """One replica's KV pool (every replica has the same)."""
    trace_name: str
    trace_notes: tuple[str, ...]
    run_notes: tuple[str, ...]
    """What the CLI prints under its results table (`sim.run_notes`): numbers that look like a
    failure but are what the inputs imply."""
    ridge_flops_per_byte: float
    peak_flops_s: float
    mem_bandwidth_bytes_s: float

    def summary_json(self) -> str:
        return json.dumps(self.summary, indent=2) + "\n"

    def requests_csv(self) -> str:
        return self.requests.to_csv(index=False)

    def config_toml(self, trace_label: str | None = None) -> str:
        """The config that reproduces this run with `servesim replay --config`."""
        options = self.options
        header = "servesim replay --config THIS_FILE --out DIR reproduces the dashboard's run"
        if trace_label is not None:
            options = ReplayOptions().updated(
                {n: getattr(options, n) for n in ReplayOptions.names()} | {"trace": trace_label})
            header += f"\ntrace: the uploaded file {trace_label}; put it next to this file"
        return options_to_toml(options, header)


def _iterations(engine: Engine, recorder: IterationRecorder, replica: int) -> pd.DataFrame:
    log = engine.log
    return pd.DataFrame({
        "replica": replica,
        "start_s": np.frombuffer(log.start_s, dtype=np.float64),
        "duration_s": np.frombuffer(log.duration_s, dtype=np.float64),
        "batch_size": np.asarray(log.batch_size, dtype=np.int64),
        "new_tokens": np.asarray(log.new_tokens, dtype=np.int64),
        "prefill_tokens": np.asarray(log.prefill_tokens, dtype=np.int64),
        "num_waiting": np.asarray(log.num_waiting, dtype=np.int64),
        "kv_reserved_slots": np.asarray(log.kv_reserved_slots, dtype=np.int64),
        "kv_filled_slots": np.asarray(log.kv_filled_slots, dtype=np.int64),
        "kv_cached_free_slots": np.asarray(log.kv_cached_free_slots, dtype=np.int64),
        "flops": np.frombuffer(recorder.flops, dtype=np.float64),
        "bytes_moved": np.frombuffer(recorder.bytes_moved, dtype=np.float64),
    })


def run_view(results: Results, recorders: list[IterationRecorder]) -> RunView:
    """`recorders[i]` observed replica i's executor (`simulate` builds them in order)."""
    iterations = pd.concat(
        [_iterations(engine, recorder, i)
         for i, (engine, recorder) in enumerate(zip(results.engines, recorders))],
        ignore_index=True)
    requests = pd.DataFrame(results.request_rows(), columns=list(REQUEST_COLUMNS))
    hardware = results.config.hardware
    return RunView(
        options=results.config.options,
        summary=dict(results.summary),
        requests=requests,
        iterations=iterations,
        kv_total_slots=results.engine.kv_total_slots,
        trace_name=results.config.trace.name,
        trace_notes=tuple(results.config.trace.notes),
        run_notes=tuple(run_notes(results.config.trace, results.config.options, results.summary)),
        ridge_flops_per_byte=hardware.ridge_point_flops_per_byte,
        peak_flops_s=hardware.peak_flops["bf16"],
        mem_bandwidth_bytes_s=hardware.mem_bandwidth_bytes_s,
    )


def output_tokens(summary: dict[str, Any]) -> float:
    rate = summary.get("output_throughput_tok_s")
    return 0.0 if rate is None else rate * summary["simulated_span_s"]


def cost_per_million_tokens(view: RunView, price_per_gpu_hour: float) -> float | None:
    """Dollars per million output tokens: every GPU of the replica billed for the whole span."""
    tokens = output_tokens(view.summary)
    if tokens <= 0:
        return None
    gpu_hours = view.options.tp * view.summary["simulated_span_s"] / 3600.0
    return price_per_gpu_hour * gpu_hours / (tokens / 1e6)


def slo_attainment(summary: dict[str, Any]) -> float | None:
    """Share of all trace rows finished within the SLOs (None when no SLO is set)."""
    goodput = summary.get("goodput_req_s")
    if goodput is None or not summary["requests_total"]:
        return None
    return goodput * summary["simulated_span_s"] / summary["requests_total"]


def latency_cdf(requests: pd.DataFrame) -> pd.DataFrame:
    """Long table (metric, latency_s, fraction) of each latency's quantiles over finished requests."""
    frames = []
    fractions = np.linspace(0.0, 1.0, CDF_POINTS)
    for metric in CDF_METRICS:
        values = requests[metric].dropna().to_numpy(dtype=np.float64)
        if values.size == 0:
            continue
        frames.append(pd.DataFrame({"metric": metric.removesuffix("_s").upper(),
                                    "latency_s": np.quantile(values, fractions),
                                    "fraction": fractions}))
    if not frames:
        return pd.DataFrame({"metric": [], "latency_s": [], "fraction": []})
    return pd.concat(frames, ignore_index=True)


def latency_over_time(requests: pd.DataFrame) -> pd.DataFrame:
    """Long table (arrival_s, metric, latency_s) of each finished request's TTFT and TPOT."""
    finished = requests[requests["status"] == "finished"]
    long = finished.melt(id_vars=["request_id", "arrival_s"], value_vars=["ttft_s", "tpot_s"],
                         var_name="metric", value_name="latency_s").dropna()
    long["metric"] = long["metric"].str.removesuffix("_s").str.upper()
    return long.reset_index(drop=True)


def binned_iterations(view: RunView, num_bins: int = 300) -> pd.DataFrame:
    """Iteration columns averaged over equal time bins, each iteration weighted by its duration.

    A run has thousands of iterations; binning keeps charts light and still shows every busy
    period. With several replicas the bins average over all of them, so the figures are a
    mean replica's. Bins where no replica computed are dropped (nothing to average).
    """
    it = view.iterations
    if it.empty:
        return pd.DataFrame(columns=["time_s", "batch_size", "num_waiting", "kv_used_slots",
                                     "kv_held_empty_slots", "kv_cached_slots", "kv_free_slots",
                                     "kv_frag"])
    end_s = float((it["start_s"] + it["duration_s"]).max())
    edges = np.linspace(0.0, max(end_s, 1e-9), num_bins + 1)
    index = np.clip(np.searchsorted(edges, it["start_s"].to_numpy(), side="right") - 1,
                    0, num_bins - 1)
    weights = it["duration_s"].to_numpy()
    frame = pd.DataFrame({
        "bin": index,
        "w": weights,
        "batch_size": it["batch_size"] * weights,
        "num_waiting": it["num_waiting"] * weights,
        "reserved": it["kv_reserved_slots"] * weights,
        "filled": it["kv_filled_slots"] * weights,
        "cached": it["kv_cached_free_slots"] * weights,
    })
    sums = frame.groupby("bin").sum()
    sums = sums[sums["w"] > 0]
    out = pd.DataFrame({"time_s": (edges[sums.index] + edges[sums.index + 1]) / 2})
    w = sums["w"].to_numpy()
    out["batch_size"] = sums["batch_size"].to_numpy() / w
    out["num_waiting"] = sums["num_waiting"].to_numpy() / w
    reserved = sums["reserved"].to_numpy() / w
    filled = sums["filled"].to_numpy() / w
    cached = sums["cached"].to_numpy() / w
    out["kv_used_slots"] = filled
    out["kv_held_empty_slots"] = reserved - filled
    out["kv_cached_slots"] = cached
    out["kv_free_slots"] = view.kv_total_slots - reserved - cached
    out["kv_frag"] = np.divide(reserved - filled, reserved, out=np.zeros_like(reserved),
                               where=reserved > 0)
    return out


KV_STATES = {"kv_used_slots": "used", "kv_held_empty_slots": "held, empty",
             "kv_cached_slots": "cached", "kv_free_slots": "free"}
"""Binned columns of the KV pool's states, bottom to top: they add up to the whole pool.
"cached" slots are free but still hold a prefix a later request may hit."""


def kv_long(binned: pd.DataFrame) -> pd.DataFrame:
    """(time_s, state, slots, share) for a stacked area over `KV_STATES`."""
    names = KV_STATES
    total = binned[list(names)].sum(axis=1)
    shares = binned[list(names)].div(total.where(total > 0, 1), axis=0)
    long = binned.melt(id_vars=["time_s"], value_vars=list(names), var_name="state",
                       value_name="slots")
    long["share"] = shares.melt(value_vars=list(names))["value"].to_numpy()
    long["state"] = long["state"].map(names)
    return long


def iteration_intensity(view: RunView, max_points: int = 2000) -> pd.DataFrame:
    """Per iteration: FLOP/byte, achieved FLOP/s and kind, thinned by a fixed stride."""
    it = view.iterations
    stride = max(1, len(it) // max_points)
    sample = it.iloc[::stride]
    kind = np.where(sample["prefill_tokens"] == 0, "decode only",
                    np.where(sample["prefill_tokens"] == sample["new_tokens"], "prefill only",
                             "mixed"))
    return pd.DataFrame({
        "intensity_flops_per_byte": sample["flops"] / sample["bytes_moved"],
        "achieved_tflops_s": sample["flops"] / sample["duration_s"] / 1e12,
        "batch_size": sample["batch_size"],
        "new_tokens": sample["new_tokens"],
        "kind": kind,
    }).reset_index(drop=True)


def timeline(requests: pd.DataFrame, start_s: float, end_s: float, end_of_run_s: float,
             max_requests: int = 80) -> pd.DataFrame:
    """Gantt rows (request_id, phase, from_s, to_s) for requests arriving in [start_s, end_s).

    Phases: queued (arrival to first scheduled), prefill (to first token), decode (to finish,
    or to the end of the run when unfinished). Rejected requests have no phases.
    """
    window = requests[(requests["arrival_s"] >= start_s) & (requests["arrival_s"] < end_s)]
    window = window.head(max_requests)
    rows = []
    for r in window.itertuples(index=False):
        done_s = r.finish_s if pd.notna(r.finish_s) else end_of_run_s
        marks = [("queued", r.arrival_s, r.first_scheduled_s),
                 ("prefill", r.first_scheduled_s, r.first_token_s),
                 ("decode", r.first_token_s, done_s)]
        for phase, lo, hi in marks:
            if pd.notna(lo) and pd.notna(hi):
                rows.append((int(r.request_id), phase, float(lo), float(hi)))
    return pd.DataFrame(rows, columns=["request_id", "phase", "from_s", "to_s"])


def compare_table(a: dict[str, Any], b: dict[str, Any], keys: list[str]) -> pd.DataFrame:
    """Metric, A, B, B - A and relative change, for the keys both summaries have."""
    rows = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        delta = vb - va if va is not None and vb is not None else None
        rel = delta / va if delta is not None and va else None
        rows.append({"metric": key, "A": va, "B": vb, "B - A": delta, "change": rel})
    return pd.DataFrame(rows)
