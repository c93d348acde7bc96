"""The dashboard as Streamlit's AppTest drives it: every page renders, inputs change numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit", reason="the dashboard tests need the ui extra (streamlit, altair)")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
NUM_WHATIF_CHARTS = 6
"""Latency CDFs, TTFT/TPOT over time, KV memory, batch and queue, roofline, request timeline."""


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page is not None:
        at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def cards(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


@pytest.fixture(scope="module")
def default_app() -> AppTest:
    return start()


def test_default_run_renders_every_chart_and_card(default_app):
    at = default_app
    assert charts(at) == NUM_WHATIF_CHARTS
    values = cards(at)
    assert values["Requests finished"] == "500"
    for label in ("TTFT P50 (s)", "TTFT P99 (s)", "TPOT P99 (s)", "E2E P99 (s)",
                  "Output throughput (tok/s)", "Goodput (req/s)", "Cost per M output tokens ($)"):
        assert values[label] not in ("", "-"), label
    assert [b.label for b in at.get("download_button")] == ["summary.json", "requests.csv",
                                                            "config.toml"]
    assert any("priced by the measured:vllm-0.24.0/h100 cost model — auto: measured" in c.value
               for c in at.caption)
    assert not at.error


def test_choosing_the_roofline_cost_model_reprices_the_run_and_says_so():
    at = start()
    before = cards(at)
    at.sidebar.selectbox(key="cost_model").set_value("roofline").run()
    assert not at.exception and not at.error
    assert any("priced by the roofline cost model — roofline (--cost-model roofline)" in c.value
               for c in at.caption)
    assert cards(at)["TPOT P50 (s)"] != before["TPOT P50 (s)"]
    assert charts(at) == NUM_WHATIF_CHARTS


@pytest.mark.parametrize("key,value,card,setup", [
    ("scheduler", "static", "TTFT P99 (s)", {}),
    # Max-length reservation binds only when the pool is small for the load.
    ("allocator", "contiguous", "TTFT P99 (s)", {"num_gpu_blocks": 2500, "rate_scale": 4.0}),
    ("speculator", "tree", "TPOT P50 (s)", {}),
    ("decoding", "block-diffusion", "TPOT P50 (s)", {}),
])
def test_changing_a_policy_changes_the_metrics(key, value, card, setup):
    at = start()
    for name, number in setup.items():
        at.sidebar.number_input(key=name).set_value(number).run()
    before = cards(at)
    at.sidebar.selectbox(key=key).set_value(value).run()
    assert not at.exception and not at.error
    assert cards(at)[card] != before[card]
    assert charts(at) == NUM_WHATIF_CHARTS
    if key == "speculator":
        assert [h.value for h in at.subheader] == ["Speculative decoding"]
    if key == "decoding":
        assert [h.value for h in at.subheader] == ["Block diffusion"]


def test_speculator_that_needs_a_draft_model_says_so():
    at = start()
    at.sidebar.selectbox(key="speculator").set_value("draft").run()
    assert "needs --draft-model" in at.error[0].value
    at.sidebar.selectbox(key="draft_model").set_value("llama-3.2-1b").run()
    assert not at.error and charts(at) == NUM_WHATIF_CHARTS


def test_prefix_caching_allocator_lights_up_its_panel():
    at = start()
    at.sidebar.radio(key="trace_source").set_value("synthetic").run()
    assert not at.subheader
    at.sidebar.selectbox(key="allocator").set_value("paged-prefix").run()
    assert not at.exception and not at.error
    assert [h.value for h in at.subheader] == ["Prefix caching"]


def test_replicas_behind_a_router():
    at = start()
    at.sidebar.number_input(key="rate_scale").set_value(4.0).run()
    one = cards(at)
    at.sidebar.number_input(key="replicas").set_value(2).run()
    assert not at.exception and not at.error
    assert cards(at)["TTFT P99 (s)"] != one["TTFT P99 (s)"]


def test_changing_the_rate_scale_changes_the_metrics(default_app):
    at = start()
    at.sidebar.number_input(key="rate_scale").set_value(4.0).run()
    assert cards(at)["Output throughput (tok/s)"] != cards(default_app)["Output throughput (tok/s)"]


def test_impossible_config_is_an_error_not_a_traceback():
    at = start()
    at.sidebar.selectbox(key="model").set_value("llama-2-70b").run()
    assert not at.exception
    assert "raise --tp" in at.error[0].value
    assert charts(at) == 0


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    at.sidebar.radio(key="trace_source").set_value("upload").run()
    at.sidebar.file_uploader(key="trace_upload").set_value((name, content, "text/csv")).run()
    return at


def test_malformed_upload_shows_an_error_not_a_traceback():
    at = upload(start(), "mystery.csv", b"foo,bar\n1,2\n")
    assert not at.exception
    message = at.error[0].value
    assert message.startswith("error: mystery.csv: line 1: unknown trace format")
    assert "servesim-uploads" not in message
    assert charts(at) == 0


def test_upload_with_bad_rows_runs_and_reports_them_as_rejected():
    rows = b"TIMESTAMP,ContextTokens,GeneratedTokens\n" + b"".join(
        f"2023-11-16 18:15:{i:02d}.000,{100 + i},{20 + i}\n".encode() for i in range(40))
    rows += b"2023-11-16 18:16:00.000,lots,12\n"
    at = upload(start(), "mine.csv", rows)
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "40"
    assert "1 of 41 requests rejected (1 invalid trace rows)" in at.warning[0].value
    assert charts(at) == NUM_WHATIF_CHARTS


def test_json_lines_upload_with_prefix_hashes_runs():
    lines = [f'{{"timestamp": {i * 250}, "input_length": {600 + i}, "output_length": 16, '
             f'"hash_ids": [{i}, {i + 1}]}}' for i in range(30)]
    at = upload(start(), "mooncake.jsonl", "\n".join(lines).encode())
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "30"
    assert charts(at) == NUM_WHATIF_CHARTS


INFERENCE_PERF_DIR = Path(__file__).parent / "data" / "inference_perf"


def test_inference_perf_config_upload_runs_its_stages():
    config = (INFERENCE_PERF_DIR / "shared_prefix_two_stages.yaml").read_bytes()
    at = upload(start(), "team-benchmark.yaml", config)
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "48"  # 36 + 12: both stages of the config


def test_inference_perf_json_upload_is_read_as_a_config():
    config = (INFERENCE_PERF_DIR / "random_poisson.json").read_bytes()
    at = upload(start(), "bench.json", config)
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "500"  # the upload's default 500-request slice


def test_bad_inference_perf_upload_names_the_upload_not_the_stored_path():
    at = upload(start(), "broken.yaml", b"data:\n  type: telepathy\nload:\n  type: constant\n")
    assert not at.exception
    message = at.error[0].value
    assert message.startswith("error: broken.yaml") and "telepathy" in message
    assert "servesim-uploads" not in message and "inference-perf:" not in message


def test_oversized_upload_is_refused():
    at = upload(start(), "big.csv", b"x" * (33 * 1024 * 1024))
    assert not at.exception
    assert "over the upload limit" in at.error[0].value


def test_synthetic_workload():
    at = start()
    at.sidebar.radio(key="trace_source").set_value("synthetic").run()
    at.sidebar.number_input(key="synthetic_n").set_value(200).run()
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "200"
    at.sidebar.text_input(key="synthetic_arrivals").set_value("poisson:often").run()
    assert "bad arrival process" in at.error[0].value


def test_disaggregated_pools_run_and_a_bad_split_is_an_error():
    at = start()
    at.sidebar.text_input(key="disaggregate").set_value("1:1").run()
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "500" and charts(at) == NUM_WHATIF_CHARTS
    at.sidebar.text_input(key="disaggregate").set_value("one:two").run()
    assert not at.exception and at.error[0].value.startswith("error: ")


def test_workload_spec_takes_sessions_but_no_paths():
    at = start()
    at.sidebar.radio(key="trace_source").set_value("spec").run()
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "800"  # 200 sessions of 4 turns
    at.sidebar.text_input(key="trace_spec").set_value("/etc/passwd").run()
    assert "starts with synthetic: or sessions:" in at.error[0].value


def test_compare_page_shows_deltas_between_a_and_b():
    at = start("A/B compare")
    assert not at.error
    metrics = at.metric
    assert len(metrics) == 10
    assert any(m.proto.delta for m in metrics)
    assert charts(at) == 4
    at.selectbox(key="b.scheduler").set_value("continuous").run()
    deltas = {m.label: m.proto.delta for m in at.metric}
    assert deltas["TTFT P99 (s)"] == "0"


def test_sweep_page_finds_the_capacity_per_configuration():
    at = start("Sweep")
    at.text_area(key="sweep_configs").set_value("\nscheduler=static").run()
    at.text_input(key="sweep_rates").set_value("1, 8").run()
    at.button(key="run_sweep").click().run()
    assert not at.exception and not at.error
    capacity, points = at.dataframe[0].value, at.dataframe[1].value
    assert list(capacity["config"]) == ["base", "scheduler=static"]
    assert len(points) == 4
    assert charts(at) == 2


def test_sweep_rejects_an_unknown_option():
    at = start("Sweep")
    at.text_area(key="sweep_configs").set_value("schedular=static").run()
    assert "line 1: 'schedular=static' is not OPTION=VALUE" in at.error[0].value


def test_roofline_page_matches_the_cli_numbers():
    at = start("Roofline")
    assert not at.error and charts(at) == 1
    table = at.dataframe[0].value
    decode = table[(table["phase"] == "decode") & (table["group"] == "total")].iloc[0]
    assert decode["FLOP/byte"] == pytest.approx(1.0, abs=0.1)
    assert decode["bound"] == "memory"
    at.number_input(key="roof.batch").set_value(256).run()
    decode = at.dataframe[0].value.query("phase == 'decode' and group == 'linear'").iloc[0]
    assert decode["FLOP/byte"] > 100
    # A 32-position denoising step at batch 256 is compute-bound where decode is not yet.
    denoise = at.dataframe[0].value.query("phase == 'denoise' and group == 'linear'").iloc[0]
    assert denoise["FLOP/byte"] > 5 * decode["FLOP/byte"] and denoise["bound"] == "compute"


def _optional_panels_script(extra: dict) -> AppTest:
    def script(extra):
        from dataclasses import replace

        from sim.config import ReplayOptions
        from ui import panels
        from ui.runner import run

        view = run(ReplayOptions(max_requests=20))
        panels.optional_panels(replace(view, summary=view.summary | extra))

    return AppTest.from_function(script, args=(extra,), default_timeout=60).run()


def test_prefix_and_speculation_panels_appear_only_with_their_keys():
    at = _optional_panels_script({"prefix_hit_rate": None})
    assert not at.exception and not at.subheader and not at.metric
    at = _optional_panels_script({"prefix_hit_rate": 0.25, "spec_tokens_per_step_mean": 2.5,
                                  "spec_acceptance_rate": 0.6})
    assert [h.value for h in at.subheader] == ["Prefix caching", "Speculative decoding"]
    values = {m.label: m.value for m in at.metric}
    assert values["prefix_hit_rate"] == "0.25" and values["spec_tokens_per_step_mean"] == "2.5"
    assert values["spec_acceptance_rate"] == "0.6"


def test_model_box_takes_an_uploaded_config_json():
    config = (Path(__file__).parent / "data" / "hf_configs" / "Qwen3-8B" / "config.json").read_bytes()
    at = start()
    at.sidebar.file_uploader(key="model.config").set_value(("Qwen3-8B.json", config,
                                                            "application/json")).run()
    assert not at.exception and not at.error
    assert cards(at)["Requests finished"] == "500"
    assert cards(at)["TPOT P50 (s)"] != cards(start())["TPOT P50 (s)"]  # Qwen3-8B, not Llama-3-8B
    at.sidebar.file_uploader(key="model.config").set_value(("bad.json", b'{"model_type": "gpt2"}',
                                                            "application/json")).run()
    message = at.error[0].value
    assert message.startswith("error: bad.json: unknown architecture 'gpt2'")
    assert "servesim-uploads" not in message


def test_sweep_lines_take_catalog_models_not_paths():
    at = start("Sweep")
    at.text_area(key="sweep_configs").set_value("model=/etc/passwd").run()
    assert "model takes a catalog name here" in at.error[0].value


def test_the_default_slice_is_said_next_to_the_headline_numbers(default_app):
    """The dashboard replays 500 requests by default, `make demo` the whole trace: the page
    says so under the cards, so the two sets of numbers are not mistaken for one."""
    notes = [c.value for c in default_app.caption if "first 500 requests" in c.value]
    assert len(notes) == 1
    assert "make demo" in notes[0] and "clear max_requests" in notes[0]
