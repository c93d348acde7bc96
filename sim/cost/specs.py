"""Model and hardware specifications, and the quantities a roofline needs from them.

A `ModelSpec` is the architecture part of a Hugging Face `config.json`; everything else
(parameter count, weight bytes, KV bytes per token, FLOPs per token) is derived here, so the
cost model, the allocators and (later) the real backend all read one source of truth.

Counting conventions (stated because published "7B" figures differ on them):
- parameters include embeddings, the LM head (once when tied), norms and biases;
- "active" parameters of an MoE model count the experts one token is routed to, plus shared
  experts, the router, attention and embeddings;
- FLOPs are 2 per multiply-accumulate.

Weight bytes follow the checkpoint: every weight at `ModelSpec.weight_dtype` except the linear
weights a quantized checkpoint stores at `QuantizedWeights.dtype` (counted per component and
layer, so a checkpoint that keeps attention or routers in bf16 is counted as such). A dtype
given explicitly (`--weight-dtype`) overrides all of that and puts every weight at that dtype.
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
    "mxfp4": 0.53125,
}
"""Bytes per element. int4 ignores group-scale overhead (about 1-3% at group size 128). mxfp4
(OCP microscaling FP4, gpt-oss's experts) counts its scales: 4-bit E2M1 values plus one 8-bit
E8M0 scale per block of 32, 4.25 bits a weight."""


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPE_BYTES)}") from None


@dataclass(frozen=True, slots=True)
class RopeScaling:
    """A config's `rope_scaling` (RoPE frequencies stretched for long contexts). The cost model
    ignores it; the real backend must apply it or refuse, since it changes every output.
    `kind` is Hugging Face's `rope_type`; `low_freq_factor`/`high_freq_factor` and
    `original_max_position_embeddings` matter for `llama3` only."""

    kind: str
    factor: float
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None


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
    """Mixture of experts. Layer i is an MoE layer when i >= `first_moe_layer`,
    (i - first_moe_layer) is a multiple of `layer_period` and i is not in `dense_layers`;
    the others use the dense MLP. Shared experts have the routed experts' width."""

    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    num_shared_experts: int = 0
    first_moe_layer: int = 0
    layer_period: int = 1
    dense_layers: tuple[int, ...] = ()
    """Exceptions to the period (Qwen3-MoE's `mlp_only_layers`, Llama-4's `moe_layers`)."""
    router_bias: bool = False
    """A per-expert bias on the router's scores (DeepSeek-V3's `e_score_correction_bias`,
    gpt-oss's router Linear bias)."""
    expert_bias: bool = False
    """Every expert's projections carry biases (gpt-oss): gate/up and down, one per output."""

    def layers(self, num_layers: int) -> list[int]:
        """Indices of the MoE layers among `num_layers`."""
        return [i for i in range(self.first_moe_layer, num_layers, self.layer_period)
                if i not in self.dense_layers]


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


WEIGHT_COMPONENTS = ("embedding", "lm_head", "attention", "mlp", "experts", "shared_experts",
                     "router", "ssm", "vectors")
"""What weight bytes are counted by. Each component but `vectors` is one weight matrix (or a
set of them) per instance: `attention`, `mlp` (dense), `experts` (all routed experts of a
layer), `shared_experts`, `router` and `ssm` have one instance per layer that has them,
`embedding` and an untied `lm_head` one each. `vectors` are the norms and biases, never
quantized."""
QUANTIZABLE_COMPONENTS = ("lm_head", "attention", "mlp", "experts", "shared_experts", "router")
"""Linear weights a quantized checkpoint may store at its quantized dtype (embeddings are
lookups and stay at the model's dtype; SSM layers are not quantized here)."""


@dataclass(frozen=True, slots=True)
class QuantizedWeights:
    """Which linear weights a quantized checkpoint stores at `dtype`: per component, how many
    of its instances (layers) are quantized; the rest stay at the model's `weight_dtype`."""

    dtype: str
    method: str
    """The `quant_method` of the checkpoint's `quantization_config` (provenance only)."""
    num_quantized: tuple[tuple[str, int], ...]
    """(component, instances quantized) for components of `QUANTIZABLE_COMPONENTS`."""

    def count(self, component: str) -> int:
        return dict(self.num_quantized).get(component, 0)


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
    o_bias: bool = False
    """A bias on the attention output projection (gpt-oss), beside `qkv_bias`."""
    attention_sinks: bool = False
    """A learned logit per head added to each softmax's denominator (gpt-oss): counted as
    parameters (num_heads a layer); no compute, memory traffic or KV worth pricing."""
    gated_mlp: bool = True
    sliding_window: int | None = None
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    rope_theta: float = 10000.0
    """RoPE base frequency; the cost model ignores it, the real backend's model needs it."""
    rms_norm_eps: float = 1e-5
    rope_scaling: RopeScaling | None = None
    hidden_act: str = "silu"
    """The gated MLP's activation (Hugging Face's name); the cost model ignores it."""
    layer_pattern: tuple[str, ...] | None = None
    """Kinds of consecutive layers, repeated over the depth (e.g. 5 local + 1 global). None:
    every layer is local when `sliding_window` is set, else global."""
    chunked_local_attention: bool = False
    """Local layers attend within aligned chunks of `sliding_window` tokens (Llama-4's chunked
    attention) instead of a window sliding with each token: the cache keeps the current chunk."""
    kv_sharing: int = 1
    """Cross-layer attention (CLA): this many adjacent attention layers share one KV."""
    ssm: SSMSpec | None = None
    qk_norm: bool = False
    """A per-head RMSNorm (head_dim weights) on queries and on keys (Qwen3, Gemma-3)."""
    norms_per_layer: int = 2
    """Hidden-size norms per layer: 2 (pre-attention, pre-MLP); Gemma-3 adds post-norms: 4."""
    weight_dtype: str = "bf16"
    """The checkpoint's dtype (`torch_dtype`) of every weight not quantized."""
    quantization: QuantizedWeights | None = None
    mask_token_id: int | None = None
    """A masked-diffusion model's mask token (`--decoding block-diffusion` on the real backend
    feeds it at positions not yet committed); None for autoregressive models."""

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
        dtype_bytes(self.weight_dtype)
        if self.quantization is not None:
            dtype_bytes(self.quantization.dtype)
            unknown = {c for c, _ in self.quantization.num_quantized} - set(QUANTIZABLE_COMPONENTS)
            if unknown:
                raise ValueError(f"{self.name}: cannot quantize {sorted(unknown)}")

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
        return len(self.moe.layers(self.num_layers))

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
        return q + kv + out + self.attention_vector_params_per_layer()

    def attention_vector_params_per_layer(self) -> int:
        """The norms and biases inside one attention layer (never quantized)."""
        if self.mla is not None:
            return self.mla.kv_lora_rank + (self.mla.q_lora_rank or 0)
        d = self.attn_head_dim
        bias = (self.num_heads + 2 * self.num_kv_heads) * d if self.qkv_bias else 0
        bias += self.hidden_size if self.o_bias else 0
        bias += self.num_heads if self.attention_sinks else 0
        return bias + (2 * d if self.qk_norm else 0)

    def _mlp_params(self, intermediate: int) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * intermediate

    def dense_mlp_params_per_layer(self) -> int:
        return self._mlp_params(self.intermediate_size)

    def expert_params(self) -> int:
        assert self.moe is not None
        return self._mlp_params(self.moe.expert_intermediate_size)

    def expert_bias_params(self) -> int:
        """The biases of one expert's projections (never quantized: counted as vectors)."""
        assert self.moe is not None
        if not self.moe.expert_bias:
            return 0
        up = 2 if self.gated_mlp else 1
        return up * self.moe.expert_intermediate_size + self.hidden_size

    def moe_params_per_layer(self, active_only: bool) -> int:
        assert self.moe is not None
        m = self.moe
        routed = m.experts_per_token if active_only else m.num_experts
        router = self.hidden_size * m.num_experts + (m.num_experts if m.router_bias else 0)
        per_expert = self.expert_params() + self.expert_bias_params()
        return (routed + m.num_shared_experts) * per_expert + router

    def embedding_params(self) -> int:
        copies = 1 if self.tied_embeddings else 2
        return copies * self.vocab_size * self.hidden_size

    def _params(self, active_only: bool) -> int:
        norms = (self.norms_per_layer * self.num_layers + 1) * self.hidden_size
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

    def component_params(self) -> dict[str, tuple[int, int]]:
        """(instances, parameters per instance) of each of `WEIGHT_COMPONENTS`: together they
        sum to `param_count`."""
        h = self.hidden_size
        vectors = ((self.norms_per_layer * self.num_layers + 1) * h
                   + self.num_attention_layers * self.attention_vector_params_per_layer())
        parts = {
            "embedding": (1, self.vocab_size * h),
            "lm_head": (0 if self.tied_embeddings else 1, self.vocab_size * h),
            "attention": (self.num_attention_layers,
                          self.attention_params_per_layer() - self.attention_vector_params_per_layer()),
            "mlp": (self.num_dense_mlp_layers, self.dense_mlp_params_per_layer()),
            "experts": (0, 0), "shared_experts": (0, 0), "router": (0, 0),
            "ssm": (self.count_layers("ssm"), self.ssm.params(h) if self.ssm else 0),
        }
        if self.moe is not None:
            m, layers = self.moe, self.num_moe_layers
            parts["experts"] = (layers, m.num_experts * self.expert_params())
            parts["shared_experts"] = (layers, m.num_shared_experts * self.expert_params())
            parts["router"] = (layers, h * m.num_experts)
            vectors += layers * m.num_experts if m.router_bias else 0
            vectors += layers * (m.num_experts + m.num_shared_experts) * self.expert_bias_params()
        parts["vectors"] = (1, vectors)
        return parts

    def component_weight_bytes(self, dtype: str | None = None) -> dict[str, float]:
        """Bytes of each weight component: at `dtype` when given (an override), else at the
        checkpoint's own dtypes (quantized instances at the quantized dtype)."""
        base = dtype_bytes(dtype or self.weight_dtype)
        quant = self.quantization if dtype is None else None
        result = {}
        for component, (instances, params) in self.component_params().items():
            quantized = min(quant.count(component), instances) if quant else 0
            result[component] = (instances - quantized) * params * base
            if quantized:
                result[component] += quantized * params * dtype_bytes(quant.dtype)
        return result

    def weight_bytes(self, dtype: str | None = None) -> float:
        """All weights (what must fit in device memory): at `dtype` when given, else at the
        checkpoint's own (possibly mixed) dtypes."""
        if dtype is not None:
            return self.param_count * dtype_bytes(dtype)
        total = 0.0
        for nbytes in self.component_weight_bytes().values():
            total += nbytes
        return total

    def gemm_dtype(self, dtype: str | None = None) -> str:
        """The dtype of the big GEMM weights (dense MLPs and experts): `dtype` when given, else
        the quantized dtype when it holds most of those weights, else `weight_dtype`."""
        if dtype is not None:
            return dtype
        if self.quantization is None:
            return self.weight_dtype
        parts = self.component_params()
        big = ("mlp", "experts", "shared_experts")
        total = sum(parts[c][0] * parts[c][1] for c in big)
        quantized = sum(min(self.quantization.count(c), parts[c][0]) * parts[c][1] for c in big)
        return self.quantization.dtype if 2 * quantized > total else self.weight_dtype

    def expert_dtype(self, dtype: str | None = None) -> str:
        """The routed experts' dtype (what the fused-MoE kernel reads): `dtype` when given,
        else the quantized dtype when most MoE layers' experts are quantized, else
        `weight_dtype`."""
        if dtype is not None:
            return dtype
        if self.quantization is None or self.moe is None:
            return self.weight_dtype
        quantized = 2 * self.quantization.count("experts") > self.num_moe_layers
        return self.quantization.dtype if quantized else self.weight_dtype

    def dense_gemm_dtype(self, dtype: str | None = None) -> str:
        """The dtype of the GEMMs outside the fused experts: `gemm_dtype`, unless the
        checkpoint quantizes nothing but the experts (gpt-oss's mxfp4 keeps attention, router
        and LM head in bf16), then `weight_dtype`."""
        if dtype is not None or self.quantization is None:
            return self.gemm_dtype(dtype)
        if {c for c, _ in self.quantization.num_quantized} == {"experts"}:
            return self.weight_dtype
        return self.gemm_dtype()

    def weight_dtype_label(self, dtype: str | None = None) -> str:
        """How the weights are stored, for messages: `fp8`, or `fp8+bf16` when mixed."""
        if dtype is not None or self.quantization is None:
            return dtype or self.weight_dtype
        return f"{self.quantization.dtype}+{self.weight_dtype}"

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
        local layers the last `sliding_window` (chunked ones the current chunk's tokens), SSM
        layers a constant state."""
        per_layer = self.kv_elements_per_token_per_layer() * dtype_bytes(kv_dtype)
        window = min(tokens, self.sliding_window or 0)
        if self.chunked_local_attention and tokens:
            window = (tokens - 1) % window + 1
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
    cuda_total_mem_bytes: float | None = None
    """Total memory as cudaMemGetInfo reports it (less than the datasheet's: the driver keeps
    some), which vLLM multiplies by gpu_memory_utilization; None where not recorded."""
    price_per_hour: float | None = None
    """USD per GPU-hour, the price `servesim capacity --grid` ranks by when `--gpu-price` names
    none for this hardware; None: unpriced (catalog GPUs: no cited list price)."""
    kernel_tables: str | None = None
    """The shipped measured kernel tables (`sim.cost.kernel_tables`) this device is priced by
    under `--cost-model auto`/`measured`; None: it has none, and `auto` takes the roofline."""
    coefficients: str | None = None
    """The hardware key its roofline coefficients are looked up under (defaults and
    calibration tables); None: its own `name`."""

    @property
    def coefficients_name(self) -> str:
        return self.coefficients or self.name

    def compute_peak(self, dtype: str) -> float:
        """Peak FLOP/s for a compute dtype; weight-only quantized models compute in bf16."""
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        return self.peak_flops["bf16"]

    @property
    def ridge_point_flops_per_byte(self) -> float:
        return self.peak_flops["bf16"] / self.mem_bandwidth_bytes_s


def expected_distinct_experts(num_experts: int, experts_per_token: int, tokens: int) -> float:
    """Experts touched (so weights read) when `tokens` tokens each pick `experts_per_token`.

    Assumes uniform routing: each expert is missed by one token with probability 1 - k/E.
    """
    if tokens <= 0:
        return 0.0
    miss = (1.0 - experts_per_token / num_experts) ** tokens
    return num_experts * (1.0 - miss) if not math.isclose(miss, 1.0) else 0.0
