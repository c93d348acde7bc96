"""Roofline times of single kernels, for extrapolating measured ones.

A measured kernel table answers a query outside its range (or for a shape or dtype it lacks)
with the nearest measured point; the measured model scales that latency by the ratio of these
times between the query and the point. They are plain roofline times at datasheet peaks,
`max(FLOPs / peak, bytes / bandwidth)`: only their ratios are used, so what they leave out
(efficiencies, launch latency) cancels near the anchor.
"""

from __future__ import annotations

from sim.cost.specs import HardwareSpec, MLASpec, expected_distinct_experts

ACTIVATION_BYTES = 2.0
"""bf16 activations."""


def roofline_s(hardware: HardwareSpec, flops: float, nbytes: float, dtype: str = "bf16") -> float:
    return max(flops / hardware.compute_peak(dtype), nbytes / hardware.mem_bandwidth_bytes_s)


def gemm_s(hardware: HardwareSpec, m: float, n: float, k: float, weight_bytes: float) -> float:
    """[m, k] activations times a [k, n] weight; one-byte weights compute in fp8."""
    dtype = "fp8" if weight_bytes == 1.0 else "bf16"
    return roofline_s(hardware, 2.0 * m * n * k,
                      (m * k + m * n) * ACTIVATION_BYTES + n * k * weight_bytes, dtype)


def moe_s(hardware: HardwareSpec, tokens: float, hidden: int, inter: int, topk: int,
          experts: int, tp: int, weight_bytes: float, gated: bool) -> float:
    """Fused experts: each token through `topk` experts of width `inter / tp`; the weights of
    the experts some token picks are read once."""
    expert_params = (3 if gated else 2) * hidden * inter / tp
    touched = expected_distinct_experts(experts, topk, max(1, int(round(tokens))))
    return roofline_s(hardware, 2.0 * tokens * topk * expert_params,
                      touched * expert_params * weight_bytes + 2 * tokens * hidden * ACTIVATION_BYTES)


def allreduce_s(hardware: HardwareSpec, gpus: int, message_bytes: float) -> float:
    """Ring all-reduce: each GPU sends and receives 2 (n - 1) / n of the message."""
    return (2.0 * (gpus - 1) / gpus * message_bytes / hardware.interconnect_bandwidth_bytes_s
            + hardware.interconnect_latency_s)


def attention_s(hardware: HardwareSpec, phase: str, batch: float, length: float,
                shape: tuple[int, int, int], kv_bytes: float) -> float:
    """One attention call of `shape` (heads, KV heads, head dim): `generation` reads `length`
    cached tokens per row; `context` prefills `length` tokens per row causally, writing KV."""
    heads, kv_heads, head_dim = shape
    if phase == "generation":
        flops = 4.0 * batch * heads * length * head_dim
        nbytes = batch * (length * 2 * kv_heads * head_dim * kv_bytes
                          + 2 * heads * head_dim * ACTIVATION_BYTES)
    else:
        flops = 4.0 * batch * heads * head_dim * length * (length + 1) / 2
        nbytes = batch * length * (2 * heads * head_dim * ACTIVATION_BYTES
                                   + 2 * kv_heads * head_dim * (ACTIVATION_BYTES + kv_bytes))
    return roofline_s(hardware, flops, nbytes)


def mla_module_s(hardware: HardwareSpec, phase: str, batch: float, length: float, heads: int,
                 hidden: int, mla: MLASpec, weight_bytes: float, kv_bytes: float) -> float:
    """One MLA module (projections, attention, output) at `heads` heads per GPU: decode of one
    token per row on `length` cached tokens (up-projections absorbed), or a prefill of
    `length` tokens per row."""
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    latent = mla.kv_lora_rank + mla.qk_rope_head_dim
    q_params = (hidden * heads * qk if mla.q_lora_rank is None
                else hidden * mla.q_lora_rank + mla.q_lora_rank * heads * qk)
    params = (q_params + hidden * latent
              + mla.kv_lora_rank * heads * (mla.qk_nope_head_dim + mla.v_head_dim)
              + heads * mla.v_head_dim * hidden)
    if phase == "generation":
        flops = 2.0 * batch * params + 2.0 * batch * heads * length * (latent + mla.kv_lora_rank)
        nbytes = params * weight_bytes + batch * length * latent * kv_bytes
    else:
        tokens = batch * length
        pairs = batch * length * (length + 1) / 2
        flops = 2.0 * tokens * params + 2.0 * heads * pairs * (qk + mla.v_head_dim)
        nbytes = params * weight_bytes + tokens * (latent * kv_bytes + 2 * hidden * ACTIVATION_BYTES)
    return roofline_s(hardware, flops, nbytes)
