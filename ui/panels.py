"""Streamlit panels for one run: metric cards, charts, rejections, exports."""

from __future__ import annotations

from typing import Any

import streamlit as st

from sim.public import ReplayOptions
from ui import charts, data
from ui.data import RunView
from ui.runner import cached_run
from ui.controls import DEFAULTS
from ui.upload import user_message

OPTIONAL_PANELS: dict[str, tuple[str, ...]] = {
    "Prefix caching": ("prefix_hit_rate", "prefix_hit_rate_blocks", "prefix_hit_tokens",
                       "evictions"),
    "Speculative decoding": ("spec_tokens_per_step_mean", "spec_acceptance_rate",
                             "spec_conditional_acceptance_rate", "spec_k_mean", "spec_verifies",
                             "spec_draft_time_share", "spec_verify_time_share"),
    "Block diffusion": ("tokens_per_step_mean", "diffusion_steps_total"),
}
"""Panels shown only when the summary's first key has a value (the features that fill it:
a prefix-caching allocator, a speculator other than `none`, block-diffusion decoding)."""


def run_or_error(options: ReplayOptions, upload_name: str | None = None) -> RunView | None:
    """The cached run, or None after showing the error as the CLI words it (no traceback)."""
    try:
        return cached_run(options)
    except (ValueError, OSError) as exc:
        path = options.trace if upload_name else None
        st.error(f"error: {user_message(exc, path, upload_name)}")
        return None


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}"


def metric_cards(view: RunView, price_per_gpu_hour: float, baseline: RunView | None = None) -> None:
    """Latency, throughput, goodput and cost cards; with `baseline`, each shows the delta."""
    base_summary = {} if baseline is None else baseline.summary
    cards = [(label, view.summary.get(key), better, base_summary.get(key))
             for label, key, better in data.SUMMARY_CARDS]
    base_cost = None if baseline is None else data.cost_per_million_tokens(baseline, price_per_gpu_hour)
    cards.append(("Cost per M output tokens ($)",
                  data.cost_per_million_tokens(view, price_per_gpu_hour), "lower", base_cost))
    cards.append(("Requests finished", view.summary["requests_finished"], "higher",
                  base_summary.get("requests_finished")))
    columns = st.columns(5)
    for i, (label, value, better, base) in enumerate(cards):
        delta = None if base is None or value is None else fmt(value - base)
        columns[i % 5].metric(label, fmt(value), delta=delta,
                              delta_color="inverse" if better == "lower" else "normal")
    note = slice_note(view)
    if note:
        st.caption(note)


def slice_note(view: RunView) -> str | None:
    """Why these numbers are not `make demo`'s: the dashboard replays a `max_requests` slice
    by default (a one-second answer), the CLI the whole trace. None when nothing was cut."""
    cap = view.options.max_requests
    if cap is None or len(view.requests) < cap:
        return None
    return (f"These numbers cover the first {cap} requests of {view.trace_name} (max_requests "
            f"= {cap}; the dashboard's default is {DEFAULTS.max_requests}, for a fast answer). "
            "`make demo` and `servesim replay` without --max-requests replay the whole trace, "
            "so their numbers differ: clear max_requests in the sidebar to match them.")


def rejections(view: RunView) -> None:
    rejected = view.requests[view.requests["status"] == "rejected"]
    if rejected.empty:
        return
    invalid = rejected[rejected["reason"].str.startswith("invalid trace row")]
    st.warning(f"{len(rejected)} of {len(view.requests)} requests rejected"
               + (f" ({len(invalid)} invalid trace rows)" if len(invalid) else ""))
    with st.expander("rejected requests and reasons"):
        st.dataframe(rejected[["request_id", "reason"]].head(200), hide_index=True)


def optional_panels(view: RunView) -> None:
    for title, keys in OPTIONAL_PANELS.items():
        if view.summary.get(keys[0]) is None:
            continue
        st.subheader(title)
        present = [k for k in keys if k in view.summary]
        columns = st.columns(len(present))
        for column, key in zip(columns, present):
            column.metric(key, fmt(view.summary[key]))


def charts_panel(view: RunView, key: str = "") -> None:
    """Every chart of one run."""
    binned = data.binned_iterations(view)
    left, right = st.columns(2)
    left.altair_chart(charts.latency_cdf(data.latency_cdf(view.requests)), width="stretch")
    right.altair_chart(charts.latency_over_time(data.latency_over_time(view.requests)),
                       width="stretch")
    left, right = st.columns(2)
    left.altair_chart(charts.kv_memory(data.kv_long(binned), binned), width="stretch")
    right.altair_chart(charts.batch_and_queue(binned), width="stretch")
    optional_panels(view)
    st.altair_chart(charts.roofline(
        data.iteration_intensity(view), view.peak_flops_s, view.mem_bandwidth_bytes_s,
        f"Roofline: each iteration's FLOP/byte (ridge {view.ridge_flops_per_byte:.0f})"),
        width="stretch")
    timeline_panel(view, key)


def timeline_panel(view: RunView, key: str = "") -> None:
    arrivals = view.requests["arrival_s"].dropna()
    last_s = float(arrivals.max()) if len(arrivals) else 0.0
    end_of_run_s = float(view.summary["simulated_span_s"]) + (float(arrivals.min()) if len(arrivals) else 0.0)
    width_s = max(last_s / 20.0, 1e-3)
    start_s = st.slider("timeline window start (s)", 0.0, max(last_s, 1e-3), 0.0,
                        key=f"{key}timeline_start", format="%.1f")
    rows = data.timeline(view.requests, start_s, start_s + width_s, end_of_run_s)
    if rows.empty:
        st.info("no request arrives in this window")
    else:
        st.altair_chart(charts.gantt(rows), width="stretch")


def exports(view: RunView, upload_name: str | None, key: str = "") -> None:
    """Downloads: summary JSON, per-request CSV, and the TOML that reproduces the run."""
    left, middle, right = st.columns(3)
    left.download_button("summary.json", view.summary_json(), file_name="summary.json",
                         mime="application/json", key=f"{key}dl_summary")
    middle.download_button("requests.csv", view.requests_csv(), file_name="requests.csv",
                           mime="text/csv", key=f"{key}dl_requests")
    right.download_button("config.toml", view.config_toml(upload_name), file_name="servesim.toml",
                          mime="application/toml", key=f"{key}dl_toml")
    if view.trace_notes:
        st.caption("trace: " + "; ".join(view.trace_notes))
    for note in view.run_notes:
        st.info(note)
