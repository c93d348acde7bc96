"""Plan: the fewest, cheapest configurations meeting SLOs at the sidebar's load, by the same
`sim.plan` search as `servesim plan` (run in this process, family after family)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from sim.public import (HARDWARE, Candidate, Plan, PlanRequest, answer_line, best_toml,
                        check_slo, describe, make_plan, pareto_chart, parse_ints, parse_prices,
                        parse_slo, plan_csv, plan_json_text, plan_rows)
from ui import controls
from ui.controls import Workload

RESULT_KEY = "plan_result"
"""The last plan, kept across reruns (a widget change must not throw away minutes of search)."""


def render(workload: Workload, slos: dict, price_per_gpu_hour: float) -> None:
    model = controls.model_widget(controls.DEFAULTS.model, "plan_model")
    hardware = st.multiselect("hardware", list(HARDWARE), default=["h100"], key="plan_hardware")
    left, middle, right = st.columns(3)
    tps = left.multiselect("TP degrees", [1, 2, 4, 8], default=[1], key="plan_tp")
    budgets_text = middle.text_input("token budgets (chunked)", "2048", key="plan_budgets")
    seqs_text = right.text_input("max_num_seqs values", "256", key="plan_seqs")
    left, middle, right = st.columns(3)
    slo_text = left.text_input("SLOs (METRIC=SECONDS)", _default_slo(slos), key="plan_slo",
                               help="latency summary keys, e.g. ttft_p99=2,tpot_p99=0.05")
    prices_text = middle.text_input(
        "$ per GPU-hour by hardware", "", key="plan_prices",
        help=f"e.g. h100=2.5,a100=1.6; empty: every GPU at the sidebar's "
             f"${price_per_gpu_hour:g}")
    max_gpus = right.number_input("max GPUs", value=16, min_value=1, step=1, key="plan_max_gpus")
    disaggregate = st.checkbox("also try P:D splits (--disaggregate auto)", key="plan_disagg")
    st.caption("The target load is the sidebar's workload at its rate scale. Replica counts are "
               "searched: one replica's capacity gives an estimate, verified at the target load "
               "behind the router, one fewer shown to miss.")
    if workload.error:
        st.error(f"error: {workload.error}")
        return
    try:
        request = PlanRequest(
            base=controls.build_options(workload.values, {"model": model,
                                                          "scheduler": "chunked"}),
            hardware=hardware, slo=parse_slo(slo_text),
            prices=(parse_prices(prices_text) if prices_text.strip()
                    else {name: price_per_gpu_hour for name in hardware}),
            max_gpus=int(max_gpus), disaggregate=disaggregate, tps=tps or None,
            token_budgets=parse_ints(budgets_text, "--token-budget"),
            max_num_seqs=parse_ints(seqs_text, "--max-num-seqs"))
        check_slo(request.slo)  # before the button: a typo shows at once
    except ValueError as exc:
        st.error(f"error: {exc}")
        return
    if st.button("Run plan", key="run_plan", type="primary"):
        bar = st.progress(0.0, text="planning...")

        def progress(done: int, total: int, candidate: Candidate) -> None:
            bar.progress(done / total, text=f"searched {describe(candidate)} ({done}/{total})")

        try:
            st.session_state[RESULT_KEY] = make_plan(request, backend=None, progress=progress)
        except ValueError as exc:
            bar.empty()
            st.error(f"error: {exc}")
            return
        bar.empty()
    plan = st.session_state.get(RESULT_KEY)
    if plan is not None:
        _show(plan)


def _show(plan: Plan) -> None:
    if plan.best is None:
        st.error(answer_line(plan))
    else:
        st.success(answer_line(plan))
    rows = pd.DataFrame(plan_rows(plan))
    feasible = rows[rows["feasible"]].sort_values("rank")
    st.dataframe(feasible.drop(columns=["feasible", "reason"]), hide_index=True)
    if plan.ranked:
        st.altair_chart(pareto_chart(plan), width="stretch")
    infeasible = rows[~rows["feasible"]]
    if len(infeasible):
        with st.expander(f"{len(infeasible)} families meet the target with no replica count"):
            st.dataframe(infeasible[["hardware", "tp", "scheduler", "token_budget",
                                     "max_num_seqs", "disaggregated", "reason"]],
                         hide_index=True)
    st.caption(f"{plan.num_simulations} simulations")
    left, middle, right = st.columns(3)
    left.download_button("plan.csv", plan_csv(plan), file_name="plan.csv", mime="text/csv",
                         key="dl_plan_csv")
    middle.download_button("plan.json", plan_json_text(plan), file_name="plan.json",
                           mime="application/json", key="dl_plan_json")
    if plan.best is not None:
        right.download_button("best.toml", best_toml(plan), file_name="best.toml",
                              mime="application/toml", key="dl_best_toml")


def _default_slo(slos: dict) -> str:
    parts = [f"{name}_p99={slos[key]:g}" for name, key in (("ttft", "slo_ttft_s"),
                                                           ("tpot", "slo_tpot_s"))
             if slos.get(key) is not None]
    return ",".join(parts) or "ttft_p99=2"

