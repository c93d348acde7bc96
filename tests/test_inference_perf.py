"""inference-perf configs as traces: prompt sets, stages, the closed loop, and bad files."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from sim.api import simulate
from sim.cli import main
from sim.config import ReplayOptions, load_workload, resolve
from sim.metrics import group_finished, sample_groups
from traces.closed_loop import ClosedLoop, ClosedLoopStage
from traces.inference_perf.lengths import LengthSpec
from traces.inference_perf.workload import DEFAULT_PROMPT_INFLATION, load_inference_perf
from traces.trace import TraceFormatError

DATA = Path(__file__).resolve().parent / "data" / "inference_perf"
TWO_STAGES = DATA / "shared_prefix_two_stages.yaml"
CLOSED_LOOP = DATA / "closed_loop.yaml"


def _trace(path: Path, **options):
    return load_workload(ReplayOptions(trace=f"inference-perf:{path}",
                                       **{"model": "llama-2-7b", **options}))


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(tmp_path: Path, *argv: str) -> list[dict]:
    out = tmp_path / "out"
    assert main(["replay", "--quiet", "--model", "llama-2-7b", "--hardware", "h100",
                 *argv, "--out", str(out)]) == 0
    with (out / "requests.csv").open() as fh:
        return list(csv.DictReader(fh))


# ---- prompt sets ---------------------------------------------------------------------------

def test_prompts_cycle_per_stage_and_share_one_tuple_per_prompt():
    trace = _trace(TWO_STAGES, prompt_inflation=1.0)
    requests = trace.requests
    assert [sum(r.stage == s for r in requests) for s in (0, 1)] == [36, 12]
    prompt_set = [r.prompt_token_ids for r in requests[:12]]
    assert len({id(ids) for ids in prompt_set}) == 12 and len(set(prompt_set)) == 12
    for position, request in enumerate(requests[:36]):
        assert request.prompt_token_ids is prompt_set[position % 12]  # shared, not copied
    for position, request in enumerate(requests[36:]):
        assert request.prompt_token_ids is prompt_set[position]  # the cycle restarts
    assert {r.prompt_tokens for r in requests} == {70} and {r.output_tokens for r in requests} == {4}


def test_groups_share_their_system_prompt_and_nothing_else():
    prompts = [r.prompt_token_ids for r in _trace(TWO_STAGES, prompt_inflation=1.0).requests[:12]]
    systems = [ids[:40] for ids in prompts]
    assert sorted(systems.count(s) for s in set(systems)) == [4, 4, 4]
    assert len({ids[40:] for ids in prompts}) == 12
    # Shuffled: the set is not sent group after group.
    assert [systems.index(s) for s in systems] != sorted(systems.index(s) for s in systems)


def test_the_same_config_and_seed_give_the_same_prompts_and_another_seed_others():
    first, again = _trace(TWO_STAGES), _trace(TWO_STAGES)
    other = _trace(TWO_STAGES, seed=1)
    assert [r.prompt_token_ids for r in first.requests] == [r.prompt_token_ids for r in again.requests]
    assert first.requests[0].prompt_token_ids != other.requests[0].prompt_token_ids


def test_token_ids_lie_in_the_served_models_vocabulary():
    ids = np.array(_trace(TWO_STAGES, model="tiny-llama").requests[0].prompt_token_ids)
    assert ids.min() >= 0 and ids.max() < 512


@pytest.mark.parametrize("inflation,system_tokens,prompt_tokens,expected_hit_rate", [
    # 40 + 30 tokens in 16-token blocks. First pass over the 12 prompts: each group's first
    # prompt misses, its 3 others hit the system prompt's 2 full blocks (32 tokens). Every
    # later request (24 more in stage 0, 12 in stage 1) repeats a prompt: all its full blocks
    # but one holding the last token ((70 - 1) // 16 = 4 blocks, 64 tokens).
    (1.0, 40, 70, (9 * 32 + 36 * 64) / (48 * 70)),
    # Inflated 1.25x: system 50 (3 blocks), question 37.5 -> 38, prompt 88 (5 blocks).
    (1.25, 50, 88, (9 * 48 + 36 * 80) / (48 * 88)),
])
def test_prefix_hit_rate_is_what_the_prompt_set_implies(tmp_path, inflation, system_tokens,
                                                         prompt_tokens, expected_hit_rate):
    trace = _trace(TWO_STAGES, prompt_inflation=inflation)
    assert {r.prompt_tokens for r in trace.requests} == {prompt_tokens}
    systems = {r.prompt_token_ids[:system_tokens] for r in trace.requests}
    assert len(systems) == 3  # inflation keeps the groups' sharing intact
    _run(tmp_path, "--trace", f"inference-perf:{TWO_STAGES}", "--allocator", "paged-prefix",
         "--prompt-inflation", str(inflation))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["requests_finished"] == 48 and summary["evictions"] == 0
    assert summary["prefix_hit_rate"] == pytest.approx(expected_hit_rate, rel=1e-12)


def test_random_data_cycles_length_pairs_and_shares_no_content():
    trace = _trace(DATA / "random_poisson.json", prompt_inflation=1.0)
    requests = trace.requests
    assert all(r.prompt_token_ids is None for r in requests)
    stage1 = [r for r in requests if r.stage == 1]
    assert len(requests) == 1500 and len(stage1) == 1000
    pairs = [(r.prompt_tokens, r.output_tokens) for r in requests[:500]]
    assert [(r.prompt_tokens, r.output_tokens) for r in stage1] == pairs + pairs
    assert all(20 <= p <= 400 and 5 <= o <= 200 for p, o in pairs)


@pytest.mark.parametrize("spec,mean", [
    (LengthSpec("normal", 10, 1000, 300, 50), 300),
    # Azzalini: mean + std_dev x delta x sqrt(2 / pi), delta = skew / sqrt(1 + skew^2).
    (LengthSpec("skew_normal", 10, 1000, 300, 50, skew=4.0),
     300 + 50 * (4 / 17 ** 0.5) * (2 / np.pi) ** 0.5),
    (LengthSpec("lognormal", 1, 10_000, 300, 150), 300),
    (LengthSpec("uniform", 100, 500), 300),
    (LengthSpec("poisson", 1, 1000, 300), 300),
    (LengthSpec("fixed", 10, 1024, 300, 0), 300),
])
def test_length_distributions_keep_to_bounds_and_mean(spec, mean):
    draws = spec.sample(20_000, np.random.default_rng(0))
    assert draws.dtype == np.int64
    assert draws.min() >= spec.min_tokens and draws.max() <= spec.max_tokens
    assert draws.mean() == pytest.approx(mean, rel=0.02)


def test_distributions_are_clamped_to_min_and_max():
    draws = LengthSpec("normal", 90, 110, 100, 1000).sample(1000, np.random.default_rng(0))
    assert set(np.unique(draws)) <= set(range(90, 111)) and (draws == 90).mean() > 0.4


# ---- open-loop stages ----------------------------------------------------------------------

def test_constant_stages_fill_each_stage_with_rescaled_exponential_gaps():
    """inference-perf's constant timer: int(rate x duration) exponential gaps rescaled to add
    up to the stage, so the last request goes at the stage's end; stages run back to back."""
    requests = _trace(TWO_STAGES).requests
    times = np.array([r.arrival_time_s for r in requests])
    assert [r.request_id for r in requests] == list(range(48))
    assert np.all(np.diff(times) > 0) and times[0] > 0
    assert times[35] == pytest.approx(18.0, abs=1e-9) and times[47] == pytest.approx(21.0, abs=1e-9)
    assert 18.0 < times[36] < 21.0
    assert not np.allclose(np.diff(times[:36]), 0.5)  # random, not evenly spaced


def test_constant_gaps_are_exponential_at_the_stage_rate(tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text(GOOD_DATA + "load: {type: constant, stages: [{rate: 10, duration: 400}]}\n")
    gaps = np.diff([0.0] + [r.arrival_time_s for r in _trace(config).requests])
    assert len(gaps) == 4000 and gaps.sum() == pytest.approx(400.0)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 10)).pvalue > 1e-3


def test_poisson_stages_send_poisson_counts_per_second():
    """inference-perf's Poisson timer: each second a Poisson(rate) count, spread over it."""
    requests = _trace(DATA / "random_poisson.json").requests
    stage0 = np.array([r.arrival_time_s for r in requests if r.stage == 0])
    stage1 = np.array([r.arrival_time_s for r in requests if r.stage == 1])
    assert len(stage0) == 500 and len(stage1) == 1000
    assert np.all(np.diff(stage0) > 0) and np.all(np.diff(stage1) > 0)
    # the next stage starts at the later of the stage's end (100 s) and its last send
    assert stage1.min() > max(100.0, stage0.max())
    counts = np.bincount(np.floor(stage1 - stage1.min()).astype(int))[:-1]  # whole seconds
    assert counts.mean() == pytest.approx(20, rel=0.15)
    assert counts.var() == pytest.approx(20, rel=0.5)  # Poisson: variance = mean


def test_real_recorded_configs_read_as_inference_perf_read_them():
    config = _trace(DATA / "llama-2-70b-general.config.yaml")
    assert [sum(r.stage == s for r in config.requests) for s in (0, 1)] == [4800, 12000]
    assert len({id(r.prompt_token_ids) for r in config.requests}) == 100  # 10 x 10 defaults
    # 100 and 447 tokens, each x1.046 (105 + 468): the recorded prompt_len mean is 574.9.
    assert {r.prompt_tokens for r in config.requests} == {573}
    assert config.requests[4799].arrival_time_s == pytest.approx(600.0)
    assert 600.0 < config.requests[4800].arrival_time_s < 601.0
    assert any("interval" in note for note in config.notes)
    profile = _trace(DATA / "llama-2-70b-general.profile.yaml")  # JSON, alias names
    assert len({id(r.prompt_token_ids) for r in profile.requests}) == 9 * 5
    assert any("enable_multi_turn_chat" in note for note in profile.notes)
    reasoning = _trace(DATA / "codellama-34b-reasoning.config.yaml", max_requests=300)
    assert len(reasoning.requests) == 300
    assert {(r.prompt_tokens, r.output_tokens) for r in reasoning.requests} == {(1082, 1448)}


def test_stage_column_in_requests_csv(tmp_path):
    rows = _run(tmp_path, "--trace", f"inference-perf:{TWO_STAGES}")
    assert [row["stage"] for row in rows] == ["0"] * 36 + ["1"] * 12
    assert float(rows[35]["arrival_s"]) == pytest.approx(18.0, abs=1e-6)
    assert 18.0 < float(rows[36]["arrival_s"]) < 21.0
    plain = _run(tmp_path, "--trace", "synthetic:n=5,arrivals=poisson:2,prompt=fixed:50,output=fixed:3")
    assert [row["stage"] for row in plain] == ["0"] * 5


# ---- prompt inflation ----------------------------------------------------------------------

def test_prompt_inflation_defaults_to_the_fitted_factor_and_is_an_option(tmp_path):
    default = _trace(TWO_STAGES).requests[0]
    assert DEFAULT_PROMPT_INFLATION == 1.046
    assert default.prompt_tokens == 42 + 31  # round(40 x 1.046) + round(30 x 1.046)
    config = _write(tmp_path, f'trace = "inference-perf:{TWO_STAGES}"\nprompt-inflation = 1.5\n',
                    "run.toml")
    rows = _run(tmp_path, "--config", str(config), "--max-requests", "3")
    assert {row["prompt_tokens"] for row in rows} == {str(60 + 45)}
    synthetic = _write(tmp_path, "data: {type: synthetic, input_distribution: {type: fixed, "
                                 "mean: 100}, output_distribution: {type: fixed, mean: 5}}\n"
                                 "load: {stages: [{rate: 1, duration: 3}]}\n")
    assert {r.prompt_tokens for r in _trace(synthetic).requests} == {100}  # real text: x1


@pytest.mark.parametrize("argv,message", [
    (["--prompt-inflation", "1.1"], "--prompt-inflation applies to inference-perf:PATH traces only"),
    (["--trace", f"inference-perf:{TWO_STAGES}", "--prompt-inflation", "0.5"],
     "--prompt-inflation must lie in [1, 4]"),
    (["--trace", f"inference-perf:{TWO_STAGES}", "--arrivals", "poisson:3"],
     "--arrivals does not apply to an inference-perf config"),
    (["--trace", f"inference-perf:{CLOSED_LOOP}", "--rate-scale", "2"],
     "--rate-scale cannot apply to the closed-loop trace"),
    (["--trace", f"inference-perf:{CLOSED_LOOP}", "--window-end-s", "5"],
     "--window-start-s/--window-end-s cannot apply to the closed-loop trace"),
    (["--trace", f"inference-perf:{CLOSED_LOOP}", "--pace", "asap"],
     "--pace asap cannot apply to the closed-loop trace"),
])
def test_options_that_do_not_apply_are_errors(argv, message, capsys):
    assert main(["replay", "--quiet", "--model", "llama-2-7b", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_open_loop_transforms_still_apply():
    scaled = _trace(TWO_STAGES, rate_scale=2.0).requests
    plain = _trace(TWO_STAGES).requests
    assert [r.arrival_time_s for r in scaled] == pytest.approx([r.arrival_time_s / 2 for r in plain])
    windowed = _trace(TWO_STAGES, window_start_s=18.001).requests
    assert len(windowed) == 12 and {r.stage for r in windowed} == {1}


# ---- closed loop ---------------------------------------------------------------------------

def _closed_loop_config(stages: list[tuple[int, int]], inputs: str, outputs: str) -> str:
    listed = ", ".join(f"{{num_requests: {n}, concurrency_level: {c}}}" for n, c in stages)
    return (f"data: {{type: random, input_distribution: {inputs}, "
            f"output_distribution: {outputs}}}\n"
            f"load: {{type: concurrent, stages: [{listed}]}}\n")


def _check_closed_loop(results, stages: list[tuple[int, int]]) -> None:
    """From the simulated requests: every one finished; at most a stage's concurrency in
    flight at any send; a stage starts when the one before has drained; past the first
    `concurrency` of a stage, each request is sent the instant an earlier one finished."""
    groups = sample_groups(results.engines)  # each request's samples (--n)
    requests = results.config.trace.requests
    assert sorted(groups) == list(range(len(requests)))
    assert all(group_finished(group) for group in groups.values())
    send = {i: group[0].request.arrival_time_s for i, group in groups.items()}
    finish = {i: max(s.finish_s for s in group) for i, group in groups.items()}
    assert all(finish[i] >= send[i] for i in send)
    start = 0
    for stage, (count, concurrency) in enumerate(stages):
        ids = range(start, start + count)
        assert {requests[i].stage for i in ids} == {stage}
        for i in ids:
            in_flight = sum(1 for j in ids if send[j] <= send[i] < finish[j])
            assert in_flight <= concurrency
        if start:
            assert send[start] == max(finish[j] for j in range(start))
        for i in list(ids)[concurrency:]:
            assert any(finish[j] == send[i] for j in range(start, i))
        assert [send[i] for i in ids] == sorted(send[i] for i in ids)
        start += count


def test_closed_loop_keeps_concurrency_and_records_send_times(tmp_path):
    options = ReplayOptions(trace=f"inference-perf:{CLOSED_LOOP}", model="llama-2-7b")
    results = simulate(resolve(options))
    _check_closed_loop(results, [(20, 4), (7, 2)])
    rows = results.request_rows()
    sends = {i: s.request.arrival_time_s for i, s in results.sequences.items()}
    assert [row["arrival_s"] for row in rows] == [sends[i] for i in range(27)]
    assert len(set(sends.values())) > 10  # sent over time, not at once
    e2e = [row["e2e_s"] for row in rows]
    assert e2e == pytest.approx([row["finish_s"] - row["arrival_s"] for row in rows])
    assert results.summary["e2e_mean_s"] == pytest.approx(np.mean(e2e))


def test_closed_loop_at_the_horizon_leaves_unsent_requests_without_a_send_time():
    options = ReplayOptions(trace=f"inference-perf:{CLOSED_LOOP}", model="llama-2-7b",
                            horizon_s=0.05)
    rows = simulate(resolve(options)).request_rows()
    unsent = [row for row in rows if row["reason"] == "not sent before the horizon (closed loop)"]
    assert unsent and all(row["arrival_s"] is None for row in unsent)
    assert len(unsent) < len(rows)


def test_max_requests_cuts_closed_loop_stages():
    trace = _trace(CLOSED_LOOP, max_requests=22)
    assert trace.closed_loop == (ClosedLoopStage(20, 4), ClosedLoopStage(2, 2))
    assert len(trace.requests) == 22


def test_closed_loop_bookkeeping_refuses_extra_completions():
    loop = ClosedLoop(_trace(CLOSED_LOOP).requests[:2], [ClosedLoopStage(2, 1)])
    assert len(loop.due()) == 1 and loop.due() == []
    loop.finished()
    assert len(loop.due()) == 1 and loop.all_sent
    loop.finished()
    with pytest.raises(RuntimeError):
        loop.finished()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 4)), min_size=1, max_size=3),
       replicas=st.sampled_from([1, 2]), n=st.sampled_from([1, 2]), seed=st.integers(0, 99))
def test_closed_loop_never_exceeds_concurrency(tmp_path_factory, stages, replicas, n, seed):
    path = tmp_path_factory.mktemp("cl") / "cl.yaml"
    path.write_text(_closed_loop_config(
        stages, "{type: uniform, min: 1, max: 80, total_count: 7}",
        "{type: uniform, min: 1, max: 30, total_count: 5}"))
    options = ReplayOptions(trace=f"inference-perf:{path}", model="llama-2-7b", seed=seed,
                            replicas=replicas, n=n, max_num_seqs=3)
    _check_closed_loop(simulate(resolve(options)), stages)


def test_closed_loop_counts_a_rejected_request_as_done(tmp_path):
    # Prompts of 3000-4000 tokens with max_model_len 3500: some never fit, and are rejected
    # at once; their slots free at once too.
    path = _write(tmp_path, _closed_loop_config(
        [(12, 2)], "{type: uniform, min: 3000, max: 4000, total_count: 12}",
        "{type: fixed, mean: 10}"))
    options = ReplayOptions(trace=f"inference-perf:{path}", model="llama-2-7b",
                            max_model_len=3500, prompt_inflation=1.0)
    results = simulate(resolve(options))
    statuses = [row["status"] for row in results.request_rows()]
    assert "rejected" in statuses and "finished" in statuses
    assert statuses.count("rejected") + statuses.count("finished") == 12


def test_disaggregated_closed_loop_keeps_concurrency():
    options = ReplayOptions(trace=f"inference-perf:{CLOSED_LOOP}", model="llama-2-7b",
                            disaggregate="1:1")
    _check_closed_loop(simulate(resolve(options)), [(20, 4), (7, 2)])


# ---- bad files -----------------------------------------------------------------------------

GOOD_DATA = "data: {type: shared_prefix, shared_prefix: {num_groups: 2}}\n"
GOOD_LOAD = "load: {type: constant, stages: [{rate: 1, duration: 5}]}\n"


@pytest.mark.parametrize("name,text,message", [
    ("unknown_data_type.yaml", "data: {type: sharegpt}\n" + GOOD_LOAD,
     "data.type must be one of shared_prefix, random, synthetic, got 'sharegpt'"),
    ("unknown_load_type.yaml", GOOD_DATA + "load: {type: sweep, stages: [{rate: 1, duration: 5}]}\n",
     "load.type must be one of constant, poisson, concurrent, got 'sweep'"),
    ("missing_rate.yaml", GOOD_DATA + "load: {stages: [{duration: 5}]}\n",
     "load.stages[0].rate is missing"),
    ("missing_data_type.yaml", "data: {shared_prefix: {}}\n" + GOOD_LOAD, "data.type is missing"),
    ("missing_load.yaml", GOOD_DATA, "load is missing"),
    ("negative_rate.yaml",
     GOOD_DATA + "load: {stages: [{rate: 1, duration: 5}, {rate: -2, duration: 5}]}\n",
     "load.stages[1].rate must be positive, got -2"),
    ("negative_duration.yaml", GOOD_DATA + "load: {stages: [{rate: 1, duration: -5}]}\n",
     "load.stages[0].duration must be positive, got -5"),
    ("zero_concurrency.yaml", GOOD_DATA + "load: {type: concurrent, stages: [{num_requests: 4, "
                                          "concurrency_level: 0}]}\n",
     "load.stages[0].concurrency_level must be >= 1, got 0"),
    ("rate_in_concurrent.yaml", GOOD_DATA + "load: {type: constant, stages: [{rate: 1, duration: 5, "
                                            "concurrency_level: 3}]}\n",
     "load.stages[0].concurrency_level belongs to concurrent stages"),
    ("typo.yaml", "data: {type: shared_prefix, shared_prefix: {num_group: 3}}\n" + GOOD_LOAD,
     "data.shared_prefix.num_group is not an inference-perf field here"),
    ("bad_distribution.yaml", "data: {type: shared_prefix, shared_prefix: {question_len: "
                              "{min: 50, max: 10}}}\n" + GOOD_LOAD,
     "data.shared_prefix.question_len: min (50) must not exceed max (10)"),
    ("bad_distribution_type.yaml", "data: {type: shared_prefix, shared_prefix: {output_len: "
                                   "{type: zipf}}}\n" + GOOD_LOAD,
     "data.shared_prefix.output_len.type must be one of normal, skew_normal"),
    ("both_aliases.yaml", "data: {type: shared_prefix, shared_prefix: {num_groups: 3, "
                          "num_unique_system_prompts: 9}}\n" + GOOD_LOAD,
     "data.shared_prefix.num_groups and num_unique_system_prompts name the same field"),
    ("no_stages.yaml", GOOD_DATA + "load: {type: constant, stages: []}\n",
     "load.stages must be a non-empty list of stages, got []"),
    ("too_few.yaml", GOOD_DATA + "load: {stages: [{rate: 0.1, duration: 5}]}\n",
     "load.stages send no requests"),
    ("sweep.yaml", GOOD_DATA + "load: {stages: [{rate: 1, duration: 5}], sweep: {type: linear}}\n",
     "load.sweep (a search for the server's saturation rate) is not modelled"),
    ("multimodal.yaml", "data: {type: shared_prefix, multimodal: {image: {count: 1}}}\n" + GOOD_LOAD,
     "data.multimodal is not modelled by servesim"),
    ("zero_input.yaml", "data: {type: random, input_distribution: {min: 0, mean: 5}, "
                        "output_distribution: {mean: 5}}\n" + GOOD_LOAD,
     "data.input_distribution must draw at least 1 token, not as few as 0"),
    ("random_without_input.yaml", "data: {type: random, output_distribution: {mean: 5}}\n" + GOOD_LOAD,
     "data.input_distribution is missing"),
    ("zero_output.yaml", "data: {type: shared_prefix, shared_prefix: {output_len: 0}}\n" + GOOD_LOAD,
     "data.shared_prefix.output_len must draw at least 1 token, not as few as 0"),
    ("empty_prompt.yaml", "data: {type: shared_prefix, shared_prefix: {system_prompt_len: 0, "
                          "question_len: 0}}\n" + GOOD_LOAD, "draws an empty prompt"),
    ("unreadable.yaml", "data: {type: shared_prefix\nload: [\n",
     "unreadable YAML: "),
    ("unreadable.json", '{"data": {"type": "random",}}', "unreadable JSON: "),
    ("list.yaml", "- data\n- load\n", "is a mapping with data and load sections, got list"),
])
def test_bad_file_is_a_one_line_error_naming_file_and_field(tmp_path, capsys, name, text, message):
    path = _write(tmp_path, text, name)
    code = main(["replay", "--quiet", "--model", "llama-2-7b", "--trace", f"inference-perf:{path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {path}: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_numbers_written_as_strings_are_read_as_inference_perf_reads_them(tmp_path):
    # PyYAML reads 1e1 as the string "1e1"; inference-perf's pydantic takes it as 10.
    path = _write(tmp_path, GOOD_DATA + 'load: {stages: [{rate: 1e1, duration: "3"}]}\n')
    assert len(_trace(path).requests) == 30


def test_missing_file_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "absent.yaml"
    assert main(["replay", "--quiet", "--trace", f"inference-perf:{missing}"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {missing}: cannot read the inference-perf config: "
                   "No such file or directory\n")


def test_bad_files_raise_trace_format_errors(tmp_path):
    path = _write(tmp_path, GOOD_DATA + "load: {stages: [{rate: 1, duration: 0}]}\n")
    with pytest.raises(TraceFormatError, match=r"load\.stages\[0\]\.duration must be positive"):
        load_inference_perf(path)


def test_accepted_but_unmodelled_keys_are_named_in_the_notes(tmp_path):
    path = _write(tmp_path, GOOD_DATA.replace("{num_groups: 2}", "{num_groups: 2, seed: 7}")
                  + "load: {stages: [{rate: 1, duration: 5}], request_timeout: 30}\n")
    notes = " ".join(_trace(path).notes)
    assert "data.shared_prefix.seed ignored" in notes and "load.request_timeout" in notes


def test_a_closed_loop_trace_round_trips_through_transforms_that_keep_it():
    trace = _trace(CLOSED_LOOP, priority_mix="1,1", n=2)
    assert trace.closed_loop and {r.n for r in trace.requests} == {2}
    assert {r.priority for r in trace.requests} == {0, 1}
    with pytest.raises(ValueError, match="closed-loop stages must hold every request"):
        dataclasses.replace(trace, requests=trace.requests[:-1])
