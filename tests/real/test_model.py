"""The paged Llama forward pass against an independent dense implementation, chunked over
scrambled blocks; loading HF-format weights; refusing architectures it does not run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from backend.kv_cache import KVCache
from backend.model import (BatchLayout, LlamaModel, empty_model, init_random,
                           load_hf_directory, seeded_model)
from sim.cost.catalog import get_model

TINY = get_model("tiny-llama")
HF_CONFIGS = Path(__file__).parents[1] / "data" / "hf_configs"


def _dense_logits(model: LlamaModel, tokens: list[int]) -> torch.Tensor:
    """Textbook Llama on the whole sequence at once: no cache, no pages, explicit loops."""
    spec = model.spec
    d, heads, kv_heads = spec.attn_head_dim, spec.num_heads, spec.num_kv_heads
    n = len(tokens)

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + spec.rms_norm_eps) * w

    def rope(x):  # x [n, h, d]; rotate (x_i, x_{i+d/2}) pairs by pos * theta^(-2i/d)
        out = x.clone()
        for i in range(d // 2):
            angle = torch.arange(n, dtype=torch.float64) * spec.rope_theta ** (-2 * i / d)
            c, s = angle.cos().float()[:, None], angle.sin().float()[:, None]
            a, b = x[:, :, i], x[:, :, i + d // 2]
            out[:, :, i], out[:, :, i + d // 2] = a * c - b * s, a * s + b * c
        return out

    def linear(x, proj):
        return x @ proj.weight.T + (proj.bias if proj.bias is not None else 0.0)

    def head_norm(x, norm):  # x [n, h, d]; Qwen3's per-head RMSNorm, when the model has it
        return x if norm is None else rms(x, norm.weight)

    with torch.no_grad():
        h = model.embed_tokens.weight[tokens]
        for layer, kind in zip(model.layers, spec.layer_kinds):
            at = layer.self_attn
            window = spec.sliding_window if kind == "local" else None
            x = rms(h, layer.input_layernorm.weight)
            q = rope(head_norm(linear(x, at.q_proj).view(n, heads, d), at.q_norm))
            k = rope(head_norm(linear(x, at.k_proj).view(n, kv_heads, d), at.k_norm))
            v = linear(x, at.v_proj).view(n, kv_heads, d)
            out = torch.zeros(n, heads, d)
            for head in range(heads):
                kv = head // (heads // kv_heads)
                scores = q[:, head] @ k[:, kv].T / math.sqrt(d)
                for i in range(n):
                    for j in range(n):
                        if j > i or (window is not None and i - j >= window):
                            scores[i, j] = float("-inf")
                out[:, head] = torch.softmax(scores, -1) @ v[:, kv]
            h = h + out.reshape(n, heads * d) @ at.o_proj.weight.T
            x = rms(h, layer.post_attention_layernorm.weight)
            mlp = layer.mlp
            gate = torch.nn.functional.silu(x @ mlp.gate_proj.weight.T)
            gated = gate * (x @ mlp.up_proj.weight.T)
            h = h + gated @ mlp.down_proj.weight.T
        return rms(h, model.norm.weight) @ model.lm_head.weight.T


def _chunked_logits(model: LlamaModel, tokens: list[int], chunks: list[int], use_triton=False):
    """Feed `tokens` in chunks through a paged cache whose blocks are scrambled."""
    spec = model.spec
    block_size = 4
    pages = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]
    cache = KVCache(num_layers=spec.num_layers, num_blocks=10, block_size=block_size,
                    num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                    dtype=torch.float32, device="cpu")
    table = torch.tensor(pages, dtype=torch.int32)[None, :]
    rows, start = [], 0
    for size in chunks:
        pos = torch.arange(start, start + size)
        layout = BatchLayout(positions=pos, slots=table[0, pos // block_size].long() * block_size
                             + pos % block_size, page_tables=table, page_size=block_size,
                             query_start=[0, size], context_lens=[start + size],
                             use_triton=use_triton)
        rows.append(model.logits(model(torch.tensor(tokens[start:start + size]), layout, cache)))
        start += size
    return torch.cat(rows)


@pytest.mark.parametrize("shape", [
    {},
    {"sliding_window": 5},
    {"sliding_window": 5, "layer_pattern": ("global", "local")},  # Gemma-style interleaving
    {"qkv_bias": True, "tied_embeddings": True, "rms_norm_eps": 1e-6},  # Qwen2-style
    {"qk_norm": True, "rms_norm_eps": 1e-6},  # Qwen3-style
], ids=["llama", "sliding", "local-global", "qkv-bias-tied", "qk-norm"])
def test_paged_chunked_forward_matches_dense_llama(shape):
    spec = dataclasses.replace(TINY, num_heads=4, num_kv_heads=1, head_dim=24,
                               rope_theta=500.0, **shape)
    model = init_random(LlamaModel(spec), seed=1).eval()
    with torch.no_grad():  # seeded norms are all ones: make the per-head norms' weights count
        for name, param in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                param.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(len(name)))
    tokens = torch.randint(0, spec.vocab_size, (23,), generator=torch.Generator().manual_seed(2))
    expected = _dense_logits(model, tokens.tolist())
    got = _chunked_logits(model, tokens.tolist(), [9, 1, 6, 1, 1, 5])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_triton_path_matches_reference_path_in_the_model():
    model = init_random(LlamaModel(TINY), seed=5).eval()
    tokens = torch.randint(0, TINY.vocab_size, (20,), generator=torch.Generator().manual_seed(6))
    chunks = [12, 1, 6, 1]
    reference = _chunked_logits(model, tokens.tolist(), chunks)
    triton = _chunked_logits(model, tokens.tolist(), chunks, use_triton=True)
    torch.testing.assert_close(triton, reference, rtol=1e-4, atol=1e-4)


def test_seeded_weights_are_reproducible_and_seed_dependent():
    a = init_random(LlamaModel(TINY), seed=0)
    b = init_random(LlamaModel(TINY), seed=0)
    c = init_random(LlamaModel(TINY), seed=1)
    assert torch.equal(a.layers[1].mlp.up_proj.weight, b.layers[1].mlp.up_proj.weight)
    assert not torch.equal(a.layers[1].mlp.up_proj.weight, c.layers[1].mlp.up_proj.weight)


@pytest.mark.parametrize("shape", [{}, {"qkv_bias": True, "tied_embeddings": True},
                                   {"qk_norm": True}], ids=["llama", "qkv-bias-tied", "qk-norm"])
def test_seeded_model_equals_init_random_of_a_default_initialised_model(shape):
    """Skipping torch's default initialisation changes no weight, keeps a tied head tied,
    and leaves nothing on the meta device."""
    spec = dataclasses.replace(TINY, **shape)
    expected = init_random(LlamaModel(spec), seed=4)
    got = seeded_model(spec, seed=4)
    assert list(got.state_dict()) == list(expected.state_dict())
    for name, tensor in expected.state_dict().items():
        assert got.state_dict()[name].device.type == "cpu"
        assert torch.equal(got.state_dict()[name], tensor), name
    assert (got.lm_head.weight is got.embed_tokens.weight) == spec.tied_embeddings


def test_loads_a_local_hugging_face_safetensors_directory(tmp_path):
    from safetensors.torch import save_file

    source = init_random(LlamaModel(TINY), seed=9)
    save_file({f"model.{k}" if k != "lm_head.weight" else k: v.contiguous()
               for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = load_hf_directory(LlamaModel(TINY), tmp_path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_loading_refuses_mismatched_or_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        load_hf_directory(LlamaModel(TINY), tmp_path)
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(3, 3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="do not fit tiny-llama"):
        load_hf_directory(LlamaModel(TINY), tmp_path)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v2-lite"])
def test_architectures_it_does_not_run_are_refused(name):
    with pytest.raises(ValueError, match="dense gated-MLP"):
        LlamaModel(get_model(name))


@pytest.mark.parametrize("name,change,message", [
    ("jamba-v0.1", {"moe": None}, "state-space \\(ssm\\) layers"),
    ("llama-3-8b-cla2", {}, "shares one KV across 2 layers"),
    ("tiny-llama", {"gated_mlp": False}, "has an ungated MLP"),
    (str(HF_CONFIGS / "gemma-3-1b-it"), {}, "4 norms per layer \\(Gemma-style\\)"),
    (str(HF_CONFIGS / "DeepSeek-R1"), {}, "MLA and mixture of experts"),
    (str(HF_CONFIGS / "Qwen3-30B-A3B"), {}, "mixture of experts"),
])
def test_shapes_it_cannot_compute_are_refused_with_the_reason(name, change, message):
    from backend.model import check_supported

    with pytest.raises(ValueError, match=message):
        check_supported(dataclasses.replace(get_model(name), **change))


@pytest.mark.parametrize("name", ["Qwen3-8B", "Qwen2.5-7B", "Mistral-Nemo-Base-2407",
                                  "Llama-2-7b-hf", "CodeLlama-34b-Instruct-hf"])
def test_published_llama_family_configs_are_accepted(name):
    from backend.model import check_supported

    check_supported(get_model(str(HF_CONFIGS / name)))


def test_seeded_tied_model_does_not_predict_each_token_after_itself():
    """With O(1) tied embeddings (the untied scale) 115 of these 128 tokens would be their
    own greedy successor: the embedding dominates the residual stream."""
    from backend.recompute import next_token_logits

    spec = dataclasses.replace(TINY, tied_embeddings=True, qkv_bias=True)
    model = init_random(LlamaModel(spec), seed=2).eval()
    tokens = range(0, spec.vocab_size, 4)
    repeats = sum(int(next_token_logits(model, [t]).argmax()) == t for t in tokens)
    assert repeats <= 4


@pytest.mark.parametrize("head_dim,device,expected", [
    (64, "cuda", True), (128, "cuda", True), (96, "cuda", False), (8, "cuda", False),
    (64, "cpu", False),
])
def test_triton_attention_only_for_head_dims_its_kernels_take(head_dim, device, expected):
    from backend.model import uses_triton

    spec = dataclasses.replace(TINY, head_dim=head_dim)
    assert uses_triton(spec, torch.device(device)) is expected


@pytest.mark.parametrize("shape", [{}, {"qkv_bias": True, "tied_embeddings": True}],
                         ids=["llama", "qkv-bias-tied"])
def test_weights_load_into_an_uninitialised_model_exactly(tmp_path, shape):
    """`--weights` fills `empty_model`: every tensor the file's, a tied head still tied."""
    from safetensors.torch import save_file

    spec = dataclasses.replace(TINY, **shape)
    source = init_random(LlamaModel(spec), seed=9)
    tensors = {f"model.{k}" if k != "lm_head.weight" else k: v.contiguous()
               for k, v in source.state_dict().items()}
    if spec.tied_embeddings:
        tensors.pop("lm_head.weight")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    loaded = load_hf_directory(empty_model(spec), tmp_path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) == spec.tied_embeddings
