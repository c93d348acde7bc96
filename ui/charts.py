"""Altair charts over the `ui.data` tables; no streamlit, so tests can build and check them."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from sim.public import IntensityRow
from ui.data import KV_STATES, RunView



def latency_cdf(cdf: pd.DataFrame) -> alt.Chart:
    return alt.Chart(cdf, title="Latency CDFs (finished requests)").mark_line().encode(
        x=alt.X("latency_s:Q", title="latency (s)", scale=alt.Scale(type="symlog")),
        y=alt.Y("fraction:Q", title="fraction of requests"),
        color=alt.Color("metric:N"),
        tooltip=["metric", alt.Tooltip("latency_s:Q", format=".4f"), "fraction"],
    ).properties(height=260)


def latency_over_time(long: pd.DataFrame) -> alt.Chart:
    return alt.Chart(long, title="TTFT and TPOT by arrival time").mark_circle(size=12).encode(
        x=alt.X("arrival_s:Q", title="arrival (s)"),
        y=alt.Y("latency_s:Q", title="latency (s)", scale=alt.Scale(type="symlog")),
        color="metric:N",
        tooltip=["request_id", "metric", alt.Tooltip("latency_s:Q", format=".4f")],
    ).properties(height=260)


def kv_memory(kv_long: pd.DataFrame, binned: pd.DataFrame) -> alt.LayerChart:
    """Stacked shares of the KV pool (used / held but empty / cached / free), and fragmentation."""
    order = {state: i for i, state in enumerate(KV_STATES.values())}
    data = kv_long.assign(order=kv_long["state"].map(order))
    area = alt.Chart(data).mark_area().encode(
        x=alt.X("time_s:Q", title="time (s)"),
        y=alt.Y("share:Q", stack="zero", title="share of the KV pool",
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("state:N", sort=list(order),
                        scale=alt.Scale(domain=list(order), range=["#1f77b4", "#ff7f0e", "#2ca02c", "#e8e8e8"])),
        order="order:Q",
        tooltip=["state", alt.Tooltip("slots:Q", format=",.0f"), alt.Tooltip("share:Q", format=".1%")],
    )
    frag = alt.Chart(binned.assign(series="fragmentation (held, empty / held)")).mark_line(
        color="#d62728", strokeDash=[4, 2]).encode(
        x="time_s:Q", y="kv_frag:Q",
        tooltip=[alt.Tooltip("kv_frag:Q", format=".1%", title="fragmentation")])
    return alt.layer(area, frag, title="KV memory over time (red: fragmentation)").properties(
        height=260)


def batch_and_queue(binned: pd.DataFrame) -> alt.Chart:
    long = binned.melt(id_vars=["time_s"], value_vars=["batch_size", "num_waiting"],
                       var_name="series", value_name="count")
    long["series"] = long["series"].map({"batch_size": "batch size", "num_waiting": "queue length"})
    return alt.Chart(long, title="Batch size and queue length over time").mark_line().encode(
        x=alt.X("time_s:Q", title="time (s)"),
        y=alt.Y("count:Q", title="sequences"),
        color="series:N",
    ).properties(height=260)


def gantt(rows: pd.DataFrame) -> alt.Chart:
    return alt.Chart(rows, title="Request timeline").mark_bar().encode(
        x=alt.X("from_s:Q", title="time (s)"),
        x2="to_s:Q",
        y=alt.Y("request_id:O", title="request", sort="ascending"),
        color=alt.Color("phase:N", sort=["queued", "prefill", "decode"],
                        scale=alt.Scale(domain=["queued", "prefill", "decode"],
                                        range=["#c7c7c7", "#ff7f0e", "#1f77b4"])),
        tooltip=["request_id", "phase", alt.Tooltip("from_s:Q", format=".3f"),
                 alt.Tooltip("to_s:Q", format=".3f")],
    ).properties(height=max(200, 8 * rows["request_id"].nunique()))


def roof(peak_flops_s: float, bandwidth_bytes_s: float, lo: float = 0.1, hi: float = 1e5) -> pd.DataFrame:
    intensity = np.logspace(np.log10(lo), np.log10(hi), 200)
    return pd.DataFrame({"intensity_flops_per_byte": intensity,
                         "attainable_tflops_s": np.minimum(peak_flops_s, bandwidth_bytes_s * intensity) / 1e12})


def roofline(points: pd.DataFrame, peak_flops_s: float, bandwidth_bytes_s: float,
             title: str, color: str = "kind") -> alt.LayerChart:
    """Log-log roofline (attainable = min(peak, bandwidth x intensity)) with `points` on it."""
    ridge = peak_flops_s / bandwidth_bytes_s
    x = alt.X("intensity_flops_per_byte:Q", title="arithmetic intensity (FLOP/byte)",
              scale=alt.Scale(type="log"))
    line = alt.Chart(roof(peak_flops_s, bandwidth_bytes_s)).mark_line(color="black").encode(
        x=x, y=alt.Y("attainable_tflops_s:Q", title="TFLOP/s", scale=alt.Scale(type="log")))
    rule = alt.Chart(pd.DataFrame({"ridge": [ridge], "label": [f"ridge {ridge:.0f} FLOP/byte"]})
                     ).mark_rule(strokeDash=[4, 4], color="gray").encode(x="ridge:Q", tooltip=["label"])
    dots = alt.Chart(points).mark_circle(size=40, opacity=0.7).encode(
        x=x, y="achieved_tflops_s:Q", color=f"{color}:N",
        tooltip=[alt.Tooltip(c) for c in points.columns])
    return alt.layer(line, rule, dots, title=title).properties(height=320)


def intensity_points(rows: list[IntensityRow]) -> pd.DataFrame:
    return pd.DataFrame({
        "intensity_flops_per_byte": [r.intensity_flops_per_byte for r in rows],
        "achieved_tflops_s": [r.achieved_flops_s / 1e12 for r in rows],
        "phase": [r.phase for r in rows],
        "group": [r.group for r in rows],
        "num_seqs": [r.num_seqs for r in rows],
        "new_tokens": [r.new_tokens for r in rows],
        "context_tokens": [r.context_tokens for r in rows],
        "bound": ["memory" if r.memory_bound else "compute" for r in rows],
    })


def sweep_curves(points: pd.DataFrame) -> alt.Chart:
    return alt.Chart(points, title="Throughput vs P99 TTFT over request rate").mark_line(point=True).encode(
        x=alt.X("request_throughput_req_s:Q", title="throughput (req/s)"),
        y=alt.Y("ttft_p99_s:Q", title="P99 TTFT (s)", scale=alt.Scale(type="symlog")),
        color="config:N",
        tooltip=["config", "rate_scale", "request_throughput_req_s", "ttft_p99_s", "slo_attainment"],
    ).properties(height=300)


def attainment_curves(points: pd.DataFrame, target: float) -> alt.LayerChart:
    lines = alt.Chart(points, title="SLO attainment over request rate").mark_line(point=True).encode(
        x=alt.X("rate_scale:Q", title="rate scale", scale=alt.Scale(type="log")),
        y=alt.Y("slo_attainment:Q", title="share within SLOs", scale=alt.Scale(domain=[0, 1])),
        color="config:N",
    )
    rule = alt.Chart(pd.DataFrame({"target": [target]})).mark_rule(strokeDash=[4, 4]).encode(y="target:Q")
    return alt.layer(lines, rule).properties(height=300)


def view_title(view: RunView) -> str:
    o = view.options
    return (f"{view.trace_name}: {o.model} on {o.tp}x {o.hardware}, {o.scheduler} + {o.allocator}, "
            f"rate x{o.rate_scale:g}; priced by the {view.summary['cost_model']} cost model "
            f"— {view.summary['cost_model_choice']}")
