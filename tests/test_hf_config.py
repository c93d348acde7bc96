"""Models from Hugging Face config.json files: parameter counts against published figures and
hand counts, weight dtypes, errors, and every `--model` entry point taking a path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.config import ReplayOptions, resolve
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import default_coefficients
from sim.cost.hf_config import model_from_hf_config
from sim.cost.memory import kv_budget
from sim.cost.roofline import CostModel

CONFIGS = Path(__file__).parent / "data" / "hf_configs"
SMALL = CONFIGS / "small"
TRACE = "synthetic:n=20,arrivals=poisson:20,prompt=uniform:50:300,output=uniform:5:30"


def small(name: str):
    return get_model(str(SMALL / f"{name}.json"))


# ---- real configs against published counts --------------------------------------------------

@pytest.mark.parametrize("directory,total,active", [
    # The configs of the shared vLLM H100 runs; totals as published (safetensors index).
    ("Llama-2-7b-hf", 6_738_415_616, 6_738_415_616),
    ("Llama-2-70b-hf", 68_976_648_192, 68_976_648_192),
    ("Mixtral-8x7B-v0.1", 46_702_792_704, 12_879_925_248),  # Mistral: 46.7B total, 12.9B active
    ("CodeLlama-34b-Instruct-hf", 33_743_970_304, 33_743_970_304),
    # Qwen2.5-7B(-Instruct): safetensors total_size 15,231,233,024 bytes in bf16.
    ("Qwen2.5-7B", 7_615_616_512, 7_615_616_512),
    # Mistral-Nemo-Base-2407: total_size 24,495,564,800 bytes in bf16.
    ("Mistral-Nemo-Base-2407", 12_247_782_400, 12_247_782_400),
    # Qwen3-8B: total_size 16,381,470,720 bytes in bf16.
    ("Qwen3-8B", 8_190_735_360, 8_190_735_360),
    # Qwen3-30B-A3B: total_size 61,064,245,248 bytes in bf16 (GGUF parameter_count alike).
    ("Qwen3-30B-A3B", 30_532_122_624, 3_353_032_704),
    # google/gemma-3-1b-it: 999,885,952 (the Hub's safetensors parameter count).
    ("gemma-3-1b-it", 999_885_952, 999_885_952),
])
def test_real_configs_match_published_parameter_counts(directory, total, active):
    model = get_model(str(CONFIGS / directory))
    assert (model.param_count, model.active_param_count) == (total, active)


def test_deepseek_v3_architecture_matches_its_published_split():
    # DeepSeek-R1's config.json (DeepseekV3ForCausalLM, the V3 architecture): DeepSeek's
    # weight notes give 671B main-model parameters and 36.6B activated ones including the
    # 0.9B output head (the input embedding, a lookup, not counted as activated); the MTP
    # module (num_nextn_predict_layers) is not part of the served model.
    model = get_model(str(CONFIGS / "DeepSeek-R1"))
    assert model.param_count == 671_026_419_200
    assert model.param_count / 1e9 == pytest.approx(671, rel=1e-3)
    activated = model.active_param_count - model.vocab_size * model.hidden_size
    assert activated / 1e9 == pytest.approx(36.6, rel=2e-3)
    assert model.kv_bytes_per_token("bf16") == 61 * (512 + 64) * 2  # MLA latent + RoPE key


def test_llama4_scout_text_model():
    # Meta: 109B total (vision tower included), 17B active; the text model alone is
    # 107,769,861,120, as transformers' Llama4ForCausalLM counts this text_config.
    model = get_model(str(CONFIGS / "Llama-4-Scout-17B-16E-Instruct"))
    assert model.param_count == 107_769_861_120
    assert model.active_param_count == 17_172_894_720
    assert model.layer_kinds[:4] == ("local", "local", "local", "global")
    assert model.sliding_window == 8192 and model.max_model_len == 10_485_760


def test_qwen25_turns_its_context_long_window_off():
    model = get_model(str(CONFIGS / "Qwen2.5-7B"))  # use_sliding_window: false, window 131072
    assert model.sliding_window is None and set(model.layer_kinds) == {"global"}
    assert model.qkv_bias and model.max_model_len == 131072 and model.rope_theta == 1e6


def test_shared_configs_name_and_dtype():
    model = get_model(str(CONFIGS / "Llama-2-7b-hf" / "config.json"))
    assert model.name == "Llama-2-7b-hf" and model.weight_dtype == "fp16"
    assert model.weight_bytes() == 2 * 6_738_415_616
    assert get_model(str(CONFIGS / "Mistral-Nemo-Base-2407")).hf_id == "mistralai/Mistral-Nemo-Base-2407"


# ---- each architecture, a small config counted by hand ---------------------------------------

def dense_attention(h: int, heads: int, kv_heads: int, head_dim: int) -> int:
    return h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h


def mlp(h: int, width: int) -> int:
    return 3 * h * width


def test_llama_defaults_to_mha_and_serves_fp32_as_bf16():
    m = small("llama")  # no num_key_value_heads: all 4 heads; head_dim 64 / 4
    layer = dense_attention(64, 4, 4, 16) + mlp(64, 128) + 2 * 64
    assert m.param_count == 2 * layer + 2 * 100 * 64 + 64 == 95_040
    assert m.kv_bytes_per_token("bf16") == 2 * 2 * 4 * 16 * 2
    assert m.weight_dtype == "bf16"  # torch_dtype float32, served in bf16 as vLLM does
    assert m.max_model_len == 512 and m.rms_norm_eps == 1e-6  # llama's default eps


def test_mistral_head_dim_is_given_not_derived_and_window_defaults():
    m = small("mistral")  # head_dim 32 while hidden / heads = 16; sliding_window left out
    layer = dense_attention(64, 4, 2, 32) + mlp(64, 96) + 2 * 64
    assert m.param_count == 3 * layer + 2 * 50 * 64 + 64 == 135_872
    assert m.attn_head_dim == 32 and m.kv_bytes_per_token("bf16") == 3 * 2 * 2 * 32 * 2
    assert m.sliding_window == 4096 and set(m.layer_kinds) == {"local"}  # MistralConfig's


def test_qwen2_biases_tied_embeddings_and_windows_from_max_window_layers():
    m = small("qwen2")
    layer = dense_attention(64, 4, 2, 16) + (4 + 2 * 2) * 16 + mlp(64, 128) + 2 * 64
    assert m.param_count == 4 * layer + 80 * 64 + 64 == 153_664
    assert m.layer_kinds == ("global", "global", "local", "local") and m.sliding_window == 32
    assert m.kv_footprint_bytes(100) == (2 * 100 + 2 * 32) * 2 * 2 * 16 * 2


def test_qwen3_counts_its_q_and_k_norms():
    m = small("qwen3")
    layer = dense_attention(64, 4, 2, 32) + 2 * 32 + mlp(64, 128) + 2 * 64
    assert m.param_count == 2 * layer + 2 * 80 * 64 + 64 == 108_992
    assert m.qk_norm and m.rope_theta == 10000.0 and m.max_model_len == 4096


def test_mixtral_experts_and_router():
    m = small("mixtral")
    attention, expert, router = dense_attention(64, 4, 2, 16), mlp(64, 96), 64 * 4
    embeddings = 2 * 60 * 64 + 64
    assert m.param_count == 2 * (attention + 4 * expert + router + 128) + embeddings == 180_544
    assert m.active_param_count == 2 * (attention + 2 * expert + router + 128) + embeddings


def test_qwen3_moe_sparse_step_and_mlp_only_layers():
    m = small("qwen3_moe")  # step 2: layers 1 and 3 sparse; mlp_only_layers takes 3 back
    assert m.moe.layers(4) == [1] and m.num_dense_mlp_layers == 3
    attention = dense_attention(64, 4, 2, 16) + 2 * 16
    sparse = 8 * mlp(64, 32) + 64 * 8
    total = 4 * (attention + 128) + 3 * mlp(64, 128) + sparse + 2 * 60 * 64 + 64
    assert m.param_count == total == 180_928
    assert m.active_param_count == total - 6 * mlp(64, 32)


def test_deepseek_v2_mla_shared_experts_dense_first_layers_and_moe_layer_freq():
    # first_k_dense_replace 1, moe_layer_freq 2: of layers 1..3 only layer 2 (2 % 2 == 0) is
    # MoE, as DeepSeek's own modeling code places them.
    m = small("deepseek_v2")
    assert m.moe.layers(4) == [2] and not m.moe.router_bias  # topk_method greedy
    q = 64 * 4 * (16 + 8)                       # no q LoRA
    kv_down = 64 * (32 + 8) + 32                # latent + RoPE key, and the latent's norm
    kv_up = 32 * 4 * (16 + 16)
    out = 4 * 16 * 64
    attention = q + kv_down + kv_up + out
    expert = mlp(64, 24)
    total = 4 * (attention + 128) + 3 * mlp(64, 96) + (8 + 1) * expert + 64 * 8 + 2 * 70 * 64 + 64
    assert m.param_count == total == 174_528
    assert m.active_param_count == total - 6 * expert
    assert m.kv_bytes_per_token("bf16") == 4 * (32 + 8) * 2


def test_deepseek_v3_q_lora_router_bias_and_fp8_weights():
    m = small("deepseek_v3_fp8")  # first_k_dense_replace 1: layers 1, 2 are MoE
    assert m.moe.layers(3) == [1, 2] and m.moe.router_bias  # topk_method noaux_tc (default)
    attention_linear = 64 * 24 + 24 * 4 * 24 + 64 * (32 + 8) + 32 * 4 * 32 + 4 * 16 * 64
    attention_norms = 24 + 32
    expert = mlp(64, 24)
    router = 64 * 8 + 8
    total = (3 * (attention_linear + attention_norms + 128) + mlp(64, 96)
             + 2 * (9 * expert + router) + 2 * 70 * 64 + 64)
    assert m.param_count == total == 155_768
    # quant_method fp8: every projection in fp8; the router (not a linear layer), norms,
    # embedding and LM head in bf16.
    fp8 = 3 * attention_linear + mlp(64, 96) + 2 * 9 * expert
    assert m.weight_bytes() == fp8 * 1 + (total - fp8) * 2 == 166_384
    assert m.gemm_dtype() == "fp8" and m.weight_dtype_label() == "fp8+bf16"


def test_llama4_text_config_moe_interleave_shared_expert_and_chunked_layers():
    m = small("llama4")  # interleave_moe_layer_step 2: layers 1, 3 MoE; 0, 2 dense (mlp 128)
    assert m.moe.layers(4) == [1, 3] and m.intermediate_size == 128
    attention = dense_attention(64, 4, 2, 16)  # its q/k L2 norms have no weights
    moe = 4 * mlp(64, 32) + mlp(64, 32) + 64 * 4  # routed, shared expert, router
    total = 4 * (attention + 128) + 2 * mlp(64, 128) + 2 * moe + 2 * 90 * 64 + 64
    assert m.param_count == total == 172_352
    assert m.active_param_count == total - 2 * 3 * mlp(64, 32)
    # Chunked layers (RoPE layers) hold at most a chunk of KV; every 4th (no RoPE) is global.
    assert m.layer_kinds == ("local", "local", "local", "global") and m.sliding_window == 64
    per_layer = 2 * 2 * 16 * 2
    assert m.kv_bytes_per_token("bf16") == 4 * per_layer
    # token 1000 is the 40th of its chunk (chunks of 64 start at 960): chunked layers hold 40
    assert m.kv_footprint_bytes(1000) == (3 * 40 + 1000) * per_layer


def test_llama4_chunked_attention_is_priced_no_higher_than_its_window():
    m = small("llama4")
    cost = CostModel(m, get_hardware("h100"), default_coefficients("h100"))
    long = cost.breakdown([1], [100_000]).groups[1]
    short = cost.breakdown([1], [64]).groups[1]
    # Per decoded token: 3 chunked layers read at most 64 tokens of KV, the global one all.
    kv_layer = 2 * 2 * 16 * 2
    assert long.bytes - short.bytes == (100_000 - 64) * kv_layer


def test_gemma3_text_config_pattern_norms_and_default_vocab():
    m = small("gemma3")  # multimodal: text_config without vocab_size (Google's configs too)
    assert m.vocab_size == 262_208 and m.tied_embeddings and m.norms_per_layer == 4
    layer = dense_attention(32, 2, 1, 16) + 2 * 16 + mlp(32, 64) + 4 * 32
    assert m.param_count == 6 * layer + 262_208 * 32 + 32 == 8_446_944
    assert m.layer_kinds == ("local", "local", "global") * 2 and m.sliding_window == 8


def test_layer_types_win_and_use_sliding_window_false_turns_windows_off(tmp_path):
    data = json.loads((SMALL / "qwen2.json").read_text())
    data["layer_types"] = ["sliding_attention", "full_attention"] * 2
    (tmp_path / "typed.json").write_text(json.dumps(data))
    assert get_model(str(tmp_path / "typed.json")).layer_kinds == ("local", "global") * 2
    data["use_sliding_window"] = False
    (tmp_path / "off.json").write_text(json.dumps(data))
    assert set(get_model(str(tmp_path / "off.json")).layer_kinds) == {"global"}


# ---- weight dtypes ---------------------------------------------------------------------------

def test_fp8_compressed_tensors_keeps_its_ignore_list_in_bf16():
    m = small("qwen3_moe_fp8")  # ignore: lm_head, every self_attn, the routers (mlp.gate)
    plain = small("qwen3_moe")
    assert m.param_count == plain.param_count == 180_928
    fp8 = 3 * mlp(64, 128) + 8 * mlp(64, 32)  # dense MLPs and routed experts
    assert m.weight_bytes() == fp8 + 2 * (180_928 - fp8) == 238_976
    assert dict(m.quantization.num_quantized) == {"mlp": 3, "experts": 1}
    assert m.weight_bytes("bf16") == plain.weight_bytes() == 2 * 180_928  # override: all bf16


def test_int4_awq_weights_and_the_override():
    m = small("llama_awq")  # torch_dtype float16; AWQ 4-bit projections, LM head kept
    projections = 2 * (dense_attention(64, 4, 4, 16) + mlp(64, 128))
    assert m.weight_bytes() == projections / 2 + (95_040 - projections) * 2 == 67_200
    assert m.gemm_dtype() == "int4" and m.weight_dtype_label() == "int4+fp16"
    assert m.weight_bytes("fp8") == 95_040


def test_roofline_and_memory_follow_the_models_weight_bytes():
    m, hardware = small("llama_awq"), get_hardware("h100")
    own = CostModel(m, hardware, default_coefficients("h100"))
    bf16 = CostModel(m, hardware, default_coefficients("h100"), weight_dtype="bf16")
    linear_own, linear_bf16 = own.breakdown([1], [10]).groups[0], bf16.breakdown([1], [10]).groups[0]
    projections = 2 * (dense_attention(64, 4, 4, 16) + mlp(64, 128))
    assert linear_bf16.bytes - linear_own.bytes == projections * (2 - 0.5)
    assert own.breakdown([1], [10]).groups[2].bytes == 100 * 64 * 2  # LM head stays fp16
    budget = kv_budget(own, block_size=16, gpu_memory_utilization=0.9,
                       max_num_batched_tokens=512, max_num_seqs=8)
    assert budget.weights_bytes_per_device == 67_200


def test_fp8_big_gemms_compute_at_the_fp8_peak():
    hardware = get_hardware("h100")
    fp8 = CostModel(small("qwen3_moe_fp8"), hardware, default_coefficients("h100"))
    bf16 = CostModel(small("qwen3_moe_fp8"), hardware, default_coefficients("h100"),
                     weight_dtype="bf16")
    a, b = fp8.breakdown([4096], [0]).groups[0], bf16.breakdown([4096], [0]).groups[0]
    assert a.flops == b.flops
    assert a.compute_s / b.compute_s == pytest.approx(989 / 1979)


def test_catalog_models_keep_bf16():
    m = get_model("mixtral-8x7b")
    assert m.weight_dtype == "bf16" and m.quantization is None
    assert m.weight_bytes() == m.weight_bytes("bf16") == 2 * m.param_count


@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 6), heads=st.sampled_from([2, 4, 8]), kv=st.sampled_from([1, 2]),
       experts=st.integers(0, 6), step=st.integers(1, 3), dtype=st.sampled_from(["bf16", "fp8", "int4"]))
def test_components_add_up_to_the_parameter_count(tmp_path_factory, layers, heads, kv, experts,
                                                   step, dtype):
    data = {"model_type": "qwen3_moe", "hidden_size": 32, "head_dim": 8, "intermediate_size": 48,
            "moe_intermediate_size": 16, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "num_experts": experts,
            "num_experts_per_tok": min(2, experts) or 1, "decoder_sparse_step": step,
            "vocab_size": 40}
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(data))
    m = model_from_hf_config(path)
    parts = m.component_params()
    assert sum(n * p for n, p in parts.values()) == m.param_count
    assert m.weight_bytes(dtype) == m.param_count * {"bf16": 2, "fp8": 1, "int4": 0.5}[dtype]
    assert m.num_moe_layers == (len(range(step - 1, layers, step)) if experts else 0)


# ---- errors ----------------------------------------------------------------------------------

def _write(tmp_path: Path, data, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


BASE = json.loads((SMALL / "llama.json").read_text())


@pytest.mark.parametrize("data,message", [
    ({k: v for k, v in BASE.items() if k != "hidden_size"}, "missing field 'hidden_size'"),
    ({k: v for k, v in BASE.items() if k != "vocab_size"}, "missing field 'vocab_size'"),
    ({**BASE, "model_type": "gpt2"}, "unknown architecture 'gpt2'"),
    ({k: v for k, v in BASE.items() if k != "model_type"} | {"architectures": ["GPT2LMHeadModel"]},
     "unknown architecture 'GPT2LMHeadModel'"),
    ({**BASE, "hidden_size": "64"}, "hidden_size must be an integer >= 1, got '64'"),
    ({**BASE, "torch_dtype": "float8"}, "torch_dtype 'float8'"),
    ({**BASE, "attention_bias": True}, "attention_bias: true is not modelled"),
    ({**BASE, "quantization_config": {"quant_method": "bitsandbytes"}},
     "quant_method 'bitsandbytes' is not modelled"),
    ({**BASE, "quantization_config": {"quant_method": "gptq", "bits": 3}}, "bits must be 4 or 8"),
    ({**BASE, "model_type": "llama4"}, "missing field 'text_config'"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "holds a JSON object"),
])
def test_bad_configs_are_one_clear_error_naming_the_file(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=message) as info:
        model_from_hf_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_dense_width_is_required_only_where_a_layer_is_dense(tmp_path):
    data = json.loads((CONFIGS / "Qwen3-30B-A3B" / "config.json").read_text())
    del data["intermediate_size"]  # every layer is MoE: the dense width sizes nothing
    assert model_from_hf_config(_write(tmp_path, data)).param_count == 30_532_122_624
    del data["moe_intermediate_size"]
    with pytest.raises(ValueError, match="missing field 'moe_intermediate_size'"):
        model_from_hf_config(_write(tmp_path, data))
    data = json.loads((SMALL / "qwen3_moe.json").read_text())
    del data["intermediate_size"]  # layers 0, 2, 3 are dense
    with pytest.raises(ValueError, match="missing field 'intermediate_size'"):
        model_from_hf_config(_write(tmp_path, data))


def test_missing_paths(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        get_model(str(tmp_path / "nope" / "config.json"))
    with pytest.raises(ValueError, match="no config.json"):
        get_model(str(tmp_path))
    with pytest.raises(ValueError, match="or give the path of a Hugging Face config.json"):
        get_model("llama-9")
    assert get_model("Llama-3-8B").name == "llama-3-8b"  # catalog names unchanged


def test_cli_bad_config_exits_2_with_one_error_line(tmp_path, capsys):
    path = _write(tmp_path, {k: v for k, v in BASE.items() if k != "num_hidden_layers"})
    assert main(["replay", "--quiet", "--model", str(path), "--trace", TRACE]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {path}: missing field 'num_hidden_layers' in the config "
                   f"(required for llama)")
    assert main(["roofline", "--model", str(tmp_path / "missing"), "--hardware", "h100",
                 "--batch", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- every --model entry point -------------------------------------------------------------

def test_replay_of_a_config_json_model_end_to_end(tmp_path):
    model = SMALL / "qwen3_moe_fp8.json"
    assert main(["replay", "--quiet", "--model", str(model), "--hardware", "h100",
                 "--trace", TRACE, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["requests_finished"] == 20
    assert summary["model_params_total"] == 180_928
    assert summary["model_params_active"] == 180_928 - 6 * mlp(64, 32)
    assert summary["kv_bytes_per_token"] == 4 * 2 * 2 * 16 * 2


def test_summary_size_keys_are_whole_model_whatever_tp_and_follow_kv_dtype(tmp_path):
    model = CONFIGS / "Mixtral-8x7B-v0.1"
    assert main(["replay", "--quiet", "--model", str(model), "--hardware", "h100", "--tp", "2",
                 "--kv-dtype", "fp8", "--trace", TRACE, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model_params_total"] == 46_702_792_704
    assert summary["model_params_active"] == 12_879_925_248
    assert summary["kv_bytes_per_token"] == 32 * 2 * 8 * 128 * 1


def test_roofline_takes_a_config_directory(capsys):
    assert main(["roofline", "--model", str(CONFIGS / "DeepSeek-R1"), "--hardware", "h200",
                 "--tp", "8", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "DeepSeek-R1 on 8x h200 (weights fp8+bf16, KV bf16)" in out and "decode" in out


def test_toml_config_and_draft_model_take_paths(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'model = "{CONFIGS / "Qwen3-8B"}"\nhardware = "h100"\n'
                      f'trace = "{TRACE}"\nspeculator = "draft"\n'
                      f'draft_model = "{SMALL / "qwen3.json"}"\n')
    assert main(["replay", "--quiet", "--config", str(config), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model_params_total"] == 8_190_735_360
    resolved = resolve(ReplayOptions().updated({"model": str(CONFIGS / "Qwen3-8B"), "trace": TRACE,
                                                "speculator": "draft",
                                                "draft_model": str(SMALL / "qwen3.json")}))
    assert resolved.draft_model.param_count == 108_992


def test_sweep_grid_sweeps_model_paths(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(f'trace = "{TRACE}"\nhardware = "h100"\n'
                    f'model = ["{SMALL / "mixtral.json"}", "{SMALL / "gemma3.json"}"]\n')
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    with open(tmp_path / "s" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["model_params_total"]) for r in rows] == [180_544, 8_446_944]
    assert all(r["error"] == "" for r in rows)


@pytest.mark.parametrize("directory", sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()
                                            and p.name != "small"))
def test_transformers_counts_the_same_parameters(directory):
    """Where transformers is installed, its own model of each config (on the meta device, no
    weights) has exactly servesim's parameter count."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    data = json.loads((CONFIGS / directory / "config.json").read_text())
    data.pop("quantization_config", None)
    data.pop("auto_map", None)
    config = transformers.AutoConfig.for_model(**data)
    config = getattr(config, "text_config", config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    count = sum(p.numel() for p in model.parameters())
    # DeepSeek-V3's router bias is a buffer in transformers, a stored weight in the checkpoint.
    count += sum(b.numel() for n, b in model.named_buffers() if "e_score_correction_bias" in n)
    assert count == get_model(str(CONFIGS / directory)).param_count


def test_llama4_chunked_layers_keep_the_current_chunk_in_the_pool():
    """Llama-4's chunked local attention reaches the KV pool as a chunked layout: a sequence's
    local layers hold the blocks of the chunk its last token is in, not a sliding window."""
    from sim.cost.catalog import get_hardware
    from sim.cost.coefficients import default_coefficients
    from sim.cost.memory import kv_layout
    from sim.cost.roofline import CostModel

    spec = model_from_hf_config(SMALL / "llama4.json")
    assert spec.chunked_local_attention and spec.count_layers("local") > 0
    hardware = get_hardware("h100")
    layout, _ = kv_layout(CostModel(spec, hardware, default_coefficients("h100")), 16)
    assert layout.chunked and layout.window_tokens == spec.sliding_window
    chunk = spec.sliding_window
    per_layer = spec.kv_bytes_per_token() / spec.num_distinct_kv_layers
    locals_, globals_ = spec.num_kv_layers("local"), spec.num_kv_layers("global")
    # one token into the second chunk: the local layers hold that one token only
    assert spec.kv_footprint_bytes(chunk + 1) == pytest.approx(
        (globals_ * (chunk + 1) + locals_ * 1) * per_layer)
    assert spec.kv_footprint_bytes(chunk) == pytest.approx((globals_ + locals_) * chunk * per_layer)
