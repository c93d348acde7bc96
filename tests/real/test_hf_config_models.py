"""Llama-family `config.json` models on the real backend: tiny Llama (explicit head_dim),
Qwen2 (Q/K/V biases, tied embeddings), Qwen3 (Q/K norms) and Mistral (sliding window) configs
written to a directory with seeded weights saved under Hugging Face's tensor names.

Hugging Face transformers builds its own model class from that directory and gives the same
greedy tokens as servesim's paged engine on the weights `load_hf_directory` reads from it.
Through the config loader (`sim.cost.hf_config`), `servesim replay --model DIR --weights DIR`
serves exactly the model built by hand from the same numbers, and without `--weights` seeded
weights of the config's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.model import LlamaModel, init_random
from sim.cli import main
from sim.cost.specs import ModelSpec, RopeScaling

_COMMON = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
           "max_position_embeddings": 256, "torch_dtype": "float32"}
CONFIGS = {
    "llama": {**_COMMON, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "head_dim": 24, "rope_theta": 5000.0, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": False},
    "qwen2": {**_COMMON, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
              "use_sliding_window": False, "sliding_window": 32},
    "qwen3": {**_COMMON, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
              "head_dim": 32, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True},
    "mistral": {**_COMMON, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
                "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                "sliding_window": 7},
    # Llama 3.1's scaling with an original context of 32 tokens, so that at head_dim 16 some
    # frequencies are kept, some divided by the factor and some blended.
    "llama31": {**_COMMON, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "rope_theta": 500.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 32}},
    "linear": {**_COMMON, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
               "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
               "rope_scaling": {"type": "linear", "factor": 4.0}},
}
_SHAPE = {"num_layers": 3, "hidden_size": 64, "intermediate_size": 96, "num_heads": 4,
          "num_kv_heads": 2, "vocab_size": 320, "max_model_len": 256}
# What each config says, written out by hand (not through the config loader).
HAND_SPECS = {
    "llama": ModelSpec("llama", "llama", **_SHAPE, head_dim=24, rope_theta=5000.0,
                       rms_norm_eps=1e-6),
    "qwen2": ModelSpec("qwen2", "qwen2", **_SHAPE, qkv_bias=True, tied_embeddings=True,
                       rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen3": ModelSpec("qwen3", "qwen3", **_SHAPE, head_dim=32, qk_norm=True,
                       tied_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "mistral": ModelSpec("mistral", "mistral", **_SHAPE, sliding_window=7),
    "llama31": ModelSpec("llama31", "llama31", **_SHAPE, rope_theta=500.0,
                         rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 32)),
    "linear": ModelSpec("linear", "linear", **_SHAPE, rope_scaling=RopeScaling("linear", 4.0)),
}
TRACE = "synthetic:n=3,arrivals=poisson:50,prompt=uniform:4:40,output=fixed:10"
WEIGHT_SEED = 11


def write_model_dir(directory: Path, kind: str) -> LlamaModel:
    """config.json plus model.safetensors with HF tensor names (`model.` prefix; no lm_head
    when tied, as HF saves it); returns the hand-built model holding those weights. Seeded
    norms are all ones: the per-head Q/K norms get other weights, so loading them counts."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(CONFIGS[kind]))
    model = init_random(LlamaModel(HAND_SPECS[kind]), WEIGHT_SEED).eval()
    gen = torch.Generator().manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                param.uniform_(0.5, 1.5, generator=gen)
    tied = HAND_SPECS[kind].tied_embeddings
    state = {name if name == "lm_head.weight" else f"model.{name}": tensor.contiguous()
             for name, tensor in model.state_dict().items()
             if not (tied and name == "lm_head.weight")}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return model


def _recompute_outputs(model: LlamaModel, model_dir: Path) -> dict[int, list[int]]:
    """Greedy no-cache outputs of the trace's seeded prompts on `model`."""
    from backend.recompute import generate_recompute
    from backend.runner import seeded_prompt
    from sim.config import ReplayOptions, resolve

    torch.set_num_threads(1)
    config = resolve(ReplayOptions(trace=TRACE, model=str(model_dir), hardware="cpu",
                                   executor="real"))
    vocab_size = model.spec.vocab_size
    return {r.request_id: generate_recompute(model, seeded_prompt(r, vocab_size, 0),
                                             r.output_tokens)
            for r in config.trace.requests}


def _replay_cli(model_dir: Path, out: Path, *extra: str) -> dict[int, list[int]]:
    code = main(["replay", "--quiet", "--executor", "real", "--model", str(model_dir),
                 "--trace", TRACE, "--num-gpu-blocks", "40", "--block-size", "4",
                 "--out", str(out), *extra])
    assert code == 0
    rows = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    return {row["request_id"]: row["output_token_ids"] for row in rows}


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_config_dir_with_safetensors_serves_the_hand_built_model(kind, tmp_path):
    model_dir = tmp_path / kind
    model = write_model_dir(model_dir, kind)
    got = _replay_cli(model_dir, tmp_path / "out", "--weights", str(model_dir))
    assert got == _recompute_outputs(model, model_dir)


@pytest.mark.parametrize("allocator", ["paged", "paged-prefix"])
def test_a_sliding_window_config_serves_past_its_window(allocator, tmp_path):
    """Mistral's window of 7 tokens is far shorter than the trace's sequences: the real pool
    keeps every token (one block table per sequence) and each layer's mask reads the window,
    as the no-cache reference does, with the prefix-caching allocator too."""
    model_dir = tmp_path / "mistral"
    model = write_model_dir(model_dir, "mistral")
    got = _replay_cli(model_dir, tmp_path / "out", "--weights", str(model_dir),
                      "--allocator", allocator)
    assert got == _recompute_outputs(model, model_dir)


def test_config_dir_without_weights_serves_seeded_weights_of_its_shape(tmp_path):
    model_dir = tmp_path / "qwen2"
    write_model_dir(model_dir, "qwen2")
    got = _replay_cli(model_dir, tmp_path / "out", "--seed", "0")
    seeded = init_random(LlamaModel(HAND_SPECS["qwen2"]), seed=0).eval()
    assert got == _recompute_outputs(seeded, model_dir)
    from_file = init_random(LlamaModel(HAND_SPECS["qwen2"]), seed=WEIGHT_SEED).eval()
    assert got != _recompute_outputs(from_file, model_dir)


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path, capsys):
    write_model_dir(tmp_path / "llama", "llama")
    write_model_dir(tmp_path / "mistral", "mistral")  # no head_dim 24: other q/k/v shapes
    code = main(["replay", "--quiet", "--executor", "real", "--model", str(tmp_path / "llama"),
                 "--weights", str(tmp_path / "mistral"), "--trace", TRACE,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "do not fit" in err


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "mistral", "llama31", "linear"])
def test_transformers_gives_the_same_greedy_tokens_from_the_same_directory(kind, tmp_path):
    """Three random prompts served together (continuous batching on paged KV of 4-token
    blocks) against transformers' `generate`, one prompt at a time."""
    pytest.importorskip("transformers", reason="pip install -e '.[hf]'")
    from transformers import AutoModelForCausalLM

    from backend.kv_cache import KVCache
    from backend.model import load_hf_directory
    from backend.runner import RealExecutor
    from policies.engine import Engine
    from policies.kv.paged import PagedAllocator, PagedParams
    from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
    from policies.types import Request
    from tests.helpers import drive

    torch.set_num_threads(1)
    model_dir = tmp_path / kind
    write_model_dir(model_dir, kind)
    hf_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert type(hf_model).__name__ == CONFIGS[kind]["architectures"][0]
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 320, (n,), generator=gen).tolist() for n in (3, 17, 30)]
    num_new_tokens = 12
    expected = [hf_model.generate(torch.tensor([p]), max_new_tokens=num_new_tokens,
                                  do_sample=False, eos_token_id=None,
                                  pad_token_id=0)[0, len(p):].tolist() for p in prompts]

    spec = HAND_SPECS[kind]
    model = load_hf_directory(LlamaModel(spec), model_dir).eval()
    allocator = PagedAllocator(PagedParams(block_size=4, num_blocks=40))
    kv = KVCache(num_layers=spec.num_layers, num_blocks=40, block_size=4,
                 num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                 dtype=torch.float32, device="cpu")
    executor = RealExecutor(model, kv, allocator)
    engine = Engine(ContinuousScheduler(ContinuousParams(), allocator), executor,
                    max_model_len=spec.max_model_len)
    requests = [Request(i, 0.0, len(p), num_new_tokens, prompt_token_ids=tuple(p))
                for i, p in enumerate(prompts)]
    drive(engine, requests)
    assert [executor.output_ids(r) for r in requests] == expected
    assert len({tuple(e) for e in expected}) == len(prompts)


def test_a_mixture_of_experts_config_is_refused_in_one_line(tmp_path, capsys):
    config = {**CONFIGS["mistral"], "architectures": ["MixtralForCausalLM"],
              "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    code = main(["replay", "--quiet", "--executor", "real", "--model", str(tmp_path),
                 "--trace", TRACE, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "mixture of experts" in err


def test_quantized_checkpoint_weights_are_refused_in_one_line(tmp_path, capsys):
    config = {**CONFIGS["llama"], "quantization_config": {"quant_method": "awq", "bits": 4,
                                                         "group_size": 128}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    code = main(["replay", "--quiet", "--executor", "real", "--model", str(tmp_path),
                 "--weights", str(tmp_path), "--trace", TRACE, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "stores awq weights" in err


@pytest.mark.parametrize("field, value, words", [
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling of type"),
    ("hidden_act", "gelu", "hidden_act 'gelu'"),
])
def test_what_the_backend_cannot_compute_is_refused_in_one_line(field, value, words, tmp_path,
                                                               capsys):
    config = {**CONFIGS["llama"], field: value}
    (tmp_path / "config.json").write_text(json.dumps(config))
    code = main(["replay", "--quiet", "--executor", "real", "--model", str(tmp_path),
                 "--trace", TRACE, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and words in err and err.count("\n") == 1


def test_llama3_scaling_changes_some_frequencies_and_keeps_others():
    """The test config's scaling is not a no-op: at head_dim 16 and an original context of 32,
    the highest frequencies stay, the lowest are divided by 8 and one band is blended."""
    from backend.model import scaled_inv_freq

    inv_freq = 500.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    ratio = inv_freq / scaled_inv_freq(inv_freq, HAND_SPECS["llama31"].rope_scaling)
    assert ratio[0] == 1.0 and ratio[-1] == pytest.approx(8.0)
    assert any(1.0 < r < 8.0 for r in ratio.tolist())
