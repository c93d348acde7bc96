"""OpenAI's gpt-oss: its Hugging Face config, mxfp4 experts, parameter and byte counts against
the published ones, vLLM's memory log, the measured MoE table and both cost models."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import default_coefficients
from sim.cost.hf_config import model_from_hf_config
from sim.cost.kernel_build import build
from sim.cost.kernel_tables import SHIPPED_TABLE, KernelTables, shipped_tables
from sim.cost.measured import MeasuredCostModel
from sim.cost.measured_coefficients import measured_coefficients
from sim.cost.memory import kv_budget
from sim.cost.roofline import CostModel
from sim.cost.specs import dtype_bytes, expected_distinct_experts
from tests.helpers import SHARED

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
GiB = 1024**3
GB = 1e9


def config(name: str = "gpt-oss-20b") -> dict:
    return json.loads((CONFIGS / name / "config.json").read_text())


def written(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_the_20b_config_reads_as_published():
    m = model_from_hf_config(CONFIGS / "gpt-oss-20b")
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.attn_head_dim) == (
        24, 2880, 64, 8, 64)
    assert (m.vocab_size, m.max_model_len, m.tied_embeddings) == (201088, 131072, False)
    assert (m.moe.num_experts, m.moe.experts_per_token, m.moe.expert_intermediate_size) == (
        32, 4, 2880)
    assert m.num_moe_layers == 24 and m.num_dense_mlp_layers == 0
    assert m.moe.router_bias and m.moe.expert_bias and m.qkv_bias and m.o_bias
    assert m.sliding_window == 128
    assert m.layer_kinds == ("local", "global") * 12  # even layers windowed
    assert m.rope_theta == 150000.0 and m.hidden_act == "silu"
    assert (m.rope_scaling.kind, m.rope_scaling.factor,
            m.rope_scaling.original_max_position_embeddings) == ("yarn", 32.0, 4096)
    assert m.weight_dtype == "bf16"
    assert m.quantization.dtype == "mxfp4" and dict(m.quantization.num_quantized) == {"experts": 24}
    assert m.expert_dtype() == "mxfp4" and m.dense_gemm_dtype() == "bf16"
    assert m.weight_dtype_label() == "mxfp4+bf16"


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss-120b"])
def test_the_catalog_entries_are_the_configs(name):
    read = model_from_hf_config(CONFIGS / name)
    catalog = get_model(name)
    assert catalog.layer_kinds == read.layer_kinds  # a repeated pair against the full list
    assert catalog == replace(read, name=name, hf_id=f"openai/{name}",
                              layer_pattern=catalog.layer_pattern)
    assert get_model(name.replace("gpt-oss", "gptoss")) is catalog


def test_mxfp4_is_four_bit_values_and_a_byte_of_scale_per_32():
    assert dtype_bytes("mxfp4") == (32 * 4 + 8) / 32 / 8 == 0.53125


def test_biases_are_counted_as_unquantized_vectors():
    """Per layer: two norms, q/k/v and o biases, the attention sinks (one a head), the
    router's and every expert's biases (gate/up and down); plus the final norm."""
    m = get_model("gpt-oss-20b")
    per_layer = (2 * 2880 + (64 + 2 * 8) * 64 + 2880 + 64 + 32 + 32 * (2 * 2880 + 2880))
    assert m.component_params()["vectors"] == (1, 24 * per_layer + 2880)
    weights = m.component_weight_bytes()
    assert weights["vectors"] == (24 * per_layer + 2880) * 2.0
    assert weights["experts"] == 24 * 32 * 3 * 2880 * 2880 * 0.53125
    assert weights["attention"] == 24 * (64 + 2 * 8 + 64) * 64 * 2880 * 2.0
    assert m.active_param_count - m.param_count == -24 * 28 * (3 * 2880 * 2880 + 3 * 2880)


@pytest.mark.parametrize("name, total_b, active_b, checkpoint_gb", [
    # OpenAI's gpt-oss model card: 20.91B total, 3.61B active; 116.83B and 5.13B ("active"
    # there counts the unembedding, not the embedding lookup). Checkpoints on Hugging Face:
    # 13.8 GB and 65.3 GB of safetensors.
    ("gpt-oss-20b", 20.91, 3.61, 13.8),
    ("gpt-oss-120b", 116.83, 5.13, 65.3),
])
def test_parameters_and_bytes_match_the_published_numbers(name, total_b, active_b, checkpoint_gb):
    m = get_model(name)
    assert m.param_count / 1e9 == pytest.approx(total_b, rel=0.005)
    embedding_lookup = m.vocab_size * m.hidden_size
    assert (m.active_param_count - embedding_lookup) / 1e9 == pytest.approx(active_b, rel=0.01)
    assert m.weight_bytes() / GB == pytest.approx(checkpoint_gb, rel=0.02)


def test_the_120b_fits_one_h100_and_the_20b_pool_matches_vllms_log():
    """vLLM v0.11 on one H100 80GB at `vllm serve` defaults printed for gpt-oss-20b: weights
    13.47 GiB, peak activation 7.38, available KV cache 50.28; for gpt-oss-120b 64.38, 7.38 and
    3.33 (llm-d/llm-d-benchmark, config_explorer/empirical-vllm-memory-results.md). vLLM's
    loaded weights are ~5% above the checkpoint servesim counts (its mxfp4 expert layout
    pads); the 120b line's terms do not add up to its request (64.38 + 7.38 + 0.13 > 71.26
    GiB), so its pool is held to half a GiB."""
    hardware = get_hardware("h100")
    budgets = {name: kv_budget(CostModel(get_model(name), hardware, default_coefficients("h100")),
                               block_size=16, gpu_memory_utilization=0.9,
                               max_num_batched_tokens=8192, max_num_seqs=1024)
               for name in ("gpt-oss-20b", "gpt-oss-120b")}
    small, large = budgets["gpt-oss-20b"], budgets["gpt-oss-120b"]
    assert small.weights_bytes_per_device / GiB == pytest.approx(13.47, rel=0.05)
    assert small.peak_activation_bytes / GiB == pytest.approx(7.38, rel=0.02)
    assert small.kv_bytes_per_device / GiB == pytest.approx(50.28, rel=0.02)
    assert large.num_blocks > 0
    assert large.kv_bytes_per_device / GiB == pytest.approx(3.33, abs=0.5)


@pytest.mark.parametrize("change, words", [
    ({"experts_per_token": 2}, "experts_per_token (2) must equal num_experts_per_tok (4)"),
    ({"num_local_experts": 0}, "num_local_experts must be an integer >= 1"),
    ({"num_experts_per_tok": 64, "experts_per_token": 64},
     "num_experts_per_tok (64) exceeds num_local_experts (32)"),
    ({"attention_bias": "yes"}, "attention_bias must be true or false"),
    ({"mlp_bias": True}, "mlp_bias: true is not modelled"),
    ({"layer_types": ["full_attention"] * 3}, "layer_types must list one of"),
    ({"intermediate_size": None}, "missing field 'intermediate_size'"),
    ({"quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": "lm_head"}},
     "modules_to_not_convert must be a list of strings"),
])
def test_bad_fields_are_one_line_errors(change, words, tmp_path):
    data = {**config(), **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ValueError) as error:
        model_from_hf_config(written(tmp_path, data))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_without_layer_types_even_layers_are_windowed(tmp_path):
    data = {k: v for k, v in config().items() if k != "layer_types"}
    assert model_from_hf_config(written(tmp_path, data)).layer_kinds == ("local", "global") * 12


@pytest.mark.parametrize("keep, experts", [
    (None, 24),  # mxfp4 converts the experts only, whatever the list says of the rest
    (["model.layers.*.self_attn", "model.layers.0.mlp.experts"], 23),
    (["model.layers.1.mlp", "model.layers.2.mlp.experts", "lm_head"], 22),
    (["model.layers.*.mlp.experts"], 0),
])
def test_mxfp4_quantizes_the_experts_its_list_does_not_keep(keep, experts, tmp_path):
    quantization = {"quant_method": "mxfp4"}
    if keep is not None:
        quantization["modules_to_not_convert"] = keep
    m = model_from_hf_config(written(tmp_path, {**config(), "quantization_config": quantization}))
    if experts == 0:
        assert m.quantization is None and m.weight_bytes() == m.param_count * 2.0
    else:
        assert dict(m.quantization.num_quantized) == {"experts": experts}
        assert m.expert_dtype() == ("mxfp4" if experts > 12 else "bf16")


def _moe_parquet(path: Path) -> None:
    """A tiny aiconfigurator MoE file: gpt-oss's mxfp4 kernel, a compressed-tensors mxfp4
    kernel at the same shape (must be left out), and bf16 rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for source, dtype, scale in (("vllm_gptossmxfp4moe_triton_oaitritonmxfp4expertsmonolithic",
                                  "w4a16_mxfp4", 1.0),
                                 ("vllm_compressedtensorsw4a4mxfp4moe_marlin_marlinexperts",
                                  "w4a16_mxfp4", 9.0),
                                 ("vllm_unquantizedfusedmoemethod_triton", "bfloat16", 3.0)):
        for experts in (32, 128):
            for tokens in (1, 4, 16):
                for distribution in ("balanced", "power_law_1.01"):
                    skew = 1 if distribution == "balanced" else 2
                    latency = scale * (0.05 + 0.01 * tokens) * skew
                    rows.append({"framework": "VLLM", "version": "0.24.0", "device": "H100",
                                 "op_name": "moe", "kernel_source": source, "moe_dtype": dtype,
                                 "num_tokens": tokens, "hidden_size": 2880, "inter_size": 2880,
                                 "topk": 4, "num_experts": experts, "moe_tp_size": 1,
                                 "moe_ep_size": 1, "distribution": distribution,
                                 "latency": latency * (1 + experts / 1000)})
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_the_build_keeps_gpt_oss_mxfp4_kernel_rows_as_moe_mxfp4(tmp_path):
    pytest.importorskip("pyarrow")
    root = tmp_path / "aic"
    _moe_parquet(root / "data" / "h100_sxm" / "moe" / "vllm" / "0.24.0" / "moe_perf.parquet")
    (root / "LICENSE").write_text("Apache-2.0")
    meta = build(root, tmp_path / "out" / "vllm.npz", build_date="2026-12-05",
                 source_commit="095f58a", source_path="systems/")
    entry = meta["hardware"]["h100"]["tables"]["moe/mxfp4"]
    assert entry["kernel_sources"] == ["vllm_gptossmxfp4moe_triton_oaitritonmxfp4expertsmonolithic"]
    assert entry["rows"] == 6 and entry["filters"]["moe_dtype"] == "w4a16_mxfp4"
    assert meta["hardware"]["h100"]["tables"]["moe/bf16"]["rows"] == 6
    table = KernelTables(tmp_path / "out" / "vllm.npz", "h100").get("moe/mxfp4")
    for experts in (32, 128):
        index = table.shape_index((2880, 2880, 4, experts, 1))
        for tokens in (1, 4, 16):
            found = table.lookup(index, (tokens,))
            assert found.in_range
            assert found.value_s == pytest.approx((0.05 + 0.01 * tokens) * (1 + experts / 1000)
                                                  * 1e-3, rel=1e-6)


def test_the_shipped_tables_hold_gpt_oss_moe_on_four_gpus():
    for hardware in ("h100", "h200", "l40s", "b200"):
        table = shipped_tables(hardware).get("moe/mxfp4")
        assert table is not None
        for experts in (32, 128):
            assert table.shape_index((2880, 2880, 4, experts, 1)) is not None
    assert shipped_tables("a100").get("moe/mxfp4") is None


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss-120b"])
def test_the_measured_model_prices_gpt_oss_from_its_own_tables(name):
    """On H100 every kernel but the LM head (its 201,088 columns pass the GEMM table's 65,536)
    is looked up in range in an exact table: the MoE in moe/mxfp4 at the model's shape,
    the projections in gemm/bf16, both attention kinds at (64, 8, 64), window 128 or none."""
    m = get_model(name)
    cost = MeasuredCostModel(m, get_hardware("h100"), measured_coefficients())
    table = cost.tables.get("moe/mxfp4")
    index = table.shape_index((2880, 2880, 4, m.moe.num_experts, 1))
    for tokens in (1, 8, 100, 3000):
        moe = cost._moe(tokens)
        assert not moe.extrapolated
        assert moe.time_s == pytest.approx(m.num_layers * table.lookup(index, (tokens,)).value_s,
                                           rel=1e-12)
    cost_bf16_experts = MeasuredCostModel(m, get_hardware("h100"), measured_coefficients(),
                                          weight_dtype="bf16")
    assert cost_bf16_experts._moe(8).extrapolated  # no bf16 table at gpt-oss's shape
    step = cost.breakdown([1] * 8, [1000] * 8)
    extrapolated = {k.name for k in step.kernels if k.extrapolated}
    assert extrapolated == {"gemm lm_head"}
    assert {k.name for k in step.kernels} >= {"moe", "decode attention global",
                                              "decode attention local"}


@pytest.mark.parametrize("name", ["gpt-oss-20b", "gpt-oss-120b"])
def test_a_lone_decode_is_near_its_weight_reads(name):
    """Batch 1 reads the attention, router and LM head weights and 4 experts a layer: the
    measured step lies above that at the datasheet bandwidth, and within 4x of it (small
    kernels run well below peak bandwidth)."""
    m = get_model(name)
    hardware = get_hardware("h100")
    weights = m.component_weight_bytes()
    read = (weights["attention"] + weights["router"] + weights["lm_head"] + weights["vectors"]
            + weights["experts"] * expected_distinct_experts(m.moe.num_experts, 4, 1)
            / m.moe.num_experts)
    bound_s = read / hardware.mem_bandwidth_bytes_s
    step_s = MeasuredCostModel(m, hardware, measured_coefficients()).decode_time([1000])
    assert bound_s < step_s < 4 * bound_s
    roofline_s = CostModel(m, hardware, default_coefficients("h100")).decode_time([1000])
    assert bound_s < roofline_s < 4 * bound_s


def test_the_roofline_command_shows_the_mixed_weights(capsys):
    assert main(["roofline", "--model", "gpt-oss-20b", "--hardware", "h100", "--batch", "8"]) == 0
    assert "weights mxfp4+bf16" in capsys.readouterr().out


def test_replay_prices_gpt_oss_and_reports_its_lookups(tmp_path):
    out = tmp_path / "run"
    assert main(["replay", "--quiet", "--model", str(CONFIGS / "gpt-oss-20b"), "--hardware",
                 "h100", "--cost-model", "measured", "--trace",
                 "synthetic:n=20,arrivals=poisson:5,prompt=uniform:50:400,output=fixed:30",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_finished"] == 20
    assert summary["memory_weights_bytes"] == int(get_model("gpt-oss-20b").weight_bytes())
    assert summary["kernel_lookups_in_range"] > 5 * summary["kernel_lookups_extrapolated"] > 0
    assert np.isfinite(summary["kernel_lookups_in_range_share"])


def test_the_shipped_moe_tables_are_what_the_source_builds(tmp_path):
    """Rebuilding H100's MoE tables from aiconfigurator's file gives the shipped arrays bit
    for bit (bf16 and fp8 as before the mxfp4 table was added, mxfp4 itself)."""
    source = SHARED / "calibration" / "aiconfigurator"
    moe = source / "data" / "h100_sxm" / "moe" / "vllm" / "0.24.0"
    if not moe.is_dir():
        pytest.skip(f"aiconfigurator kernel data not found at {source}")
    pytest.importorskip("pyarrow")
    root = tmp_path / "aic"
    shutil.copytree(moe, root / "data" / "h100_sxm" / "moe" / "vllm" / "0.24.0")
    shutil.copyfile(source / "LICENSE", root / "LICENSE")
    build(root, tmp_path / "out" / "vllm.npz", build_date="2026-12-05", source_commit="095f58a",
          source_path="aic-core/src/aiconfigurator_core/systems/")
    rebuilt = np.load(tmp_path / "out" / "vllm.npz")
    shipped = np.load(Path(__file__).resolve().parents[1] / "sim" / "cost" / SHIPPED_TABLE)
    names = [n for n in rebuilt.files if n.startswith("h100/moe/")]
    assert {n.split("/")[2] for n in names} == {"bf16", "fp8", "mxfp4"}
    for name in names:
        assert rebuilt[name].dtype == shipped[name].dtype
        assert np.array_equal(rebuilt[name], shipped[name], equal_nan=True), name
