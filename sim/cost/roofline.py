"""The simulated executor: iteration time from batch shape by a calibrated roofline.

For one engine iteration on one tensor-parallel rank (all ranks run in lockstep):

    time = sum over op groups g of max(flops_g / (peak * compute_eff_g),
                                       bytes_g / (bandwidth * memory_eff_g)) + fixed_g
           + all-reduce time + overheads (per iteration, per sequence, under TP)

Op groups:
- linear: every projection/MLP GEMM. FLOPs from active parameters per token; bytes are the
  weights read once per iteration (MoE: only the experts some token in the batch is routed to)
  plus activations in and out; plus a fixed `layer_overhead_s` per layer (kernel launch and
  tail latency, which dominate GEMMs that move only a few MB).
- attention: QK^T and PV over each sequence's attended context (causal within a new chunk;
  local layers capped by the sliding window); bytes are the KV read plus the new KV written,
  and each SSM layer's recurrent state read and written once per sequence.
- lm_head: logits for the sequences that sample a token this step (last position only).
- all-reduce: two per layer under tensor parallelism, ring algorithm over the interconnect
  for the bandwidth term, plus ceil(log2 tp) latency steps per call (fitted
  `allreduce_latency_s`, else the hardware table's latency).

The efficiencies are `Coefficients` (data, fitted by `sim.cost.calibrate`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol, TypeVar

import numpy as np

from policies.fast_forward import LockstepPricing, PricesAhead, PricesDecodesApart, PricesRows
from policies.types import Plan, StepResult
from sim.cost.coefficients import Coefficients
from sim.cost.specs import HardwareSpec, ModelSpec, dtype_bytes, expected_distinct_experts

ACTIVATION_DTYPE = "bf16"
T = TypeVar("T")
BATCH_TERMS_CACHE = 1 << 15
"""Batch shapes whose context-free cost terms are kept (cleared when full: prefill shapes are
many, decode shapes few and hot). A million-request replay prices about 10,000 distinct
prefill shapes: at 4,096 the cache emptied every few thousand steps and one step in ten
rebuilt its terms (about a kilobyte each)."""


def cached(cache: dict[Any, T], key: Any, build: Callable[..., T], *args: Any) -> T:
    """`cache[key]`, built as `build(*args)` on a miss (no closure on the hot path); the cache
    is cleared when it holds BATCH_TERMS_CACHE entries (a bound, not an LRU: hot decode shapes
    are rebuilt at once)."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= BATCH_TERMS_CACHE:
            cache.clear()
        value = cache[key] = build(*args)
    return value


@dataclass(frozen=True, slots=True)
class OpGroupCost:
    name: str
    flops: float
    bytes: float
    compute_s: float
    memory_s: float
    fixed_s: float = 0.0
    """Time the group takes regardless of its work (launch and tail latency)."""

    @property
    def time_s(self) -> float:
        return group_time_s(self.compute_s, self.memory_s, self.fixed_s)

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")


@dataclass(frozen=True, slots=True)
class IterationCost:
    groups: tuple[OpGroupCost, ...]
    comm_s: float
    overhead_s: float

    # Plain left-to-right sums (not `sum()`, which Python 3.12 made compensated), for floats
    # or numpy arrays of a decode run's iterations alike: both give the same bits.
    @property
    def time_s(self) -> float:
        return iteration_time_s([g.time_s for g in self.groups], self.comm_s, self.overhead_s)

    @property
    def flops(self) -> float:
        total = 0.0
        for g in self.groups:
            total += g.flops
        return total

    @property
    def bytes(self) -> float:
        total = 0.0
        for g in self.groups:
            total += g.bytes
        return total

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")


class PricedPlan(NamedTuple):
    """A plan's price before it runs (`PricesAhead.price`): its duration and what running
    it counts."""

    duration_s: float
    num_in_range: int = 0
    """Kernel lookups inside a measured model's tables that running it counts (computed
    with the price: a speculative step's price is reused; 0 for the roofline)."""
    num_extrapolated: int = 0
    """And those outside them."""


def group_time_s(compute_s: Any, memory_s: Any, fixed_s: float) -> Any:
    """An op group's time: the slower of compute and memory, plus the fixed time; over numpy
    arrays of iterations (a decode run) element by element."""
    if isinstance(compute_s, np.ndarray) or isinstance(memory_s, np.ndarray):
        return np.maximum(compute_s, memory_s) + fixed_s
    return max(compute_s, memory_s) + fixed_s


def iteration_time_s(group_times_s: list, comm_s: Any, overhead_s: float) -> Any:
    """An iteration's time from its op groups' times, summed left to right (floats or arrays
    alike), then communication and overhead: every pricing path goes through here."""
    total = 0.0
    for time_s in group_times_s:
        total += time_s
    return total + comm_s + overhead_s


class CostModel(LockstepPricing, PricesAhead, PricesDecodesApart, PricesRows):
    """Roofline executor for one replica: `model` on `tp` devices of `hardware`."""

    def __init__(
        self,
        model: ModelSpec,
        hardware: HardwareSpec,
        coefficients: Coefficients,
        *,
        tp: int = 1,
        pp: int = 1,
        weight_dtype: str | None = None,
        kv_dtype: str = "bf16",
    ) -> None:
        if tp < 1:
            raise ValueError(f"tensor parallel degree must be >= 1, got {tp}")
        if not 1 <= pp <= model.num_layers:
            raise ValueError(f"pipeline parallel degree must lie in [1, {model.num_layers}] "
                             f"(the layers of {model.name}), got {pp}")
        if model.num_heads % tp:
            raise ValueError(f"{model.name} has {model.num_heads} attention heads, not divisible by tp={tp}")
        self.model = model
        self.hardware = hardware
        self.coefficients = coefficients
        self.tp = tp
        self.pp = pp
        self.weight_dtype = weight_dtype
        """An override of every weight's dtype; None: the model's own (possibly mixed) ones."""
        self.kv_dtype = kv_dtype
        self._batch_terms: dict[tuple[int, int, int], tuple[OpGroupCost, OpGroupCost, float, float]] = {}
        self._precompute()

    # ---- per-rank constants -------------------------------------------------------------
    def _precompute(self) -> None:
        m, tp = self.model, self.tp
        a = dtype_bytes(ACTIVATION_DTYPE)
        gemm_dtype = m.gemm_dtype(self.weight_dtype)
        compute_dtype = gemm_dtype if gemm_dtype in ("fp8", "int8") else "bf16"
        self._peak_flops = self.hardware.compute_peak(compute_dtype)
        self._bandwidth = self.hardware.mem_bandwidth_bytes_s

        # Every non-embedding weight is a GEMM operand (attention, SSM and MLP projections);
        # of the routed experts only those some token in the batch picks are read. Bytes are
        # each component's own (a quantized checkpoint may keep some in bf16).
        weight_bytes = m.component_weight_bytes(self.weight_dtype)
        non_embedding_bytes = m.weight_bytes(self.weight_dtype) - weight_bytes["embedding"] - weight_bytes["lm_head"]
        active_non_embedding = m.active_param_count - m.embedding_params()
        if m.moe is not None:
            self._expert_bytes = weight_bytes["experts"] / m.moe.num_experts / tp
        self._always_read_weight_bytes = (non_embedding_bytes - weight_bytes["experts"]) / tp
        self._linear_flops_per_token = 2.0 * active_non_embedding / tp

        # Activations in/out of each GEMM per token and layer (per rank).
        d = m.attn_head_dim
        qkv_out = (m.num_heads + 2 * m.num_kv_heads) * d
        inter = m.intermediate_size if m.moe is None else m.moe.expert_intermediate_size
        mlp_io = (m.hidden_size + (2 if m.gated_mlp else 1) * inter) + (inter + m.hidden_size)
        io = (m.hidden_size + qkv_out) + (m.num_heads * d + m.hidden_size) + mlp_io
        self._activation_bytes_per_token = m.num_layers * io * a / tp

        # Attention per rank: heads split; KV heads split unless fewer than tp (replicated);
        # MLA's latent is shared by all heads, so every rank holds all of it.
        qk, pv = m.attention_score_dim()
        per_layer_flops = 2.0 * (m.num_heads / tp) * (qk + pv)
        self._global_attn_flops = m.count_layers("global") * per_layer_flops
        self._local_attn_flops = m.count_layers("local") * per_layer_flops
        kv_elems = m.kv_elements_per_token_per_layer()
        if m.mla is None:
            kv_elems = kv_elems * max(1, m.num_kv_heads // tp) / m.num_kv_heads
        kv_layer_bytes = kv_elems * dtype_bytes(self.kv_dtype)
        self._global_kv_bytes = m.num_kv_layers("global") * kv_layer_bytes
        self._local_kv_bytes = m.num_kv_layers("local") * kv_layer_bytes
        self._kv_bytes_per_token_rank = self._global_kv_bytes + self._local_kv_bytes
        # SSM layers read and write their state once per sequence and iteration; the scan
        # does ~9 FLOPs per state element and token (discretize, update, read out).
        self._ssm_state_bytes_rank = m.ssm_state_bytes(self.kv_dtype) / tp
        self._ssm_flops_per_token = (
            9.0 * m.count_layers("ssm") * m.ssm.d_inner * m.ssm.d_state / tp if m.ssm else 0.0
        )

        self._lm_head_flops_per_seq = 2.0 * m.hidden_size * m.vocab_size / tp
        lm_head = "embedding" if m.tied_embeddings else "lm_head"
        self._lm_head_bytes = weight_bytes[lm_head] / tp

        self._allreduce_bytes_per_token = m.hidden_size * a
        self._num_allreduces = 2 * m.num_layers

    @property
    def name(self) -> str:
        """What summary.json's `cost_model` says."""
        return "roofline"

    @property
    def kv_bytes_per_token_replica(self) -> float:
        """KV bytes one token takes across the whole TP group (replicated heads count twice)."""
        return self._kv_bytes_per_token_rank * self.tp

    # ---- iteration cost -----------------------------------------------------------------
    def breakdown(
        self,
        new_tokens: list[int],
        context_tokens: list[int],
        num_sampling: int | None = None,
    ) -> IterationCost:
        """Cost of one iteration computing `new_tokens[i]` on top of `context_tokens[i]`.

        `num_sampling` sequences compute logits (default: all of them).
        """
        num_seqs = len(new_tokens)
        global_pairs = local_pairs = 0.0
        global_kv = local_kv = 0
        window = self.model.sliding_window or 0
        for n, ctx in zip(new_tokens, context_tokens):
            global_pairs += attended_pairs(ctx, n, None)
            global_kv += ctx + n
            if window:
                local_pairs += attended_pairs(ctx, n, window)
                local_kv += min(ctx, window) + n
        return self._cost(num_seqs, sum(new_tokens),
                          num_seqs if num_sampling is None else num_sampling,
                          global_pairs, global_kv, local_pairs, local_kv)

    def lockstep_decode_costs(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0) -> IterationCost:
        """The breakdowns of `num_steps` iterations in which every sequence decodes one token,
        sequence i on `context_tokens[i] + j` cached tokens at step j (from `first_step`), as
        one `IterationCost` whose step-dependent fields are arrays over the steps (the
        simulator's decode fast-forward). Element for element they equal `breakdown` of each
        step's plan, bit for bit: attended pairs and KV reads are integers, summed exactly
        either way, and numpy's float64 arithmetic is Python's."""
        num_seqs = len(context_tokens)
        steps = np.arange(first_step, first_step + num_steps, dtype=np.int64)
        step_context = sum(context_tokens) + num_seqs * steps
        local_pairs: np.ndarray | float = 0.0
        local_kv: np.ndarray | int = 0
        window = self.model.sliding_window or 0
        if window:
            contexts = np.asarray(context_tokens, dtype=np.int64)[None, :] + steps[:, None]
            local_kv = np.minimum(contexts, window).sum(axis=1) + num_seqs
            local_pairs = np.minimum(contexts + 1, window).sum(axis=1).astype(np.float64)
        return self._cost(num_seqs, num_seqs, num_seqs, (step_context + num_seqs).astype(np.float64),
                          step_context + num_seqs, local_pairs, local_kv)

    def _cost(self, num_seqs: int, total_new: int, num_sampling: int, global_pairs: Any,
              global_kv: Any, local_pairs: Any, local_kv: Any) -> IterationCost:
        """One iteration's cost from its batch totals: `num_seqs` sequences computing
        `total_new` tokens, `num_sampling` of them sampling, with the attended (query, key)
        pairs and KV tokens read of global and sliding-window layers. The last four may be
        numpy arrays (one element per iteration): the arithmetic is the same."""
        linear, lm_head, comm_s, overhead_s = self._batch_terms_of(num_seqs, total_new, num_sampling)
        c = self.coefficients
        flops, nbytes = self._attention_work(num_seqs, total_new, global_pairs, global_kv,
                                             local_pairs, local_kv)
        attention = self._group("attention", flops, nbytes, c.attention_compute_eff,
                                c.attention_memory_eff)
        return IterationCost((linear, attention, lm_head), comm_s, overhead_s)

    def _attention_work(self, num_seqs: int, total_new: int, global_pairs: Any, global_kv: Any,
                        local_pairs: Any, local_kv: Any) -> tuple[Any, Any]:
        """(FLOPs, bytes) of an iteration's attention (see `_cost`)."""
        flops = (self._global_attn_flops * global_pairs + self._local_attn_flops * local_pairs
                 + self._ssm_flops_per_token * total_new)
        nbytes = (self._global_kv_bytes * global_kv + self._local_kv_bytes * local_kv
                  + 2.0 * self._ssm_state_bytes_rank * num_seqs)
        return flops, nbytes

    def _batch_terms_of(self, num_seqs: int, total_new: int,
                        num_sampling: int) -> tuple[OpGroupCost, OpGroupCost, float, float]:
        """`_terms_of_batch`, cached per batch shape."""
        return cached(self._batch_terms, (num_seqs, total_new, num_sampling),
                      self._terms_of_batch, num_seqs, total_new, num_sampling)

    def _terms_of_batch(self, num_seqs: int, total_new: int,
                        num_sampling: int) -> tuple[OpGroupCost, OpGroupCost, float, float]:
        """(linear, lm_head, all-reduce seconds, overhead seconds): the parts of an
        iteration's cost that depend on its batch shape only, not on the context it reads."""
        c = self.coefficients
        m = self.model
        weight_bytes = self._always_read_weight_bytes
        if m.moe is not None:
            touched = expected_distinct_experts(
                m.moe.num_experts, m.moe.experts_per_token, total_new
            )
            weight_bytes += self._expert_bytes * touched
        linear_flops = self._linear_flops_per_token * total_new
        linear_bytes = weight_bytes + self._activation_bytes_per_token * total_new
        linear = self._group("linear", linear_flops, linear_bytes,
                             c.linear_compute_eff, c.linear_memory_eff,
                             fixed_s=c.layer_overhead_s * m.num_layers)
        lm_head = self._group(
            "lm_head",
            self._lm_head_flops_per_seq * num_sampling,
            self._lm_head_bytes if num_sampling else 0.0,
            c.linear_compute_eff,
            c.linear_memory_eff,
        )

        comm_s = 0.0
        if self.tp > 1 and total_new:
            ring_factor = 2.0 * (self.tp - 1) / self.tp
            per_call = ring_factor * self._allreduce_bytes_per_token * total_new / (
                self.hardware.interconnect_bandwidth_bytes_s * c.comm_bandwidth_eff
            )
            step_latency_s = c.allreduce_latency_s
            if step_latency_s is None:
                step_latency_s = self.hardware.interconnect_latency_s
            # Small messages go by tree / recursive doubling: log2(tp) latency steps a call.
            latency_steps = math.ceil(math.log2(self.tp))
            comm_s = self._num_allreduces * (per_call + step_latency_s * latency_steps)

        overhead_s = c.iteration_overhead_s + c.per_sequence_overhead_s * num_seqs
        if self.tp > 1:
            overhead_s += c.tp_overhead_s
        return linear, lm_head, comm_s, overhead_s

    def _group(self, name: str, flops: float, nbytes: float, ceff: float, meff: float,
               fixed_s: float = 0.0) -> OpGroupCost:
        return OpGroupCost(name, flops, nbytes, *self._seconds(flops, nbytes, ceff, meff),
                           fixed_s)

    def _seconds(self, flops: Any, nbytes: Any, ceff: float, meff: float) -> tuple[Any, Any]:
        """(compute, memory) seconds of `flops` and `nbytes` at the given efficiencies."""
        return flops / (self._peak_flops * ceff), nbytes / (self._bandwidth * meff)

    def iteration_time(
        self, new_tokens: list[int], context_tokens: list[int], num_sampling: int | None = None
    ) -> float:
        if self.pp == 1:
            return self.breakdown(new_tokens, context_tokens, num_sampling).time_s
        return self._pipelined_time(new_tokens, context_tokens, num_sampling)

    def _pipelined_time(
        self, new_tokens: list[int], context_tokens: list[int], num_sampling: int | None
    ) -> float:
        """Pipeline parallelism: `pp` stages of num_layers / pp layers each, the batch split
        into pp micro-batches (as vLLM's virtual engines keep pp batches in flight). With stage
        times t_i per micro-batch, the batch takes sum(t_i) + (pp - 1) * max(t_i): each
        micro-batch crosses every stage, and the pipeline fills and drains once (the bubble).
        A stage time is a micro-batch's whole-model time over pp, plus sending its activations
        to the next stage; the engine's fixed overhead is paid once."""
        num_seqs = len(new_tokens)
        sampling = num_seqs if num_sampling is None else num_sampling
        stage_times = []
        for mb in range(min(self.pp, num_seqs)):
            new, ctx = new_tokens[mb::self.pp], context_tokens[mb::self.pp]
            cost = self.breakdown(new, ctx, -(-sampling * len(new) // num_seqs))
            send_s = sum(new) * self._allreduce_bytes_per_token / self.hardware.interconnect_bandwidth_bytes_s
            send_s += self.hardware.interconnect_latency_s
            stage_times.append((cost.time_s - cost.overhead_s) / self.pp + send_s)
        c = self.coefficients
        overhead_s = c.iteration_overhead_s + c.per_sequence_overhead_s * num_seqs + c.tp_overhead_s
        return sum(stage_times) + (self.pp - 1) * max(stage_times) + overhead_s

    def prefill_time(self, prompt_tokens: int) -> float:
        return self.iteration_time([prompt_tokens], [0])

    def decode_time(self, context_tokens: list[int]) -> float:
        return self.iteration_time([1] * len(context_tokens), context_tokens)

    # ---- Executor protocol --------------------------------------------------------------
    def plan_cost(self, plan: Plan) -> IterationCost:
        """The whole-model breakdown of one plan (what the roofline view records)."""
        return self.breakdown(*plan_shape(plan))

    def execute(self, plan: Plan) -> StepResult:
        return self.run_priced(plan, self.price(plan))

    def price(self, plan: Plan) -> PricedPlan:
        """What `plan` takes (no side effects: `execute` is this and `run_priced`)."""
        return priced_with_moves(self, self.price_rows(*plan_shape(plan)), plan)

    def execute_decodes_apart(self, decode_contexts: list[int], plan: Plan) -> StepResult:
        """`execute` of `plan` after one-token decodes on `decode_contexts`
        (`PricesDecodesApart`)."""
        return self.run_priced(plan, priced_with_moves(
            self, self.price_rows(*plan_shape_after_decodes(decode_contexts, plan)), plan))

    def price_rows(self, new_tokens: list[int], context_tokens: list[int],
                   num_sampling: int) -> PricedPlan:
        """What a plan of these rows without swaps or copies takes (`PricesRows`)."""
        cost = self.breakdown(new_tokens, context_tokens, num_sampling)
        compute_s = (cost.time_s if self.pp == 1
                     else self._pipelined_time(new_tokens, context_tokens, num_sampling))
        return PricedPlan(compute_s)

    def ran_rows(self, priced: PricedPlan) -> None:
        """Rows priced as `priced` ran (a roofline keeps no counters)."""

    @property
    def prices_by_context_sum(self) -> bool:
        """Attention reads the rows' summed pairs and KV, unless a sliding window caps each
        row or pipeline stages split the rows into micro-batches."""
        return not self.model.sliding_window and self.pp == 1

    def run_priced(self, plan: Plan, priced: PricedPlan) -> StepResult:
        """`execute(plan)`'s result for a plan priced as `priced` (a roofline keeps no
        counters, so nothing else happens)."""
        return StepResult(priced.duration_s)

    def lockstep_decode_times(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0,
                              padding_contexts: Collection[int] = ()) -> list[float] | None:
        """What `execute` would return for each of `num_steps` decode-only iterations of one
        fixed batch (and its padding rows, which read the same KV each step), through the
        functions `_cost` prices a plan with (with no sliding window, a step's batch totals
        are a count and a sum, so each step is priced on its own without building its
        breakdown; otherwise `lockstep_decode_costs` prices all at once over arrays). None
        under pipeline parallelism, whose micro-batch split has no closed form here, and for
        padding under a sliding window (the engine then steps one at a time)."""
        if self.pp != 1 or (padding_contexts and self.model.sliding_window):
            return None
        if self.model.sliding_window:
            times = self.lockstep_decode_costs(context_tokens, num_steps, first_step).time_s
            return times.tolist() if isinstance(times, np.ndarray) else [times] * num_steps
        num_seqs = len(context_tokens)
        num_rows = num_seqs + len(padding_contexts)
        # every row reads its cached tokens and its new one; only the batch's rows grow
        first_kv = sum(context_tokens) + sum(padding_contexts) + num_rows + num_seqs * first_step
        linear, lm_head, comm_s, overhead_s = self._batch_terms_of(num_rows, num_rows, num_rows)
        c = self.coefficients
        ceff, meff = c.attention_compute_eff, c.attention_memory_eff
        linear_s, lm_head_s = linear.time_s, lm_head.time_s
        work, seconds = self._attention_work, self._seconds
        times = []
        for kv in range(first_kv, first_kv + num_seqs * num_steps, num_seqs):
            compute_s, memory_s = seconds(*work(num_rows, num_rows, float(kv), kv, 0.0, 0),
                                          ceff, meff)
            times.append(iteration_time_s(
                [linear_s, group_time_s(compute_s, memory_s, 0.0), lm_head_s], comm_s, overhead_s))
        return times

    def lockstep_decode_sum_s(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0, total_s: float = 0.0) -> float | None:
        """`lockstep_decode_times(...)` added one by one onto `total_s` (a stretch of draft
        passes); None where that is None."""
        times = self.lockstep_decode_times(context_tokens, num_steps, first_step)
        if times is None:
            return None
        for time_s in times:
            total_s += time_s
        return total_s

    def ran_lockstep_decodes(self, context_tokens: list[int], num_steps: int,
                             padding_contexts: Collection[int] = ()) -> None:
        """The engine ran the first `num_steps` of those iterations (a hook for observers
        such as the dashboard's recording cost model; planning them had no side effects)."""

    def copy_time(self, num_tokens: int) -> float:
        """Copying `num_tokens` tokens of KV within device memory (read + write)."""
        return 2.0 * num_tokens * self._kv_bytes_per_token_rank / self._bandwidth

    def swap_time(self, num_tokens: int) -> float:
        """Copying `num_tokens` tokens of KV between device and host: each device moves its
        share over its own host link, in parallel; charged to the iteration, not overlapped.
        (Window-capped and SSM caches are counted as full KV here: an upper bound.)"""
        return num_tokens * self._kv_bytes_per_token_rank / self.hardware.host_link_bandwidth_bytes_s


class PricesMoves(Protocol):
    def swap_time(self, num_tokens: int) -> float: ...

    def copy_time(self, num_tokens: int) -> float: ...


def with_moves(model: PricesMoves, compute_s: float, plan: Plan) -> float:
    """`compute_s` plus the swaps and device copies `plan` makes before it computes, in
    that order; a plan without any skips pricing them (adding 0.0 changes no bits)."""
    swap_tokens = plan.swap_out_slots + plan.swap_in_slots
    if not swap_tokens and not plan.block_copies:
        return compute_s
    return (compute_s + model.swap_time(swap_tokens)
            + model.copy_time(sum(tokens for _, _, tokens in plan.block_copies)))


def priced_with_moves(model: PricesMoves, priced: PricedPlan, plan: Plan) -> PricedPlan:
    """`priced` (a price of `plan`'s rows) with the swaps and copies `plan` makes added
    (`with_moves`): what `price` returns, and what running a plan counts; `priced` itself
    when it makes none."""
    if not (plan.swap_out_slots or plan.swap_in_slots or plan.block_copies):
        return priced
    return PricedPlan(with_moves(model, priced.duration_s, plan), priced.num_in_range,
                      priced.num_extrapolated)


def plan_shape(plan: Plan) -> tuple[list[int], list[int], int]:
    """(new tokens, context tokens, sampled positions) of a plan's rows; padding rows compute
    like real ones (static batching)."""
    chunks = plan.chunks + plan.padding if plan.padding else plan.chunks
    new = [ch.num_new_tokens for ch in chunks]
    ctx = [ch.num_context_tokens for ch in chunks]
    # A row samples when it computes up to its sequence's known tokens (`num_known_tokens`,
    # spelled out: every step asks it of every row). A speculative verify needs logits at
    # every token it computes, a denoising step at every block position; others at the last.
    sampling = 0
    for ch in chunks:
        seq = ch.seq
        if (ch.num_context_tokens + ch.num_new_tokens
                >= seq.request.prompt_tokens + seq.num_output_tokens + seq.num_block_tokens):
            sampling += ch.num_new_tokens if ch.num_spec_tokens else ch.num_block_tokens or 1
    return new, ctx, sampling


def plan_shape_after_decodes(decode_contexts: list[int],
                             plan: Plan) -> tuple[list[int], list[int], int]:
    """`plan_shape` of `plan` with one-token decodes on `decode_contexts` cached tokens before
    its chunks (each samples its one token): the rows of the whole step, in order."""
    new, ctx, sampling = plan_shape(plan)
    num_decodes = len(decode_contexts)
    return [1] * num_decodes + new, decode_contexts + ctx, num_decodes + sampling


def attended_pairs(context: int, new: int, window: int | None) -> float:
    """Sum over the `new` queries of the keys each attends to (itself included, causal)."""
    if window is None:
        return new * context + new * (new + 1) / 2
    # Query j (1-based) sees min(context + j, window) keys.
    full = max(0, min(new, window - context))  # queries not yet capped by the window
    capped = new - full
    return full * context + full * (full + 1) / 2 + capped * window
