"""The measured cost model: plausible prices, flagged extrapolation, one pricing path for
single steps and decode runs, and its wiring (`--cost-model`, summary keys, errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import example, given, settings

from policies.types import Plan, Request, ScheduledChunk, Sequence
from sim.api import simulate
from sim.assembly import build_cost_model
from sim.cli import main
from sim.config import ReplayOptions, options_from_toml, resolve
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import default_coefficients
from sim.cost.measured import ARRAY_STEPS, MeasuredCostModel
from sim.cost.measured_coefficients import MeasuredCoefficients, measured_coefficients
from sim.cost.roofline import CostModel
from sim.speculation.drafting import draft_cost_model


def measured(model: str, tp: int = 1, hardware: str = "h100", **kwargs) -> MeasuredCostModel:
    return MeasuredCostModel(get_model(model), get_hardware(hardware), measured_coefficients(),
                             tp=tp, **kwargs)


def test_llama2_70b_tp4_decode_step_is_plausible_and_fully_measured():
    """37 sequences at 700 cached tokens (vLLM's recorded run at 8 req/s holds ~37 running):
    the weights stream once per step at most ~3.35 TB/s, so the GEMMs alone take >= 10 ms
    on a 4-way shard of 69B parameters; every lookup is inside the tables."""
    cost = measured("llama-2-70b", tp=4)
    step = cost.breakdown([1] * 37, [700] * 37)
    names = {k.name: k for k in step.kernels}
    assert not any(k.extrapolated for k in step.kernels)
    gemm_s = sum(k.time_s for k in step.kernels if k.name.startswith("gemm"))
    assert 10e-3 < gemm_s < 20e-3
    assert 0 < names["all-reduce custom_graph"].time_s < 4e-3
    assert 0 < names["decode attention global"].time_s < gemm_s
    assert 12e-3 < step.time_s < 30e-3
    c = cost.coefficients
    assert step.overhead_s == pytest.approx(c.step_overhead_s + 37 * c.per_sequence_overhead_s)


def test_llama2_7b_mha_decode_uses_an_equivalent_measured_shape():
    """The decode tables measure at most 8 KV heads; 32 heads over 32 KV heads is the work of
    8 over 8 at four times the batch, so it stays in range."""
    cost = measured("llama-2-7b")
    step = cost.breakdown([1] * 9, [690] * 9)
    assert not any(k.extrapolated for k in step.kernels)
    assert 5e-3 < step.time_s < 12e-3
    longer = cost.breakdown([1] * 9, [2000] * 9)
    bigger = cost.breakdown([1] * 18, [690] * 18)
    assert longer.time_s > step.time_s and bigger.time_s > step.time_s


def test_lookups_outside_the_tables_are_flagged_and_still_priced():
    """Llama-3's 128,256-token LM head is wider than any measured GEMM (65,536): it is the
    widest one scaled by the roofline, about twice its time."""
    cost = measured("llama-3-8b")
    head = next(k for k in cost.breakdown([1] * 8, [500] * 8).kernels if k.name == "gemm lm_head")
    assert head.extrapolated
    widest = measured("llama-3-8b")._gemm("probe", 8, 65536, 4096, 1)
    assert not widest.extrapolated
    assert 1.5 * widest.time_s < head.time_s < 2.5 * widest.time_s
    # A model no table measures (MLA that is not DeepSeek-V3's, on A100 without MLA tables).
    mla = measured("deepseek-v2-lite", hardware="a100").breakdown([1] * 4, [300] * 4)
    assert any(k.extrapolated for k in mla.kernels) and mla.time_s > 0


@pytest.mark.parametrize("model, contexts, steps", [
    ("llama-3-8b", [300, 500, 700], ARRAY_STEPS - 1),
    ("llama-3-8b", [300, 500, 700], 3 * ARRAY_STEPS),
    ("llama-3.1-8b", [8150] * 64, 120),  # crosses the end of the batch-64 row (8,191)
    ("gemma-3-12b", [1000, 1020, 990], 80),  # sliding window: windowed and global tables
    ("mistral-7b", [4050, 4090], 60),  # a window with no table of its own: capped KV
    ("deepseek-v2-lite", [1000] * 5, 70),  # MLA modules, scaled from DeepSeek-V3's
])
def test_decode_runs_cost_what_each_step_costs_alone(model, contexts, steps):
    """The fast-forward's run pricing equals `execute`'s per-step pricing bit for bit,
    whichever way the run is priced (step by step, or as arrays with fallbacks)."""
    cost = measured(model)
    run = cost.lockstep_decode_times(contexts, steps, first_step=2)
    alone = [cost.breakdown([1] * len(contexts), [c + 2 + j for c in contexts]).time_s
             for j in range(steps)]
    assert run == alone


def test_lookup_counts_follow_executed_iterations():
    cost = measured("llama-3.1-8b")
    cost.ran_lockstep_decodes([8150] * 64, 120)
    in_range, extrapolated = cost.lookups_in_range, cost.lookups_extrapolated
    per_step = len(cost.breakdown([1] * 64, [8150] * 64).kernels)
    assert in_range + extrapolated == 120 * per_step
    # Steps past 8,191 cached tokens have their decode attention extrapolated.
    assert extrapolated >= 120 - (8191 - 8150)


def test_replay_names_the_cost_model_and_counts_lookups():
    roofline = simulate(resolve(ReplayOptions(max_requests=60, cost_model="roofline"))).summary
    assert roofline["cost_model"] == "roofline"
    assert "kernel_lookups_in_range" not in roofline
    result = simulate(resolve(ReplayOptions(max_requests=60, cost_model="measured")))
    summary = result.summary
    assert summary["cost_model"] == "measured:vllm-0.24.0/h100"
    assert summary["kernel_lookups_in_range"] > summary["kernel_lookups_extrapolated"] > 0
    share = summary["kernel_lookups_in_range_share"]
    assert share == pytest.approx(summary["kernel_lookups_in_range"] / (
        summary["kernel_lookups_in_range"] + summary["kernel_lookups_extrapolated"]))
    assert summary["requests_finished"] == 60
    assert summary["tpot_mean_s"] != roofline["tpot_mean_s"]


def test_speculation_prices_the_draft_model_with_measured_kernels_too():
    config = resolve(ReplayOptions(max_requests=30, cost_model="measured", speculator="draft",
                                   draft_model="llama-3.2-1b"))
    target = build_cost_model(config)
    draft = draft_cost_model(target, config.draft_model, 0.0)
    assert isinstance(draft, MeasuredCostModel) and draft.model.name == "llama-3.2-1b"
    assert draft.coefficients.step_overhead_s == 0.0
    assert simulate(config).summary["requests_finished"] == 30


def test_cost_model_option_reads_from_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('cost-model = "measured"\nmax_requests = 5\n')
    options = ReplayOptions().updated(options_from_toml(path))
    assert resolve(options).measured is not None


@pytest.mark.parametrize("args, message", [
    (["--cost-model", "bogus"], "error: unknown cost model 'bogus'; choose one of: auto, roofline, measured"),
    (["--cost-model", "measured", "--hardware", "cpu"], "error: no measured kernel tables for hardware 'cpu'"),
    (["--cost-model", "measured", "--pp", "2", "--model", "llama-3-70b", "--tp", "4"],
     "error: --cost-model measured does not combine with --pp"),
    (["--cost-model", "measured", "--calibration", "shared-fit"],
     "error: --cost-model measured does not combine with --calibration"),
])
def test_bad_cost_model_options_are_one_line_errors(capsys, args, message):
    assert main(["replay", "--max-requests", "5", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_coefficient_files_are_checked():
    good = measured_coefficients()
    assert "Fitted terms: step_overhead_s, per_sequence_overhead_s, frontend_latency_s" in (
        good.provenance)
    assert good.fit["date"] and good.fit["leave_one_model_out"]["median_abs_rel_error"]["e2e"]
    fields = {k: getattr(good, k) for k in good.__dataclass_fields__}
    with pytest.raises(ValueError, match="unknown keys"):
        MeasuredCoefficients.from_json(fields | {"bogus_s": 1.0})
    with pytest.raises(ValueError, match="must be a number >= 0"):
        MeasuredCoefficients.from_json(fields | {"step_overhead_s": -1.0})
    with pytest.raises(ValueError, match="no measured coefficients for engine 'sglang'"):
        measured_coefficients("sglang")


def test_measured_replay_imports_numpy_only(tmp_path):
    """The shipped table is read with numpy: pyarrow (the build step's) and the heavy
    frameworks stay out of a measured replay."""
    code = (
        "import sys\n"
        "from sim.cli import main\n"
        "main(['replay', '--quiet', '--max-requests', '20', '--cost-model', 'measured', "
        f"'--out', r'{tmp_path}'])\n"
        "heavy = {'pyarrow', 'pandas', 'torch', 'triton', 'streamlit', 'ray'} & set(sys.modules)\n"
        "print('HEAVY', sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert "HEAVY []" in out.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cost_model"] == "measured:vllm-0.24.0/h100"


def test_measured_model_reads_an_fp8_checkpoint_at_fp8_without_an_override():
    """No --weight-dtype means the checkpoint's own dtypes: a config.json whose MLP weights are
    FP8 is priced from the FP8 GEMM tables, not at its bf16 torch_dtype."""
    from pathlib import Path

    from sim.cost.catalog import get_hardware
    from sim.cost.hf_config import model_from_hf_config
    from sim.cost.measured import MeasuredCostModel
    from sim.cost.measured_coefficients import measured_coefficients

    spec = model_from_hf_config(Path(__file__).parent / "data" / "hf_configs" / "small"
                                / "qwen3_moe_fp8.json")
    assert spec.weight_dtype == "bf16" and spec.gemm_dtype() == "fp8"
    cost = MeasuredCostModel(spec, get_hardware("h100"), measured_coefficients())
    assert cost._gemm_dtype == "fp8"


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 700), st.integers(0, 5000)), min_size=1,
                     max_size=24),
       model=st.sampled_from(["llama-2-70b", "mistral-7b"]))
def test_a_mixed_step_prices_its_decodes_as_one_batch_and_its_chunks_apart(rows, model):
    """A step's decode rows (one token on a cached context) are one decode-attention call at
    their mean length, whatever the other rows (prefill chunks, a first token on no context,
    rows of no tokens) and wherever they sit among them; the others price as chunks, in
    order. `mistral-7b` has a sliding window, whose capped KV is summed row by row."""
    cost = measured(model, tp=2 if model == "llama-2-70b" else 1)
    new, ctx = [n for n, _ in rows], [c for _, c in rows]
    step = cost.breakdown(new, ctx)
    decodes = [c for n, c in rows if n == 1 and c > 0]
    chunks = [(n, c) for n, c in rows if n > 1 or (n == 1 and c <= 0)]
    window = cost.model.sliding_window
    expected = cost._decode_attention(len(decodes), sum(decodes),
                                      sum(min(c, window) for c in decodes) if window else 0)
    if chunks:
        expected += cost._prefill_attention(chunks)
    assert step.attention == expected
    assert step.batch == cost._batch_terms_of(len(rows), sum(new), len(rows))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 9), st.integers(0, 9000)), min_size=1,
                     max_size=24),
       uniform=st.booleans(), model=st.sampled_from(["llama-3-8b", "mistral-7b"]))
def test_rows_price_as_their_breakdown(rows, uniform, model):
    """`price_rows` (which prices rows that all compute more than one token, a speculative
    step's verifies, from their summed pairs without a breakdown) gives `breakdown`'s time
    and lookup counts, to the bit: uniform or mixed rows, with decodes among them or not,
    with a sliding window (`mistral-7b`) or not."""
    cost = measured(model)
    new = [rows[0][0]] * len(rows) if uniform else [n for n, _ in rows]
    ctx = [c for _, c in rows]
    priced = cost.price_rows(new, ctx, sum(new))
    step = cost.breakdown(new, ctx, sum(new))
    extrapolated = sum(kernel.extrapolated for kernel in step.kernels)
    assert (priced.duration_s, priced.num_in_range, priced.num_extrapolated) == (
        step.time_s, len(step.kernels) - extrapolated, extrapolated)


@settings(max_examples=60, deadline=None)
@given(contexts=st.lists(st.integers(1, 9000), min_size=1, max_size=40),
       steps=st.integers(1, 12), first_step=st.integers(0, 5),
       total_s=st.sampled_from([0.0, 0.0123]),
       model=st.sampled_from(["llama-3.2-1b", "gemma-3-12b", "deepseek-v2-lite"]),
       roofline=st.booleans())
def test_a_stretch_of_decodes_adds_up_as_its_steps_do(contexts, steps, first_step, total_s,
                                                      model, roofline):
    """`lockstep_decode_sum_s` (a stretch of draft passes, added up inside the loop that
    prices them where one table cell holds them all) is `lockstep_decode_times` added one
    by one onto the running total, to the bit."""
    if roofline:
        cost = CostModel(get_model(model), get_hardware("h100"), default_coefficients("h100"))
    else:
        cost = measured(model)
    expected = total_s
    for time_s in cost.lockstep_decode_times(contexts, steps, first_step):
        expected += time_s
    assert cost.lockstep_decode_sum_s(contexts, steps, first_step, total_s) == expected


@settings(max_examples=80, deadline=None)
@given(contexts=st.lists(st.integers(1, 40_000), min_size=1, max_size=40),
       steps=st.integers(1, ARRAY_STEPS + 4), first_step=st.integers(0, 40),
       model=st.sampled_from(["llama-3.2-1b", "llama-2-70b", "gemma-3-12b"]),
       tp=st.sampled_from([1, 2]), hardware=st.sampled_from(["h100", "a100"]))
@example(contexts=[32_760] * 4, steps=20, first_step=0, model="llama-2-70b", tp=2,
         hardware="a100")  # runs off the table's end (mean lengths to 32,767) midway
def test_a_run_in_one_table_cell_is_priced_as_step_by_step(contexts, steps, first_step, model,
                                                           tp, hardware):
    """`lockstep_decode_times` of a short run whose every step one table cell holds
    (`_one_cell_times`, spelled out) gives `_lockstep`'s values, to the bit, and counts the
    same lookups."""
    fast, stepped = measured(model, tp, hardware), measured(model, tp, hardware)
    assert fast.lockstep_decode_times(contexts, steps, first_step) == stepped._lockstep(
        contexts, steps, first_step)
    fast.ran_lockstep_decodes(contexts, steps)
    for j in range(steps):  # what `execute` counts, iteration by iteration
        stepped.execute(_decode_plan([ctx + j for ctx in contexts]))
    assert (fast.lookups_in_range, fast.lookups_extrapolated) == (
        stepped.lookups_in_range, stepped.lookups_extrapolated)


def test_lookup_counts_of_a_run_are_its_own_not_the_last_priced():
    """`ran_lockstep_decodes` counts the run it is given: a run of the same batch size
    priced before, all in range, says nothing of one that runs off the table."""
    fast, stepped = measured("llama-2-70b", 2, "a100"), measured("llama-2-70b", 2, "a100")
    fast.lockstep_decode_times([32_700] * 4, 8)  # mean lengths 32,700..32,707: in range
    fast.ran_lockstep_decodes([32_764] * 4, 8)  # 32,764..32,771: past 32,767 midway
    for j in range(8):
        stepped.execute(_decode_plan([32_764 + j] * 4))
    assert stepped.lookups_extrapolated > 0
    assert (fast.lookups_in_range, fast.lookups_extrapolated) == (
        stepped.lookups_in_range, stepped.lookups_extrapolated)


def _decode_plan(contexts: list[int]) -> Plan:
    """An iteration of one-token decodes on `contexts` cached tokens each."""
    return Plan(chunks=[ScheduledChunk(Sequence(Request(i, 0.0, ctx, 2)), 1, ctx)
                        for i, ctx in enumerate(contexts)])


def test_summary_names_the_kernels_priced_from_another_dtype_only_when_there_are_some():
    """`cost_model_notes` lists them for a KV dtype the tables lack (and for experts whose
    dtype they lack), and is absent from a run whose dtypes are all measured, so those
    summaries keep their keys."""
    plain = simulate(resolve(ReplayOptions(max_requests=10, cost_model="measured",
                                           hardware="a100"))).summary
    assert "cost_model_notes" not in plain
    stand_in = simulate(resolve(ReplayOptions(max_requests=10, cost_model="measured",
                                              hardware="a100", kv_dtype="fp8"))).summary
    (note,) = stand_in["cost_model_notes"]
    assert note.startswith("attention with the KV cache at fp8: the vllm-0.14.0 kernel tables "
                           "of a100 measure none")
    assert stand_in["kernel_lookups_extrapolated"] > plain["kernel_lookups_extrapolated"]
