"""A Llama-architecture decoder (RMSNorm, RoPE, GQA, SwiGLU, per-layer sliding window, Q/K/V
biases, Q/K norms) built from the same `ModelSpec` the cost model reads, at any size.

The forward pass takes a packed batch of new tokens (prefill chunks and decodes of several
sequences, concatenated), writes their K/V into the paged pool, and attends over each
sequence's cached prefix through its page table: the layout in `backend/kernels/reference.py`.
RoPE follows the Hugging Face convention (rotate the two halves of each head), so HF-format
weights load as they are; GGUF weights are un-permuted on load (see `backend/gguf_weights.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from backend.kernels import triton_takes_head_dim
from backend.kernels.reference import paged_attention_ref
from backend.kernels.torch_paged import context_slots, paged_decode_attention_torch
from backend.kv_cache import KVCache
from sim.cost.specs import ModelSpec, RopeScaling


_LOGIT_SPREAD = 4.0
"""Seeded weights' logit scale: about the std of a random model's logits (`init_random`)."""


def check_supported(spec: ModelSpec) -> None:
    """Refuse, in one line, what a Llama-family decoder cannot compute faithfully."""
    if spec.mla is not None or spec.moe is not None or not spec.gated_mlp:
        raise ValueError(
            f"the real backend runs dense gated-MLP Llama-style models; {spec.name} is not one"
            f" (it has {_unsupported_parts(spec)})"
        )
    if "ssm" in spec.layer_kinds:
        raise ValueError(f"the real backend runs attention layers only; {spec.name} has "
                         f"state-space (ssm) layers")
    if spec.kv_sharing != 1:
        raise ValueError(f"the real backend gives every layer its own KV; {spec.name} shares "
                         f"one KV across {spec.kv_sharing} layers (cross-layer attention)")
    if spec.norms_per_layer != 2:
        raise ValueError(f"the real backend runs Llama-family layers (a norm before attention "
                         f"and one before the MLP); {spec.name} has {spec.norms_per_layer} "
                         f"norms per layer (Gemma-style)")
    if spec.hidden_act != "silu":
        raise ValueError(f"the real backend's gated MLP uses SiLU; {spec.name} has hidden_act "
                         f"{spec.hidden_act!r}")
    scaling = spec.rope_scaling
    if scaling is not None and scaling.kind not in SCALED_ROPE_KINDS:
        raise ValueError(f"the real backend applies rope_scaling of type "
                         f"{' or '.join(SCALED_ROPE_KINDS)}; {spec.name} has {scaling.kind!r}")
    if scaling is not None and scaling.kind == "llama3" and None in (
            scaling.low_freq_factor, scaling.high_freq_factor,
            scaling.original_max_position_embeddings):
        raise ValueError(f"{spec.name}: llama3 rope_scaling needs low_freq_factor, "
                         f"high_freq_factor and original_max_position_embeddings")


def _unsupported_parts(spec: ModelSpec) -> str:
    parts = [name for name, present in (("MLA", spec.mla is not None),
                                        ("mixture of experts", spec.moe is not None),
                                        ("an ungated MLP", not spec.gated_mlp)) if present]
    return " and ".join(parts)


def uses_triton(spec: ModelSpec, device: torch.device) -> bool:
    """Attention runs the Triton kernels on CUDA when they take the model's head_dim, else
    the torch reference (a head_dim of 80 or 96, say, runs correctly, only slower)."""
    return device.type == "cuda" and triton_takes_head_dim(spec.attn_head_dim)


@dataclass(slots=True)
class BatchLayout:
    """Where a packed batch's tokens sit: one row per sequence, as the attention kernels read.

    `slots` [T] are the flat pool slots the new tokens' K/V go to; `page_tables` [B, max_pages]
    (int32) with `page_size`; `query_start` [B + 1] and `context_lens` [B] as python lists for
    the reference path and as tensors for the kernels. `attend_ends` [T], when set, bounds the
    keys each token sees (exclusive position) in place of the causal mask (block diffusion);
    the torch reference attends then. `chunk_masks`, when set, gives per sequence an [n, n]
    mask among its n new tokens (None: causal) in place of the causal one (lookahead's window
    and candidates); `positions` then carry each token's own position, not its slot order,
    and the torch reference attends.
    """

    positions: torch.Tensor
    slots: torch.Tensor
    page_tables: torch.Tensor
    page_size: int
    query_start: list[int]
    context_lens: list[int]
    use_triton: bool = False
    attend_ends: torch.Tensor | None = None
    chunk_masks: list[torch.Tensor | None] | None = None
    _decode_gather: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def is_decode_only(self) -> bool:
        return len(self.query_start) - 1 == self.query_start[-1]

    def decode_gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sequence's context slots [B, L_max] and lengths [B], built once per step
        for all layers' batched decode attention."""
        if self._decode_gather is None:
            lengths = torch.tensor(self.context_lens, device=self.page_tables.device)
            self._decode_gather = (context_slots(self.page_tables, lengths, self.page_size),
                                   lengths)
        return self._decode_gather


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


SCALED_ROPE_KINDS = ("linear", "llama3")
"""The `rope_scaling` types the backend applies; it refuses the others (YaRN, dynamic, ...)."""


def scaled_inv_freq(inv_freq: torch.Tensor, scaling: RopeScaling | None) -> torch.Tensor:
    """RoPE frequencies after a config's `rope_scaling`, as Hugging Face computes them.

    linear: every frequency divided by `factor`. llama3 (Llama 3.1 / 3.2): wavelengths shorter
    than original_context / high_freq_factor kept, longer than original_context /
    low_freq_factor divided by `factor`, and the band between blended linearly in
    original_context / wavelength."""
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    low, high = scaling.low_freq_factor, scaling.high_freq_factor
    original = scaling.original_max_position_embeddings
    wavelength = 2 * math.pi / inv_freq
    smooth = ((original / wavelength - low) / (high - low)).clamp(0.0, 1.0)
    return (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq


class Rotary:
    """cos/sin tables for every position up to the context length, built once."""

    def __init__(self, head_dim: int, max_positions: int, theta: float,
                 device: torch.device, scaling: RopeScaling | None = None) -> None:
        inv_freq = scaled_inv_freq(
            theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim), scaling)
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        angles = torch.cat([freqs, freqs], dim=-1)  # [max_positions, head_dim]
        self.cos = angles.cos().float().to(device)
        self.sin = angles.sin().float().to(device)

    def at(self, positions: torch.Tensor) -> PositionRotation:
        """The rotation of a batch's tokens, looked up once per step for every layer."""
        return PositionRotation(self.cos[positions][:, None, :], self.sin[positions][:, None, :])


@dataclass(frozen=True, slots=True)
class PositionRotation:
    """cos/sin [T, 1, head_dim] of a batch's token positions."""

    cos: torch.Tensor
    sin: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, heads, head_dim] rotated by each token's position."""
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return (x.float() * self.cos + rotated.float() * self.sin).to(x.dtype)


class Attention(nn.Module):
    """GQA self-attention; `sliding_window` (None: full causal) is this layer's own, since a
    model may interleave local and global layers (`ModelSpec.layer_kinds`). With
    `spec.qk_norm` (Qwen3) each query and key head is RMS-normalized before RoPE."""

    def __init__(self, spec: ModelSpec, sliding_window: int | None) -> None:
        super().__init__()
        d = spec.attn_head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, d
        self.sliding_window = sliding_window
        self.q_proj = nn.Linear(spec.hidden_size, spec.num_heads * d, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(spec.hidden_size, spec.num_kv_heads * d, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(spec.hidden_size, spec.num_kv_heads * d, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(spec.num_heads * d, spec.hidden_size, bias=False)
        self.q_norm = RMSNorm(d, spec.rms_norm_eps) if spec.qk_norm else None
        self.k_norm = RMSNorm(d, spec.rms_norm_eps) if spec.qk_norm else None

    def forward(self, x: torch.Tensor, layer: int, layout: BatchLayout, kv: KVCache,
                rotation: PositionRotation) -> torch.Tensor:
        num_tokens = x.shape[0]
        q = self.q_proj(x).view(num_tokens, self.num_heads, self.head_dim)  # [T, H, D]
        k = self.k_proj(x).view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, KVH, D]
        v = self.v_proj(x).view(num_tokens, self.num_kv_heads, self.head_dim)  # [T, KVH, D]
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = rotation.apply(q)
        k = rotation.apply(k)
        kv.write(layer, layout.slots, k, v)
        k_pages, v_pages = kv.pages(layer, layout.page_size)
        out = self._attend(q, k_pages, v_pages, layout)  # [T, H, D]
        return self.o_proj(out.reshape(num_tokens, self.num_heads * self.head_dim))

    def _attend(self, q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                layout: BatchLayout) -> torch.Tensor:
        scale = self.head_dim ** -0.5
        # block diffusion's or lookahead's mask runs on the torch reference only
        masked = layout.attend_ends is not None or layout.chunk_masks is not None
        if not masked and not layout.use_triton and layout.is_decode_only:
            slots, context_lens = layout.decode_gather()
            return paged_decode_attention_torch(q, k_pages, v_pages, slots, context_lens, scale,
                                                self.sliding_window)
        if masked or not layout.use_triton:
            return paged_attention_ref(q, k_pages, v_pages, layout.page_tables,
                                       layout.query_start, layout.context_lens, scale,
                                       self.sliding_window, layout.attend_ends,
                                       layout.chunk_masks)
        from backend.kernels import triton_paged

        context_lens = torch.tensor(layout.context_lens, device=q.device)
        if layout.is_decode_only:
            return triton_paged.paged_decode_attention(
                q, k_pages, v_pages, layout.page_tables, context_lens, scale,
                self.sliding_window)
        return triton_paged.paged_prefill_attention(
            q, k_pages, v_pages, layout.page_tables,
            torch.tensor(layout.query_start, device=q.device), context_lens, scale,
            self.sliding_window)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=False)
        self.up_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=False)
        self.down_proj = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, kind: str) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.self_attn = Attention(spec, spec.sliding_window if kind == "local" else None)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = MLP(spec)


class LlamaModel(nn.Module):
    """Parameter names follow Hugging Face's LlamaForCausalLM (without the `model.` prefix
    handled by the loaders), so a safetensors state dict maps one to one."""

    def __init__(self, spec: ModelSpec) -> None:
        check_supported(spec)
        super().__init__()
        self.spec = spec
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(spec, kind) for kind in spec.layer_kinds)
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tied_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self._rotary: Rotary | None = None

    def rotary(self) -> Rotary:
        if self._rotary is None or self._rotary.cos.device != self.norm.weight.device:
            self._rotary = Rotary(self.spec.attn_head_dim, self.spec.max_model_len,
                                  self.spec.rope_theta, self.norm.weight.device,
                                  self.spec.rope_scaling)
        return self._rotary

    @torch.inference_mode()
    def forward(self, token_ids: torch.Tensor, layout: BatchLayout, kv: KVCache,
                layers: list[int] | None = None) -> torch.Tensor:
        """token_ids [T] -> final hidden states [T, hidden]; K/V of every token written.
        `layers` runs only those layers (a self-speculative draft skips some)."""
        rotation = self.rotary().at(layout.positions)
        h = self.embed_tokens(token_ids)  # [T, hidden]
        for index in range(len(self.layers)) if layers is None else layers:
            layer = self.layers[index]
            h = h + layer.self_attn(layer.input_layernorm(h), index, layout, kv, rotation)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.norm(h)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> logits [N, vocab] in fp32."""
        return self.lm_head(hidden).float()


def init_random(model: LlamaModel, seed: int) -> LlamaModel:
    """Seeded weights scaled so activations stay O(1) and logits spread widely (std about 4):
    greedy argmax then has clear margins, so batching-order float noise cannot flip a token.

    Untied, embeddings are O(1) per element and the LM head carries the spread. Tied, the
    embedding is the LM head: it is scaled like any projection and the final norm carries the
    spread (O(1) embeddings would dominate the residual stream, and each token's likeliest
    successor would be itself). Q/K/V biases (Qwen2-style) are small and random, so a model
    with them computes something they change."""
    tied = model.spec.tied_embeddings
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(_LOGIT_SPREAD if tied and name == "norm.weight" else 1.0)
            elif param.dim() == 1:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
            elif name == "embed_tokens.weight" and not tied:
                param.normal_(generator=gen)  # randn's draws, in place
            else:  # drawn in place: no temporary the size of the matrix
                param.normal_(generator=gen).div_(param.shape[1] ** 0.5)
        if not tied:
            model.lm_head.weight.mul_(_LOGIT_SPREAD)
    return model


def empty_model(spec: ModelSpec) -> LlamaModel:
    """A model of `spec` whose parameters are allocated on the CPU but not initialised, for a
    loader that fills every one: torch's default initialisation costs 15 s of a 1B model's
    construction on two cores, minutes for an 8B one, and the pages it would touch stay
    untouched until the weights arrive."""
    with torch.device("meta"):
        model = LlamaModel(spec)
    model = model.to_empty(device="cpu")
    if spec.tied_embeddings:  # to_empty gives each module its own tensor
        model.lm_head.weight = model.embed_tokens.weight
    return model


def seeded_model(spec: ModelSpec, seed: int) -> LlamaModel:
    """`init_random(LlamaModel(spec), seed)`, bit for bit, without the default
    initialisation first (`empty_model`)."""
    return init_random(empty_model(spec), seed)


def load_hf_directory(model: LlamaModel, directory: str | Path) -> LlamaModel:
    """Load `*.safetensors` from a local Hugging Face model directory (never the hub)."""
    from safetensors.torch import load_file

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise ValueError(f"no *.safetensors files in {directory}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        for name, tensor in load_file(str(file)).items():
            if not name.endswith("rotary_emb.inv_freq"):  # older checkpoints; from rope_theta
                state[name.removeprefix("model.")] = tensor
    if model.spec.tied_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["embed_tokens.weight"]
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"weights in {directory} do not fit {model.spec.name}: {exc}") from None
    if missing or unexpected:
        raise ValueError(f"weights in {directory} do not match {model.spec.name}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
