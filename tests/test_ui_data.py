"""The dashboard's plain functions: tables from results, sweeps, uploads, config export."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pd = pytest.importorskip("pandas", reason="the dashboard tests need the ui extra")

from sim.cli import main  # noqa: E402
from sim.config import ReplayOptions  # noqa: E402
from ui import data, sweep  # noqa: E402
from ui.runner import run  # noqa: E402
from ui.upload import UploadError, safe_name, store_upload, trace_spec, user_message  # noqa: E402

OPTIONS = ReplayOptions(max_requests=120, slo_ttft_s=1.0, slo_tpot_s=0.05)


@pytest.fixture(scope="module")
def view() -> data.RunView:
    return run(OPTIONS)


def tiny_view(view, iterations: dict, total_slots: int = 100) -> data.RunView:
    frame = pd.DataFrame(iterations)
    return replace(view, iterations=frame, kv_total_slots=total_slots)


def test_run_view_keeps_every_trace_row_and_iteration(view):
    assert len(view.requests) == 120
    assert set(view.iterations["replica"]) == {0}
    assert list(view.requests.columns)[:3] == ["request_id", "status", "reason"]
    assert len(view.iterations) == view.summary["iterations"]
    assert (view.iterations["flops"] > 0).all() and (view.iterations["bytes_moved"] > 0).all()


def test_binned_iterations_weight_by_duration_and_split_kv_states(view):
    v = tiny_view(view, {
        "start_s": [0.0, 1.0, 10.0], "duration_s": [1.0, 3.0, 2.0], "batch_size": [2, 6, 1],
        "num_waiting": [0, 4, 0], "kv_reserved_slots": [40, 80, 10], "kv_filled_slots": [20, 60, 10],
        "kv_cached_free_slots": [0, 8, 5],
        "new_tokens": [2, 6, 1], "prefill_tokens": [0, 0, 0], "flops": [1.0] * 3,
        "bytes_moved": [1.0] * 3,
    })
    binned = data.binned_iterations(v, num_bins=2)  # bins [0, 6) and [6, 12)
    assert list(binned["time_s"]) == [3.0, 9.0]
    assert binned["batch_size"].tolist() == [pytest.approx((2 * 1 + 6 * 3) / 4), 1.0]
    assert binned["kv_used_slots"].tolist() == [pytest.approx(50.0), 10.0]
    assert binned["kv_held_empty_slots"].tolist() == [pytest.approx(20.0), 0.0]
    assert binned["kv_cached_slots"].tolist() == [pytest.approx(6.0), 5.0]
    assert binned["kv_free_slots"].tolist() == [pytest.approx(24.0), 85.0]
    assert binned["kv_frag"].tolist() == [pytest.approx(20 / 70), 0.0]
    kv = data.kv_long(binned)
    assert sorted(set(kv["state"])) == ["cached", "free", "held, empty", "used"]
    assert kv.groupby("time_s")["share"].sum().tolist() == [pytest.approx(1.0)] * 2
    assert kv.query("state == 'used'")["share"].tolist() == [pytest.approx(0.5), pytest.approx(0.1)]


def test_latency_cdf_runs_from_min_to_max(view):
    cdf = data.latency_cdf(view.requests)
    ttft = cdf[cdf["metric"] == "TTFT"]
    assert len(ttft) == data.CDF_POINTS
    assert ttft["latency_s"].iloc[0] == pytest.approx(view.requests["ttft_s"].min())
    assert ttft["latency_s"].iloc[-1] == pytest.approx(view.requests["ttft_s"].max())
    assert ttft["latency_s"].is_monotonic_increasing


def test_timeline_phases_follow_each_request(view):
    rows = data.timeline(view.requests, 0.0, 1e9, 1e9, max_requests=5)
    first = view.requests.iloc[0]
    mine = rows[rows["request_id"] == first["request_id"]].set_index("phase")
    assert mine.loc["queued", "from_s"] == first["arrival_s"]
    assert mine.loc["prefill", "to_s"] == first["first_token_s"]
    assert mine.loc["decode", "to_s"] == first["finish_s"]
    assert rows["request_id"].nunique() == 5


def test_cost_per_million_tokens_bills_every_gpu_for_the_span(view):
    s = view.summary
    tokens = s["output_throughput_tok_s"] * s["simulated_span_s"]
    expected = 2.0 * s["simulated_span_s"] / 3600 / (tokens / 1e6)
    assert data.cost_per_million_tokens(view, 2.0) == pytest.approx(expected)
    tp2 = replace(view, options=replace(view.options, tp=2))
    assert data.cost_per_million_tokens(tp2, 2.0) == pytest.approx(2 * expected)


def test_slo_attainment_counts_requests_within_the_slos(view):
    finished = view.requests[view.requests["status"] == "finished"]
    ok = (finished["ttft_s"] <= 1.0) & (finished["tpot_s"].fillna(0) <= 0.05)
    assert data.slo_attainment(view.summary) == pytest.approx(ok.sum() / 120)
    assert data.slo_attainment(view.summary | {"goodput_req_s": None}) is None


def test_iteration_intensity_labels_kinds(view):
    points = data.iteration_intensity(view)
    assert set(points["kind"]) <= {"decode only", "prefill only", "mixed"}
    assert "decode only" in set(points["kind"])
    decode = points[points["kind"] == "decode only"]
    assert decode["intensity_flops_per_byte"].min() > 0.5


def test_exported_toml_reproduces_the_run_with_the_cli(view, tmp_path):
    path = tmp_path / "servesim.toml"
    path.write_text(view.config_toml())
    assert main(["replay", "--quiet", "--config", str(path), "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == view.summary
    assert view.requests_csv().splitlines()[0].startswith("request_id,status,reason")
    assert json.loads(view.summary_json()) == view.summary


def test_exported_toml_names_the_uploaded_file(view):
    text = view.config_toml("mine.csv")
    assert 'trace = "mine.csv"' in text and "put it next to this file" in text


def test_compare_table_deltas():
    table = data.compare_table({"x": 2.0, "y": None}, {"x": 3.0, "y": 1.0}, ["x", "y"])
    assert table.loc[0, "B - A"] == 1.0 and table.loc[0, "change"] == 0.5
    assert pd.isna(table.loc[1, "B - A"])


def test_sweep_configs_parse_option_names_and_types():
    configs = sweep.parse_configs("\nscheduler=static\nallocator=contiguous, reserve=oracle, "
                                  "max-num-seqs=8\nnum_gpu_blocks=none")
    assert [c.label for c in configs][0] == "base"
    assert configs[1].overrides == {"scheduler": "static"}
    assert configs[2].overrides == {"allocator": "contiguous", "reserve": "oracle", "max_num_seqs": 8}
    assert configs[3].overrides == {"num_gpu_blocks": None}


@pytest.mark.parametrize("text,message", [
    ("scheduler", "line 1: 'scheduler' is not OPTION=VALUE"),
    ("\nbogus=1", "line 2: 'bogus=1'"),
    ("max_num_seqs=many", "max_num_seqs='many': expected int"),
    ("rate_scale=2", "set by the sweep itself"),
])
def test_sweep_configs_reject_bad_lines(text, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_configs(text)


def test_sweep_rates():
    assert sweep.parse_rates("4, 1,1, 0.5") == [0.5, 1.0, 4.0]
    for bad in ("", "0", "-1", "fast", "nan"):
        with pytest.raises(ValueError, match="rate scales"):
            sweep.parse_rates(bad)


def test_capacity_is_the_last_passing_rate_before_the_first_failure():
    points = pd.DataFrame({
        "config": ["a"] * 4 + ["b"] * 2,
        "rate_scale": [1, 2, 4, 8, 1, 2],
        "offered_req_s": [1.0, 2.0, 4.0, 8.0, 1.0, 2.0],
        "goodput_req_s": [1.0, 2.0, 1.0, 7.9, 0.5, 0.1],
        "slo_attainment": [1.0, 0.95, 0.5, 0.99, 0.5, 0.1],
    })
    result = sweep.capacity(points, 0.9).set_index("config")
    assert result.loc["a", "max_rate_scale"] == 2
    assert result.loc["a", "max_offered_req_s"] == 2.0
    assert pd.isna(result.loc["b", "max_rate_scale"])


def test_store_upload_is_content_addressed_and_capped(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first = store_upload("../../etc/my trace.csv", b"a,b\n")
    assert first.name == "my_trace.csv" and first.parent.parent == tmp_path / "servesim-uploads"
    assert store_upload("../../etc/my trace.csv", b"a,b\n") == first
    assert store_upload("my trace.csv", b"a,c\n") != first
    with pytest.raises(UploadError, match="over the upload limit of 10 bytes"):
        store_upload("x.csv", b"0123456789!", limit_bytes=10)
    with pytest.raises(UploadError, match="empty"):
        store_upload("x.csv", b" \n ")
    assert safe_name("..") == "trace"
    assert user_message(ValueError(f"{first}: bad"), first, "mine.csv") == "mine.csv: bad"



def test_run_view_of_several_replicas_keeps_each_replicas_iterations():
    view = run(OPTIONS.updated({"replicas": 2, "rate_scale": 4.0}))
    per_replica = view.iterations.groupby("replica").size()
    assert list(per_replica.index) == [0, 1]
    assert per_replica.sum() == view.summary["iterations"]
    for _, group in view.iterations.groupby("replica"):
        assert group["start_s"].is_monotonic_increasing
    assert (view.iterations["flops"] > 0).all()


def test_run_view_carries_the_run_notes_the_cli_prints(view):
    assert view.run_notes == ()  # the bundled trace's default run needs no note
    cached = run(OPTIONS.updated({"allocator": "paged-prefix"}))
    assert len(cached.run_notes) == 1
    assert "prefix_hit_rate is 0 because trace" in cached.run_notes[0]


def test_trace_spec_tells_inference_perf_configs_from_trace_files(tmp_path):
    yaml_config = tmp_path / "bench.yml"
    yaml_config.write_text("data: {type: random}\n")
    json_config = tmp_path / "bench.json"
    json_config.write_text('{"load": {"type": "constant"}}')
    json_rows = tmp_path / "rows.json"
    json_rows.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n')
    csv_trace = tmp_path / "trace.csv"
    csv_trace.write_text("a,b\n")
    assert trace_spec(yaml_config) == f"inference-perf:{yaml_config}"
    assert trace_spec(json_config) == f"inference-perf:{json_config}"
    assert trace_spec(json_rows) == str(json_rows)
    assert trace_spec(csv_trace) == str(csv_trace)
    spec = trace_spec(yaml_config)
    assert user_message(ValueError(f"{yaml_config}: data.type: bad"), spec, "mine.yml") == \
        "mine.yml: data.type: bad"
