"""Sweep: throughput-latency curves over request rate, and each configuration's capacity."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import charts, controls, panels, sweep
from ui.controls import Workload

DEFAULT_CONFIGS = "\nscheduler=static\nallocator=contiguous, reserve=max"
DEFAULT_RATES = "0.5, 1, 2, 4, 8"


def render(workload: Workload, slos: dict, price_per_gpu_hour: float) -> None:
    base_values = controls.config_controls()
    st.caption("Each line is a configuration: the sidebar's options with these overrides "
               "(CLI option names; an empty line is the sidebar's configuration itself).")
    configs_text = st.text_area("configurations", DEFAULT_CONFIGS, key="sweep_configs")
    rates_text = st.text_input("rate scales", DEFAULT_RATES, key="sweep_rates")
    target = st.slider("SLO attainment target", 0.5, 1.0, 0.9, 0.01, key="sweep_target")
    if workload.error:
        st.error(f"error: {workload.error}")
        return
    if slos.get("slo_ttft_s") is None and slos.get("slo_tpot_s") is None:
        st.error("error: set a TTFT or TPOT SLO in the sidebar; capacity is the highest rate "
                 "meeting them")
        return
    try:
        configs = sweep.parse_configs(configs_text)
        rates = sweep.parse_rates(rates_text)
        base = controls.build_options(workload.values, slos, base_values)
        grid = [(c, r, base.updated(c.overrides | {"rate_scale": base.rate_scale * r}))
                for c in configs for r in rates]
    except ValueError as exc:
        st.error(f"error: {exc}")
        return
    st.caption(f"{len(grid)} runs; each is cached, so changing the target or adding a rate "
               "reruns only what is new.")
    if not st.button("Run sweep", key="run_sweep", type="primary"):
        return
    bar = st.progress(0.0, text="sweeping...")
    rows = []
    for i, (config, rate, options) in enumerate(grid):
        bar.progress(i / len(grid), text=f"sweeping: {config.label} at rate x{rate:g} "
                                         f"({i + 1}/{len(grid)})")
        view = panels.run_or_error(options, workload.upload_name)
        if view is None:
            bar.empty()
            return
        rows.append(sweep.sweep_row(config.label, rate, view))
    bar.empty()
    points = pd.DataFrame(rows)
    st.subheader("Capacity: highest rate meeting the SLOs")
    st.dataframe(sweep.capacity(points, target), hide_index=True)
    left, right = st.columns(2)
    left.altair_chart(charts.sweep_curves(points), width="stretch")
    right.altair_chart(charts.attainment_curves(points, target), width="stretch")
    st.dataframe(points, hide_index=True)
    st.download_button("sweep.csv", points.to_csv(index=False), file_name="sweep.csv",
                       mime="text/csv", key="dl_sweep")
