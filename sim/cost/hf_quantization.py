"""Which linear weights a quantized Hugging Face checkpoint stores below its own dtype.

Read from the config's `quantization_config`:

    compressed-tensors  config_groups' weights: 8-bit float -> fp8, 8-bit int -> int8,
                        4-bit int -> int4; their `targets`, minus the `ignore` list
                        ("re:" regexes matched from the module name's start, else exact names;
                        "Linear" means every projection, a class name ending in "Attention"
                        every attention projection)
    fp8, fbgemm_fp8     fp8, minus `modules_to_not_convert` and the LM head
    awq, gptq           `bits` 4 -> int4, 8 -> int8, minus `modules_to_not_convert`; routers
                        and the LM head stay (gptq's `lm_head: true` quantizes it)
    mxfp4               the routed experts only -> mxfp4 (gpt-oss: transformers and vLLM
                        convert only the fused experts), minus `modules_to_not_convert`

`modules_to_not_convert` entries match as transformers matches them: a regex from the name's
start up to a module boundary ("mlp.gate" does not match "mlp.gate_proj"), or a suffix.
Embeddings are lookups and never quantized, nor is a router that is not a linear layer
(DeepSeek's). A component's instance in one layer (its attention projections, its experts) is
quantized when every one of its projections is; experts are matched by expert 0's names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sim.cost.specs import ModelSpec, QuantizedWeights

COMPRESSED_TENSOR_DTYPES = {(8, "float"): "fp8", (8, "int"): "int8", (4, "int"): "int4"}
BITS_DTYPES = {8: "int8", 4: "int4"}
MLP_LEAVES = ("gate_proj", "up_proj", "down_proj")
_BOUNDARY = r"(?:(?<=\.)|(?=\.|$))"


@dataclass(frozen=True, slots=True)
class ModuleLayout:
    """Module names of a family's checkpoint (what a quantization ignore list matches)."""

    attention: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    mlp_block: str = "mlp"
    moe_block: str = "mlp"
    expert_leaves: tuple[str, ...] = MLP_LEAVES
    router: str = "gate"
    shared_experts: str = "shared_experts"
    router_is_linear: bool = True
    """DeepSeek's router is a module of its own, which quantizers leave alone."""
    fused_experts: bool = False
    """All experts of a layer are one module with stacked weights (gpt-oss's
    `mlp.experts.gate_up_proj`), not one module per expert."""


@dataclass(frozen=True, slots=True)
class _Scheme:
    dtype: str
    quantizes: Callable[[str], bool]
    """Whether the linear layer of this module name is stored at `dtype`."""
    lm_head: bool
    routers: bool


def quantized_weights(config: Any, model: ModelSpec, layout: ModuleLayout, *,
                      multimodal: bool, file: Path) -> QuantizedWeights | None:
    """The quantized components of `model` under `config` (its `quantization_config`), or
    None when the checkpoint is not quantized."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: quantization_config must be an object, got {config!r}")
    method = config.get("quant_method")
    readers = {"compressed-tensors": _compressed_tensors, "fp8": _fp8, "fbgemm_fp8": _fp8,
               "awq": _bits, "gptq": _bits, "mxfp4": _mxfp4}
    if method not in readers:
        raise ValueError(f"{file}: quantization_config.quant_method {method!r} is not "
                         f"modelled; servesim reads {', '.join(readers)}")
    scheme = readers[method](config, f"{file}: quantization_config")
    counts = {component: sum(1 for layer in layers
                             if all(scheme.quantizes(n) for n in _names(layout, component, layer, multimodal)))
              for component, layers in _instances(model, layout, scheme).items()}
    quantized = tuple((c, n) for c, n in counts.items() if n)
    return QuantizedWeights(scheme.dtype, method, quantized) if quantized else None


def _instances(model: ModelSpec, layout: ModuleLayout,
               scheme: _Scheme) -> dict[str, list[int | None]]:
    """The layers holding each quantizable component (None: a whole-model one)."""
    moe = model.moe.layers(model.num_layers) if model.moe else []
    result: dict[str, list[int | None]] = {
        "attention": [i for i, kind in enumerate(model.layer_kinds) if kind != "ssm"],
        "mlp": [i for i in range(model.num_layers) if i not in moe],
        "experts": list(moe),
    }
    if model.moe is not None and model.moe.num_shared_experts:
        result["shared_experts"] = list(moe)
    if scheme.routers and layout.router_is_linear:
        result["router"] = list(moe)
    if scheme.lm_head and not model.tied_embeddings:
        result["lm_head"] = [None]
    return result


def _names(layout: ModuleLayout, component: str, layer: int | None,
           multimodal: bool) -> list[str]:
    """The module names of one instance, as checkpoints spell them (both spellings of a
    multimodal model's language model)."""
    if component == "lm_head":
        return ["lm_head", "language_model.lm_head"] if multimodal else ["lm_head"]
    prefixes = ([f"language_model.model.layers.{layer}", f"model.language_model.layers.{layer}"]
                if multimodal else [f"model.layers.{layer}"])
    leaves = {
        "attention": [f"self_attn.{leaf}" for leaf in layout.attention],
        "mlp": [f"{layout.mlp_block}.{leaf}" for leaf in MLP_LEAVES],
        "experts": [f"{layout.moe_block}.experts.{'' if layout.fused_experts else '0.'}{leaf}"
                    for leaf in layout.expert_leaves],
        "shared_experts": [f"{layout.moe_block}.{layout.shared_experts}.{leaf}" for leaf in MLP_LEAVES],
        "router": [f"{layout.moe_block}.{layout.router}"],
    }[component]
    return [f"{prefix}.{leaf}" for prefix in prefixes for leaf in leaves]


# ---- the methods ----------------------------------------------------------------------------

def _compressed_tensors(config: dict[str, Any], where: str) -> _Scheme:
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise ValueError(f"{where}: compressed-tensors needs config_groups")
    dtypes, targets = set(), []
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict):
            raise ValueError(f"{where}: config_groups.{name} has no weights scheme")
        key = (weights.get("num_bits"), weights.get("type"))
        if key not in COMPRESSED_TENSOR_DTYPES:
            raise ValueError(f"{where}: config_groups.{name} stores {key[0]}-bit {key[1]} "
                             f"weights; servesim models 8-bit float, 8-bit int and 4-bit int")
        dtypes.add(COMPRESSED_TENSOR_DTYPES[key])
        targets += _string_list(group.get("targets", ["Linear"]), f"{where}: config_groups.{name}.targets")
    if len(dtypes) > 1:
        raise ValueError(f"{where}: groups of different precisions ({sorted(dtypes)}) are not modelled")
    ignore = _string_list(config.get("ignore") or [], f"{where}: ignore")
    for pattern in [*targets, *ignore]:
        _regex(pattern[3:], where) if pattern.startswith("re:") else None

    def quantizes(name: str) -> bool:
        return (any(_ct_match(t, name) for t in targets)
                and not any(_ct_match(i, name) for i in ignore))
    return _Scheme(dtypes.pop(), quantizes, lm_head=True, routers=True)


def _fp8(config: dict[str, Any], where: str) -> _Scheme:
    keep = _string_list(config.get("modules_to_not_convert") or [], f"{where}: modules_to_not_convert")
    return _Scheme("fp8", lambda name: not any(_hf_match(k, name) for k in keep),
                   lm_head=False, routers=True)


def _bits(config: dict[str, Any], where: str) -> _Scheme:
    bits = config.get("bits")
    if bits not in BITS_DTYPES:
        raise ValueError(f"{where}: bits must be 4 or 8, got {bits!r}")
    keep = _string_list(config.get("modules_to_not_convert") or [], f"{where}: modules_to_not_convert")
    return _Scheme(BITS_DTYPES[bits], lambda name: not any(_hf_match(k, name) for k in keep),
                   lm_head=config.get("lm_head") is True, routers=False)


def _mxfp4(config: dict[str, Any], where: str) -> _Scheme:
    keep = _string_list(config.get("modules_to_not_convert") or [], f"{where}: modules_to_not_convert")
    return _Scheme("mxfp4", lambda name: ".experts." in name and not any(
        _hf_match(k, name) for k in keep), lm_head=False, routers=False)


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of strings, got {value!r}")
    return value


def _regex(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: bad regex {pattern!r} ({exc})") from None


def _ct_match(target: str, name: str) -> bool:
    """compressed-tensors' rule: "re:" regexes from the start, else the exact module name, or
    a class name ("Linear": any projection; "...Attention": attention projections)."""
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    if target == "Linear":
        return True
    if "." not in target and target.endswith("Attention"):
        return ".self_attn." in name
    return target == name


def _hf_match(pattern: str, name: str) -> bool:
    """transformers' `modules_to_not_convert` rule: a regex from the start up to a module
    boundary, or a suffix."""
    try:
        matched = re.match(rf"(?:{pattern}){_BOUNDARY}", name) is not None
    except re.error:
        matched = name == pattern or name.startswith(pattern + ".")
    return matched or name.endswith(pattern)
