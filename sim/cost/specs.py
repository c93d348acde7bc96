"""Model and hardware specifications, and the quantities a roofline needs from them.

A `ModelSpec` is the architecture part of a Hugging Face `config.json`; everything else
(parameter count, weight bytes, KV bytes per token, FLOPs per token) is derived here, so the
cost model, the allocators and (later) the real backend all read one source of truth.

Counting conventions (stated because published "7B" figures differ on them):
- parameters include embeddings, the LM head (once when tied), norms and biases;
- "active" parameters of an MoE model count the experts one token is routed to, plus shared
  experts, attention and embeddings;
- FLOPs are 2 per multiply-accumulate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}
"""Bytes per element. int4 ignores group-scale overhead (about 1-3% at group size 128)."""


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_BYTES)}") from None


@dataclass(frozen=True, slots=True)
class MLASpec:
    """DeepSeek's multi-head latent attention: the cache holds one latent per token and layer."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None


@dataclass(frozen=True, slots=True)
class MoESpec:
    """Mixture of experts. Layer i is an MoE layer when i >= `first_moe_layer` and
    (i - first_moe_layer) is a multiple of `layer_period`; the others use the dense MLP."""

    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    num_shared_experts: int = 0
    first_moe_layer: int = 0
    layer_period: int = 1


@dataclass(frozen=True, slots=True)
class SSMSpec:
    """Mamba-style selective state-space layers: a constant-size recurrent state per request
    (the `d_inner x d_state` SSM state plus the `d_inner x d_conv` convolution window),
    whatever the context length."""

    d_inner: int
    d_state: int
    d_conv: int
    dt_rank: int

    def params(self, hidden_size: int) -> int:
        d = self.d_inner
        in_proj = hidden_size * 2 * d
        conv = d * self.d_conv + d
        x_proj = d * (self.dt_rank + 2 * self.d_state)
        dt_proj = self.dt_rank * d + d
        return in_proj + conv + x_proj + dt_proj + d * self.d_state + d + d * hidden_size

    def state_elements(self) -> int:
        return self.d_inner * (self.d_state + self.d_conv)


LAYER_KINDS = ("global", "local", "ssm")
"""global: full causal attention; local: sliding-window attention; ssm: recurrent state."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    hf_id: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    max_model_len: int
    head_dim: int | None = None
    tied_embeddings: bool = False
    qkv_bias: bool = False
    gated_mlp: bool = True
    sliding_window: int | None = None
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    rope_theta: float = 10000.0
    """RoPE base frequency; the cost model ignores it, the real backend's model needs it."""
    rms_norm_eps: float = 1e-5
    layer_pattern: tuple[str, ...] | None = None
    """Kinds of consecutive layers, repeated over the depth (e.g. 5 local + 1 global). None:
    every layer is local when `sliding_window` is set, else global."""
    kv_sharing: int = 1
    """Cross-layer attention (CLA): this many adjacent attention layers share one KV."""
    ssm: SSMSpec | None = None

    def __post_init__(self) -> None:
        kinds = set(self.layer_kinds)
        if not kinds <= set(LAYER_KINDS):
            raise ValueError(f"{self.name}: layer kinds must be among {LAYER_KINDS}")
        if "local" in kinds and self.sliding_window is None:
            raise ValueError(f"{self.name}: local layers need a sliding_window")
        if "ssm" in kinds and self.ssm is None:
            raise ValueError(f"{self.name}: ssm layers need an SSMSpec")
        if not kinds & {"global", "local"}:
            raise ValueError(f"{self.name}: servesim models need at least one attention layer")

    # ---- shapes -------------------------------------------------------------------------
    @property
    def attn_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        if self.layer_pattern is None:
            return ("local" if self.sliding_window else "global",) * self.num_layers
        pattern = self.layer_pattern
        return tuple(pattern[i % len(pattern)] for i in range(self.num_layers))

    def count_layers(self, kind: str) -> int:
        return self.layer_kinds.count(kind)

    @property
    def num_attention_layers(self) -> int:
        return self.count_layers("global") + self.count_layers("local")

    def num_kv_layers(self, kind: str) -> int:
        """Distinct KV caches among the layers of `kind` (CLA shares one per group)."""
        return -(-self.count_layers(kind) // self.kv_sharing)

    @property
    def num_moe_layers(self) -> int:
        if self.moe is None:
            return 0
        first, period = self.moe.first_moe_layer, self.moe.layer_period
        return len(range(first, self.num_layers, period))

    @property
    def num_dense_mlp_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    # ---- parameters (per layer, one copy, no tensor parallel split) ----------------------
    def attention_params_per_layer(self) -> int:
        h, nh, d = self.hidden_size, self.num_heads, self.attn_head_dim
        if self.mla is not None:
            m = self.mla
            qk_dim = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank is None:
                q = h * nh * qk_dim
            else:
                q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * nh * qk_dim
            kv_down = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
            kv_up = m.kv_lora_rank * nh * (m.qk_nope_head_dim + m.v_head_dim)
            out = nh * m.v_head_dim * h
            return q + kv_down + kv_up + out
        q = h * nh * d
        kv = 2 * h * self.num_kv_heads * d
        out = nh * d * h
        bias = (nh + 2 * self.num_kv_heads) * d if self.qkv_bias else 0
        return q + kv + out + bias

    def _mlp_params(self, intermediate: int) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * intermediate

    def dense_mlp_params_per_layer(self) -> int:
        return self._mlp_params(self.intermediate_size)

    def expert_params(self) -> int:
        assert self.moe is not None
        return self._mlp_params(self.moe.expert_intermediate_size)

    def moe_params_per_layer(self, active_only: bool) -> int:
        assert self.moe is not None
        m = self.moe
        routed = m.experts_per_token if active_only else m.num_experts
        router = self.hidden_size * m.num_experts
        return (routed + m.num_shared_experts) * self.expert_params() + router

    def embedding_params(self) -> int:
        copies = 1 if self.tied_embeddings else 2
        return copies * self.vocab_size * self.hidden_size

    def _params(self, active_only: bool) -> int:
        norms = (2 * self.num_layers + 1) * self.hidden_size
        layers = self.num_attention_layers * self.attention_params_per_layer()
        if self.ssm is not None:
            layers += self.count_layers("ssm") * self.ssm.params(self.hidden_size)
        layers += self.num_dense_mlp_layers * self.dense_mlp_params_per_layer()
        if self.moe is not None:
            layers += self.num_moe_layers * self.moe_params_per_layer(active_only)
        return layers + norms + self.embedding_params()

    @property
    def param_count(self) -> int:
        return self._params(active_only=False)

    @property
    def active_param_count(self) -> int:
        return self._params(active_only=True)

    def weight_bytes(self, dtype: str = "bf16") -> float:
        """All weights at `dtype` (what must fit in device memory)."""
        return self.param_count * dtype_bytes(dtype)

    # ---- KV cache -----------------------------------------------------------------------
    def kv_elements_per_token_per_layer(self) -> int:
        """K and V for MHA/GQA/MQA; the compressed latent plus the shared RoPE key for MLA."""
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.attn_head_dim

    @property
    def num_distinct_kv_layers(self) -> int:
        return self.num_kv_layers("global") + self.num_kv_layers("local")

    def kv_bytes_per_token(self, kv_dtype: str = "bf16") -> float:
        """KV bytes one token occupies across all attention layers (inside every window)."""
        per_layer = self.kv_elements_per_token_per_layer() * dtype_bytes(kv_dtype)
        return self.num_distinct_kv_layers * per_layer

    def ssm_state_bytes(self, dtype: str = "bf16") -> float:
        """Recurrent state one request holds across all SSM layers, at any length."""
        if self.ssm is None:
            return 0.0
        return self.count_layers("ssm") * self.ssm.state_elements() * dtype_bytes(dtype)

    def kv_footprint_bytes(self, tokens: int, kv_dtype: str = "bf16") -> float:
        """Cache bytes of one request holding `tokens` tokens: global layers keep them all,
        local layers the last `sliding_window`, SSM layers a constant state."""
        per_layer = self.kv_elements_per_token_per_layer() * dtype_bytes(kv_dtype)
        window = min(tokens, self.sliding_window or 0)
        return (self.num_kv_layers("global") * tokens + self.num_kv_layers("local") * window) * per_layer + (
            self.ssm_state_bytes(kv_dtype) if tokens else 0.0
        )

    def attended_context(self, context_tokens: int) -> int:
        """Tokens one query of a local layer attends to: the last `sliding_window` at most."""
        if self.sliding_window is None:
            return context_tokens
        return min(context_tokens, self.sliding_window)

    # ---- FLOPs --------------------------------------------------------------------------
    def attention_score_dim(self) -> tuple[int, int]:
        """(QK dot-product width, PV width) per head, as computed by the serving kernels.

        MLA is served with the up-projections absorbed, so scores are taken in the latent space:
        QK over kv_lora_rank + rope dims, PV over kv_lora_rank.
        """
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim, self.mla.kv_lora_rank
        return self.attn_head_dim, self.attn_head_dim

    def matmul_flops_per_token(self) -> float:
        """Linear-layer FLOPs one token costs (active weights, LM head included)."""
        non_embedding = self.active_param_count - self.embedding_params()
        return 2.0 * (non_embedding + self.vocab_size * self.hidden_size)

    def attention_flops_per_token(self, context_tokens: int) -> float:
        """Score and value FLOPs of one new token attending to `context_tokens` tokens."""
        qk, pv = self.attention_score_dim()
        attended = (self.count_layers("global") * context_tokens
                    + self.count_layers("local") * self.attended_context(context_tokens))
        return 2.0 * self.num_heads * (qk + pv) * attended

    def flops_per_token(self, context_tokens: int = 0) -> float:
        return self.matmul_flops_per_token() + self.attention_flops_per_token(context_tokens)


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """One accelerator. Bandwidths are per direction, per device, in bytes/s."""

    name: str
    description: str
    peak_flops: dict[str, float]
    """Dense (no sparsity) peak FLOP/s per compute dtype."""
    mem_bandwidth_bytes_s: float
    mem_capacity_bytes: float
    interconnect_bandwidth_bytes_s: float
    """Device-to-device link used by tensor-parallel all-reduce (NVLink, or PCIe when none)."""
    host_link_bandwidth_bytes_s: float
    """Device-to-host link (PCIe), for KV swap."""
    interconnect_latency_s: float = 5e-6

    def compute_peak(self, dtype: str) -> float:
        """Peak FLOP/s for a compute dtype; weight-only quantized models compute in bf16."""
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        return self.peak_flops["bf16"]

    @property
    def ridge_point_flops_per_byte(self) -> float:
        return self.peak_flops["bf16"] / self.mem_bandwidth_bytes_s


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def expected_distinct_experts(num_experts: int, experts_per_token: int, tokens: int) -> float:
    """Experts touched (so weights read) when `tokens` tokens each pick `experts_per_token`.

    Assumes uniform routing: each expert is missed by one token with probability 1 - k/E.
    """
    if tokens <= 0:
        return 0.0
    miss = (1.0 - experts_per_token / num_experts) ** tokens
    return num_experts * (1.0 - miss) if not math.isclose(miss, 1.0) else 0.0
