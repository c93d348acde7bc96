"""What-if: one configuration from the sidebar, every metric and chart of its run."""

from __future__ import annotations

import streamlit as st

from ui import charts, controls, panels
from ui.controls import Workload


def render(workload: Workload, slos: dict, price_per_gpu_hour: float) -> None:
    values = controls.config_controls()
    if workload.error:
        st.error(f"error: {workload.error}")
        return
    try:
        options = controls.build_options(workload.values, slos, values)
    except ValueError as exc:
        st.error(f"error: {exc}")
        return
    view = panels.run_or_error(options, workload.upload_name)
    if view is None:
        return
    st.caption(charts.view_title(view))
    panels.metric_cards(view, price_per_gpu_hour)
    panels.rejections(view)
    panels.charts_panel(view)
    panels.exports(view, workload.upload_name)
