"""A/B compare: two configurations on the same trace and seed, side by side with deltas."""

from __future__ import annotations

import streamlit as st

from ui import charts, controls, data, panels
from ui.controls import DEFAULTS, Workload

COMPARE_KEYS = [key for _, key, _ in data.SUMMARY_CARDS] + [
    "request_throughput_req_s", "requests_finished", "requests_rejected", "preemptions",
    "batch_size_mean", "kv_util_mean", "kv_frag_mean", "kv_blocks_total",
]
B_DEFAULTS = DEFAULTS.updated({"scheduler": "static"})
"""B starts as the other scheduler, so the first load already compares something."""


def render(workload: Workload, slos: dict, price_per_gpu_hour: float) -> None:
    st.caption("Workload, seed and SLOs come from the sidebar and are shared by A and B.")
    col_a, col_b = st.columns(2)
    col_a.markdown("**A**")
    col_b.markdown("**B**")
    values_a = controls.config_controls("a.", DEFAULTS, col_a, expanded=False)
    values_b = controls.config_controls("b.", B_DEFAULTS, col_b, expanded=False)
    if workload.error:
        st.error(f"error: {workload.error}")
        return
    views = []
    for label, values in (("A", values_a), ("B", values_b)):
        try:
            options = controls.build_options(workload.values, slos, values)
        except ValueError as exc:
            st.error(f"error in {label}: {exc}")
            return
        view = panels.run_or_error(options, workload.upload_name)
        if view is None:
            return
        views.append(view)
    view_a, view_b = views
    st.subheader("B against A")
    st.caption(f"A: {charts.view_title(view_a)}  \nB: {charts.view_title(view_b)}")
    panels.metric_cards(view_b, price_per_gpu_hour, baseline=view_a)
    table = data.compare_table(view_a.summary, view_b.summary, COMPARE_KEYS)
    st.dataframe(table, hide_index=True)
    st.download_button("comparison.csv", table.to_csv(index=False), file_name="comparison.csv",
                       mime="text/csv", key="dl_compare")
    left, right = st.columns(2)
    for column, label, view in ((left, "A", view_a), (right, "B", view_b)):
        with column:
            st.markdown(f"**{label}**")
            binned = data.binned_iterations(view)
            st.altair_chart(charts.latency_cdf(data.latency_cdf(view.requests)), width="stretch")
            st.altair_chart(charts.kv_memory(data.kv_long(binned), binned), width="stretch")
            st.download_button(f"{label}.toml", view.config_toml(workload.upload_name),
                               file_name=f"servesim_{label}.toml", mime="application/toml",
                               key=f"dl_toml_{label}")
