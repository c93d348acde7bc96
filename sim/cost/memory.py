"""How many KV blocks a replica's memory holds.

    KV capacity = tp x pp x (device memory x gpu_memory_utilization - weights/(tp x pp)
                             - activation reserve)

The activation reserve is servesim's own estimate of what vLLM measures with a profiling
forward pass at the token budget: per device, the largest live activations of one layer for
`max_num_batched_tokens` tokens (hidden states, QKV, the MLP's gated intermediate, in bf16),
fp32 logits for `max_num_seqs` sequences, plus a fixed 1 GiB for the runtime (CUDA context,
graphs, workspaces). It is a documented choice, not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.kv.layout import KVLayout
from sim.cost.roofline import CostModel

RUNTIME_RESERVE_BYTES = 1024**3


class ImpossibleConfigError(ValueError):
    """The configuration cannot run at all (e.g. the weights do not fit)."""


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    device_bytes: float
    weights_bytes_per_device: float
    activation_reserve_bytes: float
    kv_bytes_per_device: float
    kv_bytes_per_block: float
    num_blocks: int


def activation_reserve_bytes(cost: CostModel, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    m, tp = cost.model, cost.tp
    inter = m.intermediate_size if m.moe is None else max(
        m.intermediate_size, m.moe.expert_intermediate_size * m.moe.experts_per_token
    )
    per_token = 2 * m.hidden_size + (m.num_heads + 2 * m.num_kv_heads) * m.attn_head_dim / tp
    per_token += (2 if m.gated_mlp else 1) * inter / tp
    activations = max_num_batched_tokens * per_token * 2  # bf16
    logits = max_num_seqs * m.vocab_size * 4 / tp  # fp32
    return activations + logits + RUNTIME_RESERVE_BYTES


def kv_layout(cost: CostModel, block_size: int) -> tuple[KVLayout, float]:
    """The pool's block layout for this model, and the bytes one block takes per replica.

    A block holds `block_size` tokens for one unit of KV layers, the unit being the greatest
    common divisor of the global and local (sliding-window) layer counts, so both kinds are
    whole numbers of units. SSM state is rounded up to whole blocks per sequence.
    """
    m = cost.model
    num_global, num_local = m.num_kv_layers("global"), m.num_kv_layers("local")
    unit = math.gcd(num_global, num_local)
    block_bytes = block_size * unit * cost.kv_bytes_per_token_replica / (num_global + num_local)
    fixed = math.ceil(m.ssm_state_bytes(cost.kv_dtype) / block_bytes) if m.ssm else 0
    layout = KVLayout(num_global // unit, num_local // unit, m.sliding_window if num_local else 0,
                      fixed, chunked=m.chunked_local_attention and num_local > 0)
    return layout, block_bytes


def kv_budget(
    cost: CostModel,
    *,
    block_size: int,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
) -> MemoryBudget:
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ImpossibleConfigError(
            f"gpu_memory_utilization must lie in (0, 1], got {gpu_memory_utilization}"
        )
    device = cost.hardware.mem_capacity_bytes * gpu_memory_utilization
    devices = cost.tp * cost.pp
    weights = cost.model.weight_bytes(cost.weight_dtype) / devices
    reserve = activation_reserve_bytes(cost, max_num_batched_tokens, max_num_seqs)
    kv_per_device = device - weights - reserve
    per_block = kv_layout(cost, block_size)[1]
    if kv_per_device <= 0:
        raise ImpossibleConfigError(
            f"{cost.model.name} ({cost.model.weight_dtype_label(cost.weight_dtype)}) needs {weights / 1e9:.1f} GB of weights and "
            f"{reserve / 1e9:.1f} GB of activations per device, but {cost.hardware.name} offers "
            f"{device / 1e9:.1f} GB at gpu_memory_utilization {gpu_memory_utilization}: "
            f"raise --tp or --pp, quantize the weights, or pick a larger device"
        )
    num_blocks = int(kv_per_device * devices // per_block)
    if num_blocks < 1:
        raise ImpossibleConfigError(
            f"no room for a single {block_size}-token KV block ({per_block / 1e6:.1f} MB)"
        )
    return MemoryBudget(cost.hardware.mem_capacity_bytes, weights, reserve, kv_per_device,
                        per_block, num_blocks)
