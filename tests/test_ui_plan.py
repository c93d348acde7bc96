"""The dashboard's Plan page as Streamlit's AppTest drives it: the CLI's search and answer."""

from __future__ import annotations

import pytest

from sim.config import ReplayOptions
from sim.plan.planner import PlanRequest, make_plan
from sim.plan.report import answer_line

pytest.importorskip("streamlit", reason="the dashboard tests need the ui extra (streamlit, altair)")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.test_ui_app import APP  # noqa: E402


def plan_page(max_requests: int = 60) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.sidebar.radio(key="page").set_value("Plan").run()
    at.sidebar.number_input(key="max_requests").set_value(max_requests).run()
    assert not at.exception, at.exception
    return at


def test_plan_page_answers_with_a_minimal_configuration_and_its_files():
    at = plan_page()
    at.sidebar.number_input(key="rate_scale").set_value(30.0).run()
    at.text_input(key="plan_slo").set_value("ttft_p99=0.3,tpot_p99=0.05").run()
    at.text_input(key="plan_prices").set_value("h100=2.5").run()
    at.button(key="run_plan").click().run()
    assert not at.exception and not at.error
    [answer] = at.success
    slo = {"ttft_p99_s": 0.3, "tpot_p99_s": 0.05}
    cli = make_plan(PlanRequest(ReplayOptions(max_requests=60, rate_scale=30.0,
                                              scheduler="chunked"), ["h100"], slo,
                                prices={"h100": 2.5}, max_gpus=16, tps=[1],
                                token_budgets=[2048], max_num_seqs=[256]), backend=None)
    assert answer.value == answer_line(cli)
    assert answer.value.startswith(f"{cli.best.num_gpus} x H100 (TP 1, ")
    table = at.dataframe[0].value
    assert list(table["replicas"]) == [cli.best.replicas]
    assert table["fewer_replicas_misses"][0] == cli.best.fewer[0].misses
    assert len(at.get("vega_lite_chart")) == 1
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["plan.csv", "plan.json", "best.toml"]


def test_plan_page_bad_slo_is_an_error_line():
    at = plan_page()
    at.text_input(key="plan_slo").set_value("ttft_p42=1").run()
    assert not at.exception
    assert at.error[0].value.startswith("error: unknown SLO metric 'ttft_p42'")
