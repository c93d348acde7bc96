"""How many KV blocks a replica's memory holds, derived the way vLLM V1 sizes its KV pool.

vLLM V1 from late 2025 to mid 2026 (v0.11 to v0.20; `Worker.init_device`, `determine_available_memory`
in vllm/v1/worker/gpu_worker.py, `memory_profiling` in vllm/utils/mem_utils.py) does, per device:

    requested   = total device memory (as cudaMemGetInfo reports it) x gpu_memory_utilization
    non-KV      = weights + peak activation + non-torch increase
    KV memory   = requested - non-KV            ("Available KV cache memory: X GiB")
    num_blocks  = KV memory // (page bytes per layer x layers), the minimum over workers
                  ("GPU KV cache size: num_blocks x block_size tokens")

- The baseline snapshot is taken after the CUDA context and NCCL communicators exist, so they
  sit outside the budget (in the 1 - gpu_memory_utilization headroom), as do the CUDA graphs:
  they are captured after the pool is allocated. vLLM profiles them before sizing the pool only
  from v0.21 (`VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS`, opt-in since vllm-project/vllm#30515,
  default on since v0.21.0); `CUDA_GRAPH_BYTES_IN_BUDGET` is that term for the version modelled.
- The peak activation is torch's allocation peak during `profile_run`: one forward pass over
  `max_num_batched_tokens` dummy tokens, then the sampler on the logits of
  min(max_num_seqs, max_num_batched_tokens) dummy requests (`_dummy_sampler_run`).
- The non-torch increase is what grows outside torch's allocator between that snapshot and the
  end of profiling (cuBLAS workspaces, NCCL buffers allocated at the first collective).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from policies.kv.layout import KVLayout
from sim.cost.roofline import CostModel

GiB = 1024**3

ACTIVATION_BYTES = 2
"""bf16 activations: the dtype every catalog model is served in."""

SAMPLER_PEAK_BYTES_PER_LOGIT = 38.4
"""Torch's peak during vLLM's dummy sampler run, per logit (request x vocabulary entry): the
bf16 logits, their fp32 copy, and the top-k/top-p sort's values, int64 indices, softmax and
cumulative sum. Fitted to the "torch peak memory increase" vLLM v0.11 printed on one H100 at
its `vllm serve` defaults (1,024 sequences, 8,192 batched tokens) for Llama-3.1-8B (4.76 GiB),
Llama-3.3-70B-FP8 TP2 (4.84), Qwen3-0.6B (5.56), Qwen3-32B (5.64) and gpt-oss-20b (7.38), less
the batch's bf16 hidden states: 38.25 to 38.55 bytes per logit across vocabularies of 128K to
201K (llm-d/llm-d-benchmark, config_explorer/empirical-vllm-memory-results.md)."""

NON_TORCH_BYTES_SINGLE_DEVICE = 0.13 * GiB
"""Non-torch increase on one device (cuBLAS/cuBLASLt workspaces and kernels loaded during the
profile run): 0.13 GiB in every single-H100 run of the same logs, whatever the model."""

NON_TORCH_BYTES_DISTRIBUTED = 0.55 * GiB
"""Non-torch increase per device when the engine spans devices (tp x pp > 1): the single-device
term plus the NCCL buffers set up at the first collective of the profile run; 0.54 to 0.55 GiB
for Llama-3.3-70B-FP8 and Qwen3-32B at TP2 on H100 in the same logs. No larger group was logged:
TP4 and TP8 use this value."""

CUDA_GRAPH_BYTES_IN_BUDGET = 0.0
"""CUDA-graph memory subtracted from the pool: none for vLLM before v0.21 (the graphs are
captured after the pool is allocated and live in the 1 - gpu_memory_utilization headroom)."""


class ImpossibleConfigError(ValueError):
    """The configuration cannot run at all (e.g. the weights do not fit)."""


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """One replica's memory, per device, in vLLM's terms (see the module docstring)."""

    device_bytes: float
    """Total device memory as the CUDA driver reports it."""
    requested_bytes: float
    """device_bytes x gpu_memory_utilization: what the engine may use."""
    weights_bytes_per_device: float
    peak_activation_bytes: float
    non_torch_bytes: float
    cuda_graph_bytes: float
    kv_bytes_per_device: float
    kv_bytes_per_block: float
    """Bytes one block takes across the replica's devices."""
    num_blocks: int
    block_size: int

    @property
    def kv_pool_tokens(self) -> int:
        """What vLLM prints as "GPU KV cache size: N tokens"."""
        return self.num_blocks * self.block_size

    def summary(self) -> dict[str, Any]:
        """The budget's terms for summary.json, per device, in bytes."""
        return {"kv_pool_tokens": self.kv_pool_tokens,
                "memory_requested_bytes": int(self.requested_bytes),
                "memory_weights_bytes": int(self.weights_bytes_per_device),
                "memory_peak_activation_bytes": int(self.peak_activation_bytes),
                "memory_non_torch_bytes": int(self.non_torch_bytes),
                "memory_cuda_graph_bytes": int(self.cuda_graph_bytes),
                "memory_kv_cache_bytes": int(self.kv_bytes_per_device)}


def forward_transient_bytes(cost: CostModel, num_tokens: int) -> float:
    """servesim's estimate of the largest live tensors inside one layer of the dummy forward
    pass over `num_tokens` tokens, per device: the residual, the QKV projection and the MLP's
    (gated) intermediate, in bf16. Routed experts count their top-k intermediates per token."""
    m, tp = cost.model, cost.tp
    inter = m.intermediate_size if m.moe is None else max(
        m.intermediate_size, m.moe.expert_intermediate_size * m.moe.experts_per_token
    )
    per_token = m.hidden_size + (m.num_heads + 2 * m.num_kv_heads) * m.attn_head_dim / tp
    per_token += (2 if m.gated_mlp else 1) * inter / tp
    return num_tokens * per_token * ACTIVATION_BYTES


def sampler_peak_bytes(cost: CostModel, num_requests: int) -> float:
    """Torch's peak in the dummy sampler run over `num_requests` requests; the logits are
    gathered whole on every tensor-parallel rank, so tp does not divide it."""
    return num_requests * cost.model.vocab_size * SAMPLER_PEAK_BYTES_PER_LOGIT


def peak_activation_bytes(cost: CostModel, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    """Torch's allocation peak above the weights during vLLM's `profile_run`: the batch's hidden
    states stay alive while first the forward pass, then the sampler, allocates its own."""
    hidden_states = max_num_batched_tokens * cost.model.hidden_size * ACTIVATION_BYTES
    num_requests = min(max_num_seqs, max_num_batched_tokens)
    return hidden_states + max(forward_transient_bytes(cost, max_num_batched_tokens),
                               sampler_peak_bytes(cost, num_requests))


def non_torch_bytes(cost: CostModel) -> float:
    """The non-torch increase per device (`NON_TORCH_BYTES_*`)."""
    if cost.tp * cost.pp > 1:
        return NON_TORCH_BYTES_DISTRIBUTED
    return NON_TORCH_BYTES_SINGLE_DEVICE


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


def device_total_bytes(cost: CostModel) -> float:
    """Device memory as cudaMemGetInfo reports it (what vLLM multiplies by the utilization);
    the datasheet capacity for hardware whose reported total is not recorded."""
    hardware = cost.hardware
    if hardware.cuda_total_mem_bytes is not None:
        return hardware.cuda_total_mem_bytes
    return hardware.mem_capacity_bytes


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
    device = device_total_bytes(cost)
    requested = device * gpu_memory_utilization
    devices = cost.tp * cost.pp
    weights = cost.model.weight_bytes(cost.weight_dtype) / devices
    activations = peak_activation_bytes(cost, max_num_batched_tokens, max_num_seqs)
    runtime = non_torch_bytes(cost) + CUDA_GRAPH_BYTES_IN_BUDGET
    kv_per_device = requested - weights - activations - runtime
    per_block = kv_layout(cost, block_size)[1]
    if kv_per_device <= 0:
        raise ImpossibleConfigError(
            f"{cost.model.name} ({cost.model.weight_dtype_label(cost.weight_dtype)}) needs "
            f"{weights / 1e9:.1f} GB of weights and {(activations + runtime) / 1e9:.1f} GB of "
            f"activations and runtime per device, but {cost.hardware.name} offers "
            f"{requested / 1e9:.1f} GB at gpu_memory_utilization {gpu_memory_utilization}: "
            f"raise --tp or --pp, quantize the weights, or pick a larger device"
        )
    num_blocks = int(kv_per_device * devices // per_block)
    if num_blocks < 1:
        raise ImpossibleConfigError(
            f"no room for a single {block_size}-token KV block ({per_block / 1e6:.1f} MB)"
        )
    return MemoryBudget(device, requested, weights, activations, non_torch_bytes(cost),
                        CUDA_GRAPH_BYTES_IN_BUDGET, kv_per_device, per_block, num_blocks,
                        block_size)
