"""A `ModelSpec` from a Hugging Face `config.json` (the file, or the directory holding it).

One reader per `model_type`, each mapping that family's fields onto `ModelSpec`:

    llama (Llama 2/3/3.1, CodeLlama, Yi)  dense, GQA (`num_key_value_heads`), `head_dim`
    mistral (Mistral, Mistral-Nemo)       + explicit `head_dim`, sliding window
    qwen2 (Qwen2, Qwen2.5)                + q/k/v biases; windows on layers >= max_window_layers
    qwen3                                 + q/k norms
    mixtral, qwen3_moe                    + routed experts, top-k (Qwen3-MoE: decoder_sparse_step,
                                            mlp_only_layers)
    deepseek_v2, deepseek_v3              MLA latent KV, shared experts, first_k_dense_replace,
                                            moe_layer_freq
    llama4 / llama4_text                  MoE + shared expert, interleave_moe_layer_step,
                                            chunked-attention layers, no-RoPE layers
    gemma3 / gemma3_text                  sliding-window pattern, q/k norms, 4 norms per layer
    gpt_oss                               every layer MoE (`intermediate_size` is the expert
                                            width), windowed / full layers alternating, q/k/v,
                                            o, router and expert biases, mxfp4 experts

A multimodal config (`llama4`, `gemma3`) is read through its `text_config`: the vision tower is
not modelled. A field the config leaves out takes that model type's Hugging Face default
(transformers 5's config classes), except the structural sizes, which must be given:
hidden_size, num_hidden_layers, num_attention_heads, vocab_size, and intermediate_size (the
dense MLP) and/or the expert width, whichever the model has layers of. (Google's multimodal
Gemma-3 configs leave vocab_size out of their text_config; Gemma3TextConfig's default 262,208
is used there.) Fields servesim does not model are ignored; any problem is one ValueError
naming the file and the field.

Weights are at `torch_dtype` (or `dtype`); fp32 checkpoints are served at bf16, as vLLM does,
and a config without a dtype is taken as bf16. A `quantization_config` (compressed-tensors,
fp8, fbgemm_fp8, awq, gptq, mxfp4) puts the linear weights it quantizes at fp8, int8, int4 or
mxfp4, per component and layer, honouring its `ignore` / `modules_to_not_convert` list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sim.cost.hf_quantization import ModuleLayout, quantized_weights
from sim.cost.specs import MLASpec, ModelSpec, MoESpec, RopeScaling

CONFIG_FILE = "config.json"

TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                "float32": "bf16", "float": "bf16"}
"""Checkpoint dtype -> served weight dtype (fp32 checkpoints are served in bf16, as vLLM)."""

_MISSING = object()

# Hugging Face defaults (transformers 5 config classes) of the fields servesim reads. The
# structural sizes are left out on purpose: they are required.
_LLAMA_DEFAULTS = {"num_key_value_heads": None, "head_dim": None, "max_position_embeddings": 2048,
                   "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                   "attention_bias": False, "mlp_bias": False, "sliding_window": None,
                   "use_sliding_window": True}
_QWEN_DEFAULTS = {**_LLAMA_DEFAULTS, "max_position_embeddings": 32768, "sliding_window": 4096,
                  "use_sliding_window": False, "max_window_layers": 28}
_DEEPSEEK_DEFAULTS = {**_LLAMA_DEFAULTS, "q_lora_rank": 1536, "kv_lora_rank": 512,
                      "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
                      "moe_layer_freq": 1}
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": _LLAMA_DEFAULTS,
    "mistral": {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                "sliding_window": 4096},
    "mixtral": {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                "rope_theta": 1e6, "rms_norm_eps": 1e-5, "num_local_experts": 8,
                "num_experts_per_tok": 2},
    "qwen2": _QWEN_DEFAULTS,
    "qwen3": {**_QWEN_DEFAULTS, "head_dim": 128},
    "qwen3_moe": {**_QWEN_DEFAULTS, "num_experts": 128, "num_experts_per_tok": 8,
                  "decoder_sparse_step": 1, "mlp_only_layers": []},
    "deepseek_v2": {**_DEEPSEEK_DEFAULTS, "n_routed_experts": 64, "n_shared_experts": 2,
                    "num_experts_per_tok": None, "first_k_dense_replace": 0,
                    "topk_method": "greedy"},
    "deepseek_v3": {**_DEEPSEEK_DEFAULTS, "max_position_embeddings": 4096,
                    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
                    "first_k_dense_replace": 3, "topk_method": "noaux_tc"},
    "llama4_text": {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "head_dim": 128,
                    "max_position_embeddings": 131072, "rope_theta": 500000.0,
                    "rms_norm_eps": 1e-5, "num_local_experts": 16, "num_experts_per_tok": 1,
                    "interleave_moe_layer_step": 1, "intermediate_size_mlp": 16384,
                    "attention_chunk_size": 8192, "no_rope_layers": [], "moe_layers": None},
    "gemma3_text": {**_LLAMA_DEFAULTS, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131072, "rope_theta": 1e6,
                    "tie_word_embeddings": True, "sliding_window": 4096,
                    "sliding_window_pattern": 6},
    "gpt_oss": {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "head_dim": 64,
                "max_position_embeddings": 131072, "rope_theta": 150000.0,
                "rms_norm_eps": 1e-5, "attention_bias": True, "sliding_window": 128,
                "num_local_experts": 128, "num_experts_per_tok": 4},
}
MULTIMODAL = {"llama4": "llama4_text", "gemma3": "gemma3_text"}
"""Multimodal model types and the model type of their `text_config`."""
ARCHITECTURE_CLASSES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe", "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3", "Llama4ForConditionalGeneration": "llama4",
    "Llama4ForCausalLM": "llama4_text", "Gemma3ForConditionalGeneration": "gemma3",
    "Gemma3ForCausalLM": "gemma3_text", "GptOssForCausalLM": "gpt_oss",
}
"""`architectures` entries, for a config without `model_type`."""
MULTIMODAL_VOCAB_DEFAULTS = {"gemma3_text": 262208}
"""vocab_size of a multimodal text_config that leaves it out (Gemma3TextConfig's default)."""


def looks_like_path(name: str) -> bool:
    """A `--model` value meant as a file rather than a catalog name."""
    return "/" in name or "\\" in name or name.startswith((".", "~")) or name.endswith(".json")


def model_from_hf_config(path: str | Path) -> ModelSpec:
    """The `ModelSpec` of a Hugging Face config (a `config.json` or its directory)."""
    file = _config_file(Path(path).expanduser())
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: a config.json holds a JSON object, got {type(data).__name__}")
    fields = _fields_of(data, file)
    name = file.parent.name if file.name == CONFIG_FILE else file.stem
    hf_id = data.get("_name_or_path") or str(file)
    return READERS[fields.model_type](fields, name or str(file), str(hf_id))


def _config_file(path: Path) -> Path:
    if path.is_dir():
        file = path / CONFIG_FILE
        if not file.is_file():
            raise ValueError(f"{path}: no {CONFIG_FILE} in this directory")
        return file
    if not path.is_file():
        raise ValueError(f"model path {path} does not exist")
    return path


@dataclass(frozen=True, slots=True)
class Fields:
    """A config's fields for one model type, with that type's defaults and typed reads.

    `data` is the text model's dict (a multimodal config's `text_config`); `outer` the whole
    config, where `torch_dtype`, `tie_word_embeddings` and `quantization_config` may sit."""

    data: dict[str, Any]
    outer: dict[str, Any]
    model_type: str
    file: Path
    multimodal: bool

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.file}: {message}")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value of `key`, else the model type's default, else `default`; a required
        field (no default anywhere) is an error."""
        if key in self.data:
            return self.data[key]
        if self.multimodal and key == "vocab_size" and self.model_type in MULTIMODAL_VOCAB_DEFAULTS:
            return MULTIMODAL_VOCAB_DEFAULTS[self.model_type]
        if key in DEFAULTS[self.model_type]:
            return DEFAULTS[self.model_type][key]
        if default is not _MISSING:
            return default
        where = "text_config" if self.multimodal else "config"
        raise self.error(f"missing field {key!r} in the {where} (required for {self.model_type})")

    def int(self, key: str, minimum: int = 1, optional: bool = False) -> Any:
        """An integer field; with `optional`, None (given, defaulted or absent) is allowed."""
        value = self.raw(key, None if optional else _MISSING)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(f"{key} must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, key: str) -> float:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.error(f"{key} must be a positive number, got {value!r}")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise self.error(f"{key} must be true or false, got {value!r}")
        return value

    def int_list(self, key: str, minimum: int = 0) -> list[int] | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
            raise self.error(f"{key} must be a list of integers >= {minimum}, got {value!r}")
        return value

    def rope_theta(self) -> float:
        """`rope_theta`, or the one inside transformers 5's `rope_parameters` (for the full
        attention layers where they differ)."""
        params = self.data.get("rope_parameters")
        if "rope_theta" not in self.data and isinstance(params, dict):
            params = params.get("full_attention", params)
            if isinstance(params, dict) and "rope_theta" in params:
                theta = params["rope_theta"]
                if isinstance(theta, (int, float)) and not isinstance(theta, bool) and theta > 0:
                    return float(theta)
                raise self.error(f"rope_parameters.rope_theta must be a positive number, got {theta!r}")
        return self.number("rope_theta")

    def rope_scaling(self) -> RopeScaling | None:
        """`rope_scaling`, or transformers 5's `rope_parameters` when its type is not the
        default; None when the config scales nothing."""
        params = self.data.get("rope_scaling")
        key = "rope_scaling"
        if params is None and isinstance(self.data.get("rope_parameters"), dict):
            params, key = self.data["rope_parameters"], "rope_parameters"
            params = params.get("full_attention", params)
        if params is None:
            return None
        if not isinstance(params, dict):
            raise self.error(f"{key} must be an object, got {params!r}")
        kind = params.get("rope_type", params.get("type", "default"))
        if kind == "default":
            return None
        factor = params.get("factor")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
            raise self.error(f"{key}.factor must be a positive number, got {factor!r}")
        original = params.get("original_max_position_embeddings")
        return RopeScaling(str(kind), float(factor), params.get("low_freq_factor"),
                           params.get("high_freq_factor"),
                           int(original) if isinstance(original, (int, float)) else None)

    def activation(self) -> str:
        """The MLP activation: `hidden_act` (`hidden_activation` in Gemma configs)."""
        value = self.data.get("hidden_act", self.data.get("hidden_activation", "silu"))
        if not isinstance(value, str):
            raise self.error(f"hidden_act must be a string, got {value!r}")
        return value

    def outer_first(self, key: str) -> Any:
        """A field a multimodal config may give on either level (the text model's wins)."""
        if key in self.data:
            return self.data[key]
        if key in self.outer:
            return self.outer[key]
        return DEFAULTS[self.model_type].get(key)


def _fields_of(data: dict[str, Any], file: Path) -> Fields:
    model_type = data.get("model_type")
    architectures = data.get("architectures") or []
    if model_type is None:
        if not isinstance(architectures, list) or not architectures or not isinstance(
                architectures[0], str):
            raise ValueError(f"{file}: missing field 'model_type' (and no 'architectures')")
        model_type = ARCHITECTURE_CLASSES.get(architectures[0])
        if model_type is None:
            raise ValueError(f"{file}: unknown architecture {architectures[0]!r}; servesim "
                             f"knows: {', '.join(sorted(ARCHITECTURE_CLASSES))}")
    if not isinstance(model_type, str):
        raise ValueError(f"{file}: model_type must be a string, got {model_type!r}")
    if model_type in MULTIMODAL:
        text = data.get("text_config")
        if not isinstance(text, dict):
            raise ValueError(f"{file}: missing field 'text_config' (required for {model_type})")
        return Fields(text, data, MULTIMODAL[model_type], file, multimodal=True)
    if model_type not in READERS:
        known = sorted([*READERS, *MULTIMODAL])
        named = f" ({architectures[0]})" if isinstance(architectures, list) and architectures and isinstance(architectures[0], str) else ""
        raise ValueError(f"{file}: unknown architecture {model_type!r}{named}; servesim knows "
                         f"model types: {', '.join(known)}")
    return Fields(data, data, model_type, file, multimodal=False)


# ---- shared pieces --------------------------------------------------------------------------

def _base(f: Fields, name: str, hf_id: str, *, intermediate: str = "intermediate_size",
          expert_width: int | None = None, head_dim: bool = True,
          attention_bias: bool = False) -> dict[str, Any]:
    """The fields every family shares, as ModelSpec keyword arguments. The dense MLP width
    `intermediate` is required unless `expert_width` is given (every layer is MoE); then it
    is read if present and else taken to be the experts' (it sizes no layer). A family whose
    reader models the attention biases says so with `attention_bias` (and reads the flag)."""
    for flag in ("mlp_bias",) if attention_bias else ("attention_bias", "mlp_bias"):
        if f.flag(flag):
            raise f.error(f"{flag}: true is not modelled (servesim counts no bias there)")
    num_heads = f.int("num_attention_heads")
    kv_heads = f.int("num_key_value_heads", optional=True)
    spec: dict[str, Any] = dict(
        name=name, hf_id=hf_id,
        num_layers=f.int("num_hidden_layers"),
        hidden_size=f.int("hidden_size"),
        intermediate_size=(f.int(intermediate) if expert_width is None
                           else f.int(intermediate, optional=True) or expert_width),
        num_heads=num_heads,
        num_kv_heads=num_heads if kv_heads is None else kv_heads,
        vocab_size=f.int("vocab_size"),
        max_model_len=f.int("max_position_embeddings"),
        head_dim=f.int("head_dim", optional=True) if head_dim else None,
        tied_embeddings=_tied(f),
        rope_theta=f.rope_theta(),
        rope_scaling=f.rope_scaling(),
        hidden_act=f.activation(),
        rms_norm_eps=f.number("rms_norm_eps"),
        weight_dtype=_weight_dtype(f),
    )
    return spec


def _tied(f: Fields) -> bool:
    value = f.outer_first("tie_word_embeddings")
    if not isinstance(value, bool):
        raise f.error(f"tie_word_embeddings must be true or false, got {value!r}")
    return value


def _weight_dtype(f: Fields) -> str:
    for key in ("torch_dtype", "dtype"):
        value = f.outer_first(key)
        if value is None:
            continue
        if value not in TORCH_DTYPES:
            raise f.error(f"{key} {value!r} is not a checkpoint dtype servesim knows "
                          f"({', '.join(TORCH_DTYPES)})")
        return TORCH_DTYPES[value]
    return "bf16"


def _layer_kinds(f: Fields, num_layers: int, default_local: Callable[[int], bool],
                 window_key: str = "sliding_window") -> tuple[tuple[str, ...] | None, int | None]:
    """(layer_pattern, sliding_window): `layer_types` when the config lists them, else
    `default_local(i)` says which layers are windowed. `use_sliding_window: false` turns every
    window off (Qwen2.5 sets it with a window as long as its context)."""
    window = f.int(window_key, optional=True)
    if f.data.get("use_sliding_window", DEFAULTS[f.model_type].get("use_sliding_window")) is False:
        window = None
    types = f.data.get("layer_types")
    if types is not None:
        kinds_of = {"full_attention": "global", "sliding_attention": "local",
                    "chunked_attention": "local"}
        if (not isinstance(types, list) or len(types) != num_layers
                or not all(t in kinds_of for t in types)):
            raise f.error(f"layer_types must list one of {sorted(kinds_of)} for each of the "
                          f"{num_layers} layers")
        kinds = tuple(kinds_of[t] if window else "global" for t in types)
    else:
        kinds = tuple("local" if window and default_local(i) else "global"
                      for i in range(num_layers))
    if "local" not in kinds:
        return None, None
    if "global" not in kinds:
        return None, window
    return kinds, window


def _moe_layers(num_layers: int, moe_layers: list[int]) -> dict[str, Any]:
    """MoESpec's layer placement (first, period, exceptions) for an explicit set of layers."""
    layers = sorted(set(moe_layers))
    first = layers[0]
    period = layers[1] - layers[0] if len(layers) > 1 else 1
    if layers != list(range(first, num_layers, period)):
        period = 1
    dense = tuple(i for i in range(first, num_layers, period) if i not in layers)
    return dict(first_moe_layer=first, layer_period=period, dense_layers=dense)


def _build(f: Fields, spec: dict[str, Any], layout: ModuleLayout) -> ModelSpec:
    try:
        model = ModelSpec(**spec)
    except ValueError as exc:
        raise f.error(str(exc)) from None
    quantization = quantized_weights(f.outer.get("quantization_config"), model, layout,
                                     multimodal=f.multimodal, file=f.file)
    if quantization is None:
        return model
    return ModelSpec(**{**spec, "quantization": quantization})


# ---- the families ---------------------------------------------------------------------------

def _llama(f: Fields, name: str, hf_id: str) -> ModelSpec:
    spec = _base(f, name, hf_id)
    spec["layer_pattern"], spec["sliding_window"] = _layer_kinds(
        f, spec["num_layers"], lambda i: True)
    return _build(f, spec, ModuleLayout())


def _qwen_windows(f: Fields, spec: dict[str, Any]) -> ModelSpec:
    """Qwen2/Qwen3: layers from `max_window_layers` on use the sliding window (when enabled)."""
    first_windowed = f.int("max_window_layers", minimum=0)
    spec["layer_pattern"], spec["sliding_window"] = _layer_kinds(
        f, spec["num_layers"], lambda i: i >= first_windowed)
    return _build(f, spec, ModuleLayout())


def _qwen2(f: Fields, name: str, hf_id: str) -> ModelSpec:
    spec = _base(f, name, hf_id, head_dim=False)
    spec["qkv_bias"] = True
    return _qwen_windows(f, spec)


def _qwen3(f: Fields, name: str, hf_id: str) -> ModelSpec:
    spec = _base(f, name, hf_id)
    spec["qk_norm"] = True
    return _qwen_windows(f, spec)


def _mixtral(f: Fields, name: str, hf_id: str) -> ModelSpec:
    spec = _base(f, name, hf_id)
    spec["moe"] = MoESpec(num_experts=f.int("num_local_experts"),
                          experts_per_token=f.int("num_experts_per_tok"),
                          expert_intermediate_size=spec["intermediate_size"])
    spec["layer_pattern"], spec["sliding_window"] = _layer_kinds(
        f, spec["num_layers"], lambda i: True)
    return _build(f, spec, ModuleLayout(moe_block="block_sparse_moe",
                                        expert_leaves=("w1", "w2", "w3")))


def _qwen3_moe(f: Fields, name: str, hf_id: str) -> ModelSpec:
    num_layers = f.int("num_hidden_layers")
    num_experts = f.int("num_experts", minimum=0)
    step = f.int("decoder_sparse_step")
    dense_only = set(f.int_list("mlp_only_layers") or [])
    moe = [i for i in range(num_layers)
           if num_experts and i not in dense_only and (i + 1) % step == 0]
    expert_width = f.int("moe_intermediate_size") if moe else None
    spec = _base(f, name, hf_id, expert_width=expert_width if len(moe) == num_layers else None)
    spec["qk_norm"] = True
    if moe:
        spec["moe"] = MoESpec(num_experts=num_experts,
                              experts_per_token=f.int("num_experts_per_tok"),
                              expert_intermediate_size=expert_width,
                              **_moe_layers(num_layers, moe))
    first_windowed = f.int("max_window_layers", minimum=0)
    spec["layer_pattern"], spec["sliding_window"] = _layer_kinds(
        f, num_layers, lambda i: i >= first_windowed)
    return _build(f, spec, ModuleLayout())


def _deepseek(f: Fields, name: str, hf_id: str) -> ModelSpec:
    num_layers = f.int("num_hidden_layers")
    routed = f.int("n_routed_experts", minimum=0, optional=True)
    first_dense = f.int("first_k_dense_replace", minimum=0)
    freq = f.int("moe_layer_freq")
    moe = [i for i in range(num_layers) if routed and i >= first_dense and i % freq == 0]
    expert_width = f.int("moe_intermediate_size") if moe else None
    spec = _base(f, name, hf_id, expert_width=expert_width if len(moe) == num_layers else None,
                 head_dim=False)
    q_lora = f.int("q_lora_rank", optional=True)
    spec["mla"] = MLASpec(kv_lora_rank=f.int("kv_lora_rank"),
                          qk_rope_head_dim=f.int("qk_rope_head_dim"),
                          qk_nope_head_dim=f.int("qk_nope_head_dim"),
                          v_head_dim=f.int("v_head_dim"), q_lora_rank=q_lora)
    if moe:
        spec["moe"] = MoESpec(num_experts=routed,
                              experts_per_token=f.int("num_experts_per_tok"),
                              expert_intermediate_size=expert_width,
                              num_shared_experts=f.int("n_shared_experts", minimum=0, optional=True) or 0,
                              router_bias=f.raw("topk_method") == "noaux_tc",
                              **_moe_layers(num_layers, moe))
    attention = (("q_a_proj", "q_b_proj") if q_lora else ("q_proj",)) + (
        "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
    return _build(f, spec, ModuleLayout(attention=attention, router_is_linear=False))


def _llama4(f: Fields, name: str, hf_id: str) -> ModelSpec:
    """Llama-4's text model. Its chunked-attention layers attend within fixed chunks of
    `attention_chunk_size` tokens, so their KV stops growing at the chunk, as a sliding
    window's does: they are local layers marked `chunked_local_attention`, so the KV pool keeps
    the current chunk's blocks (vLLM's chunked local attention manager), and priced as a sliding
    window of the chunk's size, never less than a chunk costs.
    The layers without RoPE (`no_rope_layers` 0) are the global ones; their missing rotary
    embedding changes nothing servesim prices. Its q/k L2 norms have no weights."""
    num_layers = f.int("num_hidden_layers")
    explicit = f.int_list("moe_layers")
    step = f.int("interleave_moe_layer_step")
    moe = explicit if explicit is not None else list(range(step - 1, num_layers, step))
    if any(i >= num_layers for i in moe):
        raise f.error(f"moe_layers must lie below num_hidden_layers ({num_layers}), got {moe}")
    expert_width = f.int("intermediate_size") if moe else None
    spec = _base(f, name, hf_id, intermediate="intermediate_size_mlp",
                 expert_width=expert_width if len(moe) == num_layers else None)
    if moe:
        spec["moe"] = MoESpec(num_experts=f.int("num_local_experts"),
                              experts_per_token=f.int("num_experts_per_tok"),
                              expert_intermediate_size=expert_width,
                              num_shared_experts=1, **_moe_layers(num_layers, moe))
    uses_rope = f.int_list("no_rope_layers") or [int((i + 1) % 4 != 0) for i in range(num_layers)]
    if len(uses_rope) != num_layers:
        raise f.error(f"no_rope_layers must have one entry per layer ({num_layers}), "
                      f"got {len(uses_rope)}")
    spec["layer_pattern"], spec["sliding_window"] = _layer_kinds(
        f, num_layers, lambda i: bool(uses_rope[i]), window_key="attention_chunk_size")
    spec["chunked_local_attention"] = spec["sliding_window"] is not None
    return _build(f, spec, ModuleLayout(mlp_block="feed_forward", moe_block="feed_forward",
                                        router="router", shared_experts="shared_expert"))


def _gemma3(f: Fields, name: str, hf_id: str) -> ModelSpec:
    spec = _base(f, name, hf_id)
    spec["qk_norm"] = True
    spec["norms_per_layer"] = 4
    pattern = f.int("sliding_window_pattern")
    spec["layer_pattern"], spec["sliding_window"] = _layer_kinds(
        f, spec["num_layers"], lambda i: (i + 1) % pattern != 0)
    return _build(f, spec, ModuleLayout())


def _gpt_oss(f: Fields, name: str, hf_id: str) -> ModelSpec:
    """OpenAI's gpt-oss: every layer MoE (`intermediate_size` is the expert width), sliding
    window (128) and full attention alternating (`layer_types`, else even layers windowed, as
    GptOssConfig's default). Its biases are counted: q/k/v and o (`attention_bias`), the
    router's (a Linear with bias) and every expert's gate/up and down projections.
    Its per-head learned attention sinks (one scalar a head and layer: 64 x 24 = 1,536
    parameters in gpt-oss-20b) add a term to each softmax denominator: counted as parameters,
    with no compute, memory traffic or KV worth pricing. `swiglu_limit` clamps the activation and
    `experts_per_token` repeats `num_experts_per_tok` (the two must agree)."""
    expert_width = f.int("intermediate_size")
    spec = _base(f, name, hf_id, expert_width=expert_width, attention_bias=True)
    spec["qkv_bias"] = spec["o_bias"] = f.flag("attention_bias")
    spec["attention_sinks"] = True
    top_k = f.int("num_experts_per_tok")
    alias = f.data.get("experts_per_token", top_k)
    if alias != top_k:
        raise f.error(f"experts_per_token ({alias!r}) must equal num_experts_per_tok ({top_k})")
    num_experts = f.int("num_local_experts")
    if top_k > num_experts:
        raise f.error(f"num_experts_per_tok ({top_k}) exceeds num_local_experts ({num_experts})")
    spec["moe"] = MoESpec(num_experts=num_experts, experts_per_token=top_k,
                          expert_intermediate_size=expert_width, router_bias=True,
                          expert_bias=True)
    spec["layer_pattern"], spec["sliding_window"] = _layer_kinds(
        f, spec["num_layers"], lambda i: i % 2 == 0)
    return _build(f, spec, ModuleLayout(router="router", fused_experts=True,
                                        expert_leaves=("gate_up_proj", "down_proj")))


READERS: dict[str, Callable[[Fields, str, str], ModelSpec]] = {
    "llama": _llama, "mistral": _llama, "mixtral": _mixtral, "qwen2": _qwen2, "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe, "deepseek_v2": _deepseek, "deepseek_v3": _deepseek,
    "llama4_text": _llama4, "gemma3_text": _gemma3, "gpt_oss": _gpt_oss,
}
"""The text model types servesim reads, each with its reader."""
