"""Derived spec quantities against published figures and hand counts."""

from __future__ import annotations

import pytest

from policies.registry import UnknownNameError
from sim.cost.catalog import HARDWARE, MODELS, get_hardware, get_model
from sim.cost.specs import expected_distinct_experts

CLI_MODELS = ["llama-2-7b", "llama-2-70b", "llama-3-8b", "llama-3.1-8b", "llama-3.2-1b",
              "llama-3-70b", "mistral-7b", "qwen2-0.5b", "qwen2-7b", "mixtral-8x7b",
              "deepseek-v2-lite"]


def test_cli_names_exist():
    assert set(CLI_MODELS) <= set(MODELS)
    assert {"a100", "h100", "h200", "l40s", "cpu"} <= set(HARDWARE)


@pytest.mark.parametrize("name,billions,tolerance", [
    ("llama-2-7b", 6.74, 0.01),      # model card: 7B (6,738,415,616 in the safetensors index)
    ("llama-2-70b", 68.98, 0.01),
    ("llama-3-8b", 8.03, 0.01),
    ("llama-3.2-1b", 1.24, 0.01),
    ("llama-3-70b", 70.55, 0.01),
    ("mistral-7b", 7.24, 0.01),
    ("qwen2-0.5b", 0.49, 0.02),      # Qwen2 report: 0.49B
    ("qwen2-7b", 7.62, 0.01),        # Qwen2 report: 7.07B non-embedding, 7.62B total
    ("mixtral-8x7b", 46.7, 0.01),    # Mistral: 46.7B total
    ("deepseek-v2-lite", 15.7, 0.01),  # DeepSeek-V2 paper: 15.7B total
])
def test_parameter_counts_match_published_totals(name, billions, tolerance):
    assert get_model(name).param_count / 1e9 == pytest.approx(billions, rel=tolerance)


@pytest.mark.parametrize("name,billions", [("mixtral-8x7b", 12.9), ("deepseek-v2-lite", 2.66)])
def test_moe_active_parameters(name, billions):
    # Mixtral: 12.9B active (Mistral). DeepSeek-V2-Lite: the paper's 2.4B excludes the
    # embedding and LM head (2 x 0.21B); servesim counts them.
    assert get_model(name).active_param_count / 1e9 == pytest.approx(billions, rel=0.01)


def test_kv_bytes_per_token_for_each_attention_kind():
    assert get_model("llama-2-7b").kv_bytes_per_token("bf16") == 2 * 32 * 32 * 128 * 2  # MHA
    assert get_model("llama-3-8b").kv_bytes_per_token("bf16") == 2 * 32 * 8 * 128 * 2   # GQA
    assert get_model("llama-3-8b").kv_bytes_per_token("fp8") == 2 * 32 * 8 * 128 * 1
    assert get_model("qwen2-0.5b").kv_bytes_per_token("bf16") == 2 * 24 * 2 * 64 * 2
    # MLA caches the 512-wide latent plus the 64-wide shared RoPE key per layer.
    assert get_model("deepseek-v2-lite").kv_bytes_per_token("bf16") == 27 * (512 + 64) * 2


def test_weight_bytes_by_dtype():
    m = get_model("llama-3-8b")
    assert m.weight_bytes("bf16") == 2 * m.param_count
    assert m.weight_bytes("fp8") == m.param_count
    assert m.weight_bytes("int4") == m.param_count / 2
    with pytest.raises(ValueError, match="unknown dtype"):
        m.weight_bytes("fp3")


def test_flops_per_token_is_twice_params_plus_attention():
    m = get_model("llama-2-7b")
    non_embedding = m.param_count - m.embedding_params()
    lm_head = m.vocab_size * m.hidden_size
    assert m.flops_per_token(0) == pytest.approx(2 * (non_embedding + lm_head))
    # Each token attends to 1000 keys: 2 FLOPs x (QK + PV) x head_dim x heads x layers.
    assert m.flops_per_token(1000) - m.flops_per_token(0) == pytest.approx(2 * 2 * 128 * 32 * 32 * 1000)


def test_sliding_window_caps_attended_context():
    m = get_model("mistral-7b")
    assert m.attended_context(10_000) == 4096
    assert m.attended_context(100) == 100


def test_ridge_point_of_h100_is_about_295_flops_per_byte():
    assert get_hardware("h100").ridge_point_flops_per_byte == pytest.approx(295, rel=0.01)


def test_expected_distinct_experts():
    assert expected_distinct_experts(8, 2, 1) == pytest.approx(2)
    assert expected_distinct_experts(8, 2, 1000) == pytest.approx(8)
    assert expected_distinct_experts(8, 2, 0) == 0


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="llama-3-8b"):
        get_model("llama-9")
    with pytest.raises(UnknownNameError, match="h100"):
        get_hardware("tpu")
    assert get_model("Llama-3-8B").name == "llama-3-8b"
