"""Arithmetic intensity against the ridge point, `servesim roofline`, and iteration recording."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from sim.api import simulate
from sim.assembly import build_cost_model, roofline_cost_model
from sim.cli import main
from sim.config import ReplayOptions, resolve
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import default_coefficients
from sim.cost.intensity import (
    IterationRecorder,
    decode_rows,
    intensity_curve,
    intensity_table,
    prefill_rows,
)
from sim.cost.roofline import CostModel


def cost(model="llama-3-8b", hardware="h100", **kw) -> CostModel:
    return CostModel(get_model(model), get_hardware(hardware), default_coefficients(hardware), **kw)


def total(rows):
    return next(r for r in rows if r.group == "total")


def group(rows, name):
    return next(r for r in rows if r.group == name)


def test_h100_ridge_point_is_about_295_flop_per_byte():
    assert get_hardware("h100").ridge_point_flops_per_byte == pytest.approx(989.4e12 / 3.35e12, rel=1e-3)
    assert round(get_hardware("h100").ridge_point_flops_per_byte) == 295


def test_batch_one_decode_sits_near_one_flop_per_byte_and_is_memory_bound():
    row = total(decode_rows(cost(), 1, 1024))
    assert row.intensity_flops_per_byte == pytest.approx(1.0, abs=0.05)
    assert row.memory_bound


def test_batching_multiplies_the_linear_intensity():
    c = cost()
    linear = [group(decode_rows(c, b, 1024), "linear").intensity_flops_per_byte for b in (1, 8, 64)]
    assert linear[1] == pytest.approx(8 * linear[0], rel=0.05)
    assert linear[2] == pytest.approx(64 * linear[0], rel=0.15)
    # Attention reads each sequence's own KV, so batching does not raise its intensity.
    attention = [group(decode_rows(c, b, 1024), "attention").intensity_flops_per_byte for b in (1, 64)]
    assert attention[1] == pytest.approx(attention[0])


def test_gqa_raises_attention_intensity_by_the_query_group_size():
    mha = group(decode_rows(cost("llama-2-7b"), 1, 1024), "attention").intensity_flops_per_byte
    gqa = group(decode_rows(cost("llama-3-8b"), 1, 1024), "attention").intensity_flops_per_byte
    assert mha == pytest.approx(1.0, rel=0.01)
    assert gqa == pytest.approx(4.0, rel=0.01)  # 32 query heads share 8 KV heads


@pytest.mark.parametrize("dtype,factor", [("fp8", 2.0), ("int4", 4.0)])
def test_weight_quantization_raises_decode_intensity(dtype, factor):
    bf16 = group(decode_rows(cost(), 1, 1024), "linear").intensity_flops_per_byte
    quant = group(decode_rows(cost(weight_dtype=dtype), 1, 1024), "linear").intensity_flops_per_byte
    assert quant == pytest.approx(factor * bf16, rel=0.02)


def test_speculative_verification_computes_k_plus_one_tokens_per_weight_read():
    plain = group(decode_rows(cost(), 1, 1024), "linear").intensity_flops_per_byte
    spec = group(decode_rows(cost(), 1, 1024, spec_tokens=3), "linear").intensity_flops_per_byte
    assert spec == pytest.approx(4 * plain, rel=0.01)
    # Verification needs logits at all k + 1 positions, so the LM head's intensity rises too.
    lm_plain = group(decode_rows(cost(), 1, 1024), "lm_head").intensity_flops_per_byte
    lm_spec = group(decode_rows(cost(), 1, 1024, spec_tokens=3), "lm_head").intensity_flops_per_byte
    assert lm_spec == pytest.approx(4 * lm_plain)


def test_prefill_turns_compute_bound_past_the_ridge():
    c = cost()
    ridge = c.hardware.ridge_point_flops_per_byte
    short, long = total(prefill_rows(c, 1, 64)), total(prefill_rows(c, 1, 4096))
    assert short.memory_bound and short.intensity_flops_per_byte < ridge
    assert not long.memory_bound and long.intensity_flops_per_byte > ridge


def test_curve_covers_decode_batches_then_prefill_lengths():
    rows = intensity_curve(cost(), 1024)
    assert [r.phase for r in rows][:10] == ["decode"] * 10
    decode = [r.intensity_flops_per_byte for r in rows if r.phase == "decode"]
    assert decode == sorted(decode)


@pytest.mark.parametrize("args,message", [((0, 10), "--batch"), ((1, 0), "--context"),
                                          ((1, 10, -1), "--spec-tokens")])
def test_table_rejects_bad_shapes(args, message):
    with pytest.raises(ValueError, match=message):
        intensity_table(cost(), *args)


def test_roofline_command_prints_the_numbers(capsys):
    assert main(["roofline", "--model", "llama-3-8b", "--hardware", "h100", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "ridge point 295 FLOP/byte" in out
    decode_total = next(line for line in out.splitlines() if "decode" in line and "total" in line)
    cells = [c.strip() for c in decode_total.split("│") if c.strip()]
    assert cells[:5] == ["decode", "total", "1", "1", "1024"]
    assert cells[7] == "1.0" and cells[-1] == "memory"
    prefill_total = next(line for line in out.splitlines() if "prefill" in line and "total" in line)
    assert prefill_total.rstrip(" │").endswith("compute")


@pytest.mark.parametrize("argv,message", [
    (["--model", "gpt-5", "--hardware", "h100", "--batch", "1"], "unknown model 'gpt-5'"),
    (["--model", "llama-3-8b", "--hardware", "h100", "--batch", "0"],
     "--batch must lie in [1, 1,000,000]"),
    (["--model", "llama-3-8b", "--hardware", "h100", "--batch", "999999999999"],
     "--batch must lie in [1, 1,000,000] sequences, got 999999999999"),
    (["--model", "llama-3-8b", "--hardware", "h100", "--batch", "1", "--tp", "3"], "not divisible"),
])
def test_roofline_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(["roofline", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def _recorded(config):
    """`simulate(config)` with each replica's executor observed by an `IterationRecorder`."""
    counts = roofline_cost_model(config)
    recorders = []

    def record(executor):
        recorders.append(IterationRecorder(executor, counts))
        return recorders[-1]

    return simulate(config, observe=record), recorders


@pytest.mark.parametrize("cost_model", ["roofline", "measured"])
def test_iteration_recorder_keeps_one_row_per_iteration_and_changes_nothing(cost_model):
    config = resolve(ReplayOptions(max_requests=100, cost_model=cost_model))
    plain = simulate(config)
    observed, (recorder,) = _recorded(config)
    assert observed.summary == plain.summary
    assert observed.summary["cost_model"].startswith(cost_model)
    assert observed.engine.executor is recorder
    assert len(recorder.flops) == len(recorder.bytes_moved) == len(observed.engine.log)
    # The first iteration is the first request's prefill, alone: the roofline counts its
    # work, the model that priced the run times it.
    prompt = config.trace.requests[0].prompt_tokens
    assert observed.engine.log.new_tokens[0] == prompt and observed.engine.log.batch_size[0] == 1
    expected = roofline_cost_model(config).breakdown([prompt], [0])
    assert recorder.flops[0] == expected.flops and recorder.bytes_moved[0] == expected.bytes
    assert observed.engine.log.duration_s[0] == build_cost_model(config).prefill_time(prompt)


def test_iteration_recorder_observes_a_speculative_executor_step_by_step():
    """The speculative executor offers no decode fast-forward: the recorder says so (None)
    and the engine steps every iteration, each recorded once."""
    config = resolve(ReplayOptions(max_requests=30, speculator="ngram"))
    plain = simulate(config)
    observed, (recorder,) = _recorded(config)
    assert observed.summary == plain.summary
    assert recorder.lockstep_decode_times([100], 4) is None
    assert len(recorder.flops) == len(observed.engine.log) > 0


def test_ui_command_becomes_streamlit_on_loopback_8501_by_default(monkeypatch):
    """`servesim ui` becomes `python -m ui` (the simulator imports no ui), which becomes
    `streamlit run ui/app.py` with the port and host it was given."""
    pytest.importorskip("streamlit", reason="servesim ui needs the ui extra")
    from ui.__main__ import main as ui_main

    calls = []
    monkeypatch.setattr(os, "execv", lambda path, command: calls.append((path, command)))
    main(["ui"])
    main(["ui", "--port", "9000", "--host", "0.0.0.0"])
    assert [command for _, command in calls] == [
        [sys.executable, "-m", "ui", "--port", "8501", "--host", "127.0.0.1"],
        [sys.executable, "-m", "ui", "--port", "9000", "--host", "0.0.0.0"]]
    for _, command in list(calls):
        ui_main(command[3:])
    (path, first), (_, second) = calls[2:]
    assert path == sys.executable and first[0] == sys.executable
    assert first[1:4] == ["-m", "streamlit", "run"]
    assert Path(first[4]) == Path(__file__).resolve().parents[1] / "ui" / "app.py"
    assert first[first.index("--server.port") + 1] == "8501"
    assert first[first.index("--server.address") + 1] == "127.0.0.1"
    assert first[first.index("--server.maxUploadSize") + 1] == "32"
    assert second[second.index("--server.port") + 1] == "9000"
    assert second[second.index("--server.address") + 1] == "0.0.0.0"


def test_ui_command_rejects_a_bad_port(capsys):
    assert main(["ui", "--port", "70000"]) == 2
    assert "--port must lie in 1..65535" in capsys.readouterr().err


@pytest.mark.parametrize("host", [" ", "/nonexistent/zz", "a..b"])
def test_ui_command_rejects_a_host_it_cannot_listen_on(host, monkeypatch, capsys):
    """Before becoming Streamlit, which would fail on it with a traceback."""
    pytest.importorskip("streamlit", reason="servesim ui needs the ui extra")
    monkeypatch.setattr(os, "execv", lambda path, command: pytest.fail("exec'd a bad host"))
    assert main(["ui", "--host", host]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --host {host!r} is not an address to listen on")
    assert err.count("\n") == 1
