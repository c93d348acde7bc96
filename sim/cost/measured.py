"""The measured executor: an iteration priced as the sum of its kernels, each looked up in
latencies measured inside vLLM (`sim.cost.kernel_tables`), plus the engine's own time per step.

For one iteration on one tensor-parallel rank (all ranks run in lockstep), computing T tokens
in S rows, of which D decode (one new token on a cached context) and P prefill chunks or
speculative verifies:

    time = GEMMs at m = T            QKV, O, gate+up, down (per layer); MoE router and shared
                                     experts; SSM projections
         + MoE(T)                    fused experts, per MoE layer
         + all-reduce(T x hidden)    2 per layer at TP > 1: vLLM's custom all-reduce (in a CUDA
                                     graph up to `cuda_graph_max_tokens`, else eager) up to
                                     `custom_allreduce_max_bytes`, else NCCL
         + LM head GEMM at m = sampled positions
         + decode attention(D, mean cached KV length)       generation-attention table
         + prefill attention(P, equivalent prompt length)   context-attention table
           (MLA models: whole MLA modules, projections included, from the MLA tables)
         + untabled kernels          norms, rotary, KV write, activation, SSM scans: bytes at
                                     `untabled_bandwidth_eff` of peak plus a latency each
         + engine overhead           step_overhead_s + per_sequence_overhead_s x S

Batched attention is one kernel call per layer: D decodes at their mean cached length (decode
kernels split work by sequence and KV head and read every cached token once, so a ragged batch
costs about what a uniform one with the same total KV does); P chunks as P prompts of the
uniform length whose causal (query, key) pairs add up to the chunks' own (cached prefixes
included). `sim.cost.kernel_shapes` says which table and shape price each kernel. A lookup
outside the measured range, or of a shape or dtype the tables lack, is the nearest measured
point times the roofline's ratio between the query and that point
(`sim.cost.kernel_roofline`), and counts as extrapolated (`lookups_extrapolated`, beside
`lookups_in_range`, over the iterations executed).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from itertools import repeat
from operator import truediv
from typing import NamedTuple

import numpy as np

from policies.fast_forward import LockstepPricing, PricesAhead, PricesDecodesApart, PricesRows
from policies.types import Plan, StepResult
from sim.cost import kernel_roofline as roofline
from sim.cost.coefficients import default_coefficients
from sim.cost.kernel_roofline import ACTIVATION_BYTES
from sim.cost.kernel_shapes import (TABLE_DTYPES, LayerKind, dtype_table, equivalent_prompt,
                                    layer_kinds)
from sim.cost.kernel_tables import KernelTable, KernelTables, Lookup, Row, shipped_tables
from sim.cost.measured_coefficients import MeasuredCoefficients
from sim.cost.roofline import (CostModel, PricedPlan, attended_pairs, cached, plan_shape,
                               plan_shape_after_decodes, priced_with_moves)
from sim.cost.specs import HardwareSpec, ModelSpec, dtype_bytes

UNTABLED_KERNELS_PER_LAYER = 5
"""Small kernels of a decoder layer with no table: two fused residual-add + RMSNorm, rotary
embedding, the KV-cache write, SiLU-and-mul (vLLM's Llama-style layer)."""
ARRAY_STEPS = 128
"""Decode runs of at least this many steps are priced as arrays (shorter ones cost less
step by step than numpy's per-call overhead: about even at 128 steps of a 10-sequence batch)."""


class KernelTime(NamedTuple):
    """One kernel family of an iteration: its time over every layer that runs it."""

    name: str
    time_s: float
    extrapolated: bool


class TokenTerms(NamedTuple):
    """The part of `BatchTerms` that depends on the computed token count only."""

    kernels: tuple[KernelTime, ...]
    kernels_s: float
    untabled_s: float
    num_extrapolated: int


class BatchTerms(NamedTuple):
    """The parts of an iteration's price that depend on its batch shape only (rows, tokens,
    sampled positions), not on the context it attends to. (Named tuples here: one or two
    are built every step, at a third of a frozen dataclass's cost.)"""

    kernels: tuple[KernelTime, ...]
    kernels_s: float
    untabled_s: float
    overhead_s: float
    num_in_range: int
    num_extrapolated: int


def _step_time(batch: BatchTerms, attention: tuple[KernelTime, ...]):
    """An iteration's time from its kernels (see `_step_time_s`)."""
    return _step_time_s(batch, [kernel.time_s for kernel in attention])


def _step_time_s(batch: BatchTerms, attention_s: list):
    """An iteration's time: the one sum every pricing path goes through, left to right, for
    floats or numpy arrays of steps alike (so both give the same bits; short decode runs
    spell it out for a list of one-kernel steps, `_one_kernel_step_times_s`)."""
    total = batch.kernels_s
    for time_s in attention_s:
        total += time_s
    return total + batch.untabled_s + batch.overhead_s


def _one_kernel_step_times_s(batch: BatchTerms, layers: int, kernel_s: list[float]) -> list[float]:
    """`_step_time_s(batch, [layers * k])` for each k of `kernel_s` (steps whose one attention
    kernel takes k a layer), in one comprehension: the same additions in the same order."""
    kernels_s, untabled_s, overhead_s = batch.kernels_s, batch.untabled_s, batch.overhead_s
    return [kernels_s + layers * k + untabled_s + overhead_s for k in kernel_s]


class _DecodeBatch(NamedTuple):
    """What pricing the decode-only steps of one batch size needs, gathered once per size
    (every decode run of that size needs it again)."""

    batch: BatchTerms
    exact_rows: tuple[Row | None, ...]
    """Each layer kind's decode row where its table is exact; None where it has no table or
    an inexact one (those steps are priced one at a time, `_decode_attention`)."""


_AllReduceTable = tuple[KernelTable, int, bool, Row | None, tuple[float, float]]
"""(table, shape index, shape measured, one-axis row or None, the axis's ends)."""


class MeasuredIterationCost(NamedTuple):
    batch: BatchTerms
    attention: tuple[KernelTime, ...]

    @property
    def kernels(self) -> tuple[KernelTime, ...]:
        return self.batch.kernels + self.attention

    @property
    def overhead_s(self) -> float:
        return self.batch.overhead_s

    @property
    def time_s(self) -> float:
        return _step_time(self.batch, self.attention)


class MeasuredCostModel(LockstepPricing, PricesAhead, PricesDecodesApart, PricesRows):
    """Measured-kernel executor for one replica: `model` on `tp` devices of `hardware`."""

    def __init__(self, model: ModelSpec, hardware: HardwareSpec,
                 coefficients: MeasuredCoefficients, *, tp: int = 1, pp: int = 1,
                 weight_dtype: str | None = None, kv_dtype: str = "bf16",
                 tables: KernelTables | None = None) -> None:
        if pp != 1:
            raise ValueError("--cost-model measured prices one pipeline stage only: use --pp 1 "
                             "(or --cost-model roofline)")
        # The roofline model checks the configuration and owns the byte counts both share
        # (KV bytes per token, swaps, copies); the measured model prices the compute.
        self._roofline = CostModel(model, hardware,
                                   default_coefficients(hardware.coefficients_name), tp=tp,
                                   weight_dtype=weight_dtype, kv_dtype=kv_dtype)
        self.model = model
        self.hardware = hardware
        self.coefficients = coefficients
        self.tp = tp
        self.pp = pp
        self.weight_dtype = weight_dtype
        """An override of every weight's dtype; None: the model's own (possibly mixed) ones."""
        self._gemm_dtype = model.dense_gemm_dtype(weight_dtype)
        """The dtype the GEMM tables are read at (the big weights' dtype outside the experts:
        gpt-oss keeps them bf16 beside its mxfp4 experts)."""
        self._moe_dtype = model.expert_dtype(weight_dtype)
        """The dtype the MoE table is read at: the routed experts'."""
        self.kv_dtype = kv_dtype
        if tables is None and hardware.kernel_tables is None:
            raise ValueError(f"no measured kernel tables for hardware {hardware.name!r}")
        self.tables = tables if tables is not None else shipped_tables(hardware.kernel_tables)
        self.lookups_in_range = 0
        self.lookups_extrapolated = 0
        self._batch_terms: dict[tuple[int, int, int], BatchTerms] = {}
        self._per_tokens: dict[int, TokenTerms] = {}
        self._lm_heads: dict[int, KernelTime] = {}
        """The logits GEMM by sampled positions: a step's token count varies with its prefill
        chunk, so its batch terms are often new while its sampled positions repeat."""
        self._prefills: dict[tuple[tuple[int, int], ...], tuple[KernelTime, ...]] = {}
        """Context attention by a step's prefill chunks `(new, cached)`: most steps that admit
        a prompt run one first chunk, and prompt lengths repeat across a trace."""
        self._lone_rows: dict[tuple[int, int, int], MeasuredIterationCost] = {}
        """Steps of one row by (new, cached, sampled) tokens: most steps that admit a prompt
        run it alone, and prompt lengths repeat across a trace."""
        self._rows: dict[tuple[str, int], Row] = {}
        self._gemm_rows: dict[tuple[int, int], Row] = {}
        self._decode_batches: dict[int, _DecodeBatch] = {}
        self._allreduce_tables: dict[str, _AllReduceTable] = {}
        self._in_one_cell: tuple[int, int, int, int] = (0, 0, 0, 0)
        """(rows, growing rows, cached tokens in all, steps) of the last run whose first
        steps `_one_cell_times` priced: every lookup of those steps is in range, which is all
        `ran_lockstep_decodes` of that run needs to know (it depends on those four alone)."""
        self._precompute()

    @property
    def name(self) -> str:
        """What summary.json's `cost_model` says: the engine and version the tables measure."""
        return f"measured:{self.tables.engine}/{self.hardware.name}"

    @property
    def kv_bytes_per_token_replica(self) -> float:
        return self._roofline.kv_bytes_per_token_replica

    def copy_time(self, num_tokens: int) -> float:
        return self._roofline.copy_time(num_tokens)

    def swap_time(self, num_tokens: int) -> float:
        return self._roofline.swap_time(num_tokens)

    def with_model(self, model: ModelSpec, **coefficients: float) -> MeasuredCostModel:
        """`model` on this model's hardware, TP degree, dtypes and tables, with some
        coefficients replaced (a draft model pays its own per-pass overhead only)."""
        return MeasuredCostModel(model, self.hardware, replace(self.coefficients, **coefficients),
                                 tp=self.tp, weight_dtype=self.weight_dtype,
                                 kv_dtype=self.kv_dtype, tables=self.tables)

    def stand_ins(self) -> list[str]:
        """A line for each kind of kernel that no table here measures at this run's dtypes,
        so that another dtype's table, scaled by the roofline's ratio, prices it (its lookups
        count as extrapolated): the run's notes say so rather than leave a user's `--kv-dtype`
        or `--weight-dtype` to look measured."""
        here = f"the {self.tables.engine} kernel tables of {self.hardware.name} measure none"
        lines = []
        if not self._gemm_native:
            lines.append(f"GEMMs with weights at {self._gemm_dtype}: {here}; priced from the "
                         "bf16 GEMMs, scaled by the roofline (extrapolated)")
        if self.model.moe is not None and not dtype_table(self.tables, "moe", self._moe_dtype)[1]:
            lines.append(f"MoE experts at {self._moe_dtype}: {here}; priced from the bf16 MoE "
                         "kernel, scaled by the roofline (extrapolated)")
        untabled = [kind.name for kind in self._kinds
                    if kind.context is None or kind.generation is None]
        if untabled:
            lines.append(f"{' and '.join(untabled)} attention: {here}; priced by the roofline "
                         "alone (extrapolated)")
        stand_in_kv = {where.table_kv for kind in self._kinds
                       for where in (kind.context, kind.generation)
                       if where is not None} - {TABLE_DTYPES.get(self.kv_dtype)}
        if stand_in_kv:
            lines.append(f"attention with the KV cache at {self.kv_dtype}: {here}; priced from "
                         f"the {' and '.join(sorted(stand_in_kv))}-KV attention tables, scaled "
                         "by the roofline (extrapolated)")
        return lines

    # ---- per-rank constants -------------------------------------------------------------
    def _precompute(self) -> None:
        m, tp = self.model, self.tp
        self._weight_bytes = dtype_bytes(self._gemm_dtype)
        self._kv_bytes = dtype_bytes(self.kv_dtype)
        self._heads = m.num_heads // tp
        self._kv_heads = max(1, m.num_kv_heads // tp)
        self._gemms = self._gemm_shapes()
        self._gemm_table, self._gemm_native = dtype_table(self.tables, "gemm", self._gemm_dtype)
        self._gemm_table_bytes = 1.0 if self._gemm_native and self._weight_bytes == 1.0 else 2.0
        self._kinds = layer_kinds(self.tables, m, tp, self._gemm_dtype, self.kv_dtype)
        self._windowless = all(kind.window is None for kind in self._kinds)

        d = m.attn_head_dim
        up = 2 if m.gated_mlp else 1
        inter = m.intermediate_size if m.moe is None else m.moe.expert_intermediate_size
        # Bytes the untabled kernels move per token (read + write, per rank): every layer's
        # two norms and activation; rotary and the KV write in attention layers (MLA's are
        # inside its module tables).
        norms = 2 * 4 * m.hidden_size * ACTIVATION_BYTES
        activation = (up + 1) * inter / tp * ACTIVATION_BYTES if m.gated_mlp else 0.0
        rotary = 2 * (self._heads + self._kv_heads) * d * ACTIVATION_BYTES
        kv_write = 2 * self._kv_heads * d * (ACTIVATION_BYTES + self._kv_bytes)
        attention_layers = m.num_attention_layers if m.mla is None else 0
        self._untabled_bytes_per_token = (m.num_layers * (norms + activation)
                                          + attention_layers * (rotary + kv_write))
        self._untabled_kernels = m.num_layers * UNTABLED_KERNELS_PER_LAYER
        self._untabled_bandwidth = (self.hardware.mem_bandwidth_bytes_s
                                    * self.coefficients.untabled_bandwidth_eff)
        self._ssm_layers = m.count_layers("ssm")
        self._ssm_state_bytes_rank = m.ssm_state_bytes(self.kv_dtype) / tp
        self._ssm_flops_per_token = (9.0 * self._ssm_layers * m.ssm.d_inner * m.ssm.d_state / tp
                                     if m.ssm else 0.0)
        self._num_allreduces = 2 * m.num_layers if tp > 1 else 0

    def _gemm_shapes(self) -> list[tuple[str, int, int, int]]:
        """(name, n, k, layers) of the GEMMs every computed token goes through, per rank."""
        m, tp = self.model, self.tp
        d = m.attn_head_dim
        gemms: list[tuple[str, int, int, int]] = []
        if m.mla is None:  # MLA projections are inside the MLA module tables
            gemms += [("qkv", (self._heads + 2 * self._kv_heads) * d, m.hidden_size,
                       m.num_attention_layers),
                      ("o", m.hidden_size, self._heads * d, m.num_attention_layers)]
        if m.ssm is not None:
            s, layers = m.ssm, m.count_layers("ssm")
            gemms += [("ssm in", 2 * s.d_inner // tp, m.hidden_size, layers),
                      ("ssm x", s.dt_rank + 2 * s.d_state, s.d_inner // tp, layers),
                      ("ssm dt", s.d_inner // tp, s.dt_rank, layers),
                      ("ssm out", m.hidden_size, s.d_inner // tp, layers)]
        up = 2 if m.gated_mlp else 1
        gemms += [("gate_up", up * m.intermediate_size // tp, m.hidden_size, m.num_dense_mlp_layers),
                  ("down", m.hidden_size, m.intermediate_size // tp, m.num_dense_mlp_layers)]
        if m.moe is not None:
            gemms.append(("router", m.moe.num_experts, m.hidden_size, m.num_moe_layers))
            shared = m.moe.num_shared_experts * m.moe.expert_intermediate_size // tp
            gemms += [("shared gate_up", up * shared, m.hidden_size, m.num_moe_layers),
                      ("shared down", m.hidden_size, shared, m.num_moe_layers)]
        return [g for g in gemms if g[1] and g[2] and g[3]]

    # ---- iteration cost -----------------------------------------------------------------
    def breakdown(self, new_tokens: list[int], context_tokens: list[int],
                  num_sampling: int | None = None) -> MeasuredIterationCost:
        """Cost of one iteration computing `new_tokens[i]` on top of `context_tokens[i]`;
        `num_sampling` positions compute logits (default: one per row)."""
        num_seqs = len(new_tokens)
        sampling = num_seqs if num_sampling is None else num_sampling
        if num_seqs == 1:  # a lone request's prompt: prompt lengths repeat across a trace
            return cached(self._lone_rows, (new_tokens[0], context_tokens[0], sampling),
                          self._breakdown, new_tokens, context_tokens, sampling)
        return self._breakdown(new_tokens, context_tokens, sampling)

    def _breakdown(self, new_tokens: list[int], context_tokens: list[int],
                   sampling: int) -> MeasuredIterationCost:
        """`breakdown` with the sampled positions given."""
        num_seqs = len(new_tokens)
        batch = self._batch_terms_of(num_seqs, sum(new_tokens), sampling)
        # Decode rows compute one token on a cached context; the others (prefill chunks,
        # verifies, a first token on no context) are few, so the decodes' count and KV are
        # the whole batch's less theirs (exact: integers).
        prefills = [(n, ctx) for n, ctx in zip(new_tokens, context_tokens)
                    if n != 1 or ctx <= 0]
        window = self.model.sliding_window
        if window or (new_tokens and min(new_tokens) < 1):  # rows that are neither kind
            decode_contexts = [ctx for n, ctx in zip(new_tokens, context_tokens)
                               if n == 1 and ctx > 0]
            prefills = [(n, ctx) for n, ctx in prefills if n >= 1]
            kv_local = sum([min(ctx, window) for ctx in decode_contexts]) if window else 0
            attention = self._decode_attention(len(decode_contexts), sum(decode_contexts),
                                               kv_local)
        elif len(prefills) < num_seqs:
            attention = self._decode_attention(
                num_seqs - len(prefills),
                sum(context_tokens) - sum([ctx for _, ctx in prefills]), 0)
        else:  # all verifies or chunks (a speculative step): no decode attention
            attention = ()
        if len(prefills) == 1:  # a prompt's chunk: lengths repeat (a batch of verifies never)
            attention += cached(self._prefills, tuple(prefills), self._prefill_attention,
                                prefills)
        elif prefills:
            attention += self._prefill_attention(prefills)
        return MeasuredIterationCost(batch, attention)

    def iteration_time(self, new_tokens: list[int], context_tokens: list[int],
                       num_sampling: int | None = None) -> float:
        return self.breakdown(new_tokens, context_tokens, num_sampling).time_s

    def prefill_time(self, prompt_tokens: int) -> float:
        return self.iteration_time([prompt_tokens], [0])

    def decode_time(self, context_tokens: list[int]) -> float:
        return self.iteration_time([1] * len(context_tokens), context_tokens)

    def _batch_terms_of(self, num_seqs: int, total_new: int, num_sampling: int) -> BatchTerms:
        return cached(self._batch_terms, (num_seqs, total_new, num_sampling),
                      self._terms_of_batch, num_seqs, total_new, num_sampling)

    def _token_terms(self, total_new: int) -> TokenTerms:
        """The terms every computed token pays, cached by token count: a step's batch terms
        are often new (its prefill chunk sets its row and token counts) while its token
        count repeats."""
        return cached(self._per_tokens, total_new, self._token_terms_for, total_new)

    def _token_terms_for(self, total_new: int) -> TokenTerms:
        kernels = self._kernels_for(total_new) if total_new else ()
        kernels_s = 0.0
        for kernel in kernels:
            kernels_s += kernel.time_s
        untabled_s = 0.0
        if total_new:
            c = self.coefficients
            untabled_s = (self._untabled_kernels * c.untabled_kernel_latency_s
                          + self._untabled_bytes_per_token * total_new / self._untabled_bandwidth)
        return TokenTerms(kernels, kernels_s, untabled_s,
                          sum(1 for k in kernels if k.extrapolated))

    def _kernels_for(self, total_new: int) -> tuple[KernelTime, ...]:
        """The kernels every computed token goes through (GEMMs, MoE, all-reduce)."""
        found = [self._gemm(name, total_new, n, k, layers) for name, n, k, layers in self._gemms]
        if self.model.moe is not None:
            found.append(self._moe(total_new))
        if self._num_allreduces:
            found.append(self._allreduce(total_new))
        return tuple(found)

    def _terms_of_batch(self, num_seqs: int, total_new: int, num_sampling: int) -> BatchTerms:
        """The token terms plus the logits GEMM, SSM state traffic and per-step overheads;
        times summed left to right in kernel order (the token kernels, then the logits')."""
        kernels, kernels_s, untabled_s, extrapolated = self._token_terms(total_new)
        if num_sampling:
            lm_head = self._lm_head(num_sampling)
            kernels += (lm_head,)
            kernels_s += lm_head.time_s
            extrapolated += lm_head.extrapolated
        return BatchTerms(kernels, kernels_s, *self._untabled_and_overhead_s(
            num_seqs, total_new, untabled_s), len(kernels) - extrapolated, extrapolated)

    def _batch_sums(self, num_seqs: int, total_new: int,
                    num_sampling: int) -> tuple[float, float, float, int, int]:
        """`_terms_of_batch(...)`'s times and lookup counts (kernels_s, untabled_s,
        overhead_s, num_in_range, num_extrapolated), the same floats, without its kernels:
        for a step priced once, whose (rows, tokens, sampled) shape rarely comes back while
        its token count does (`_token_terms`)."""
        # the caches read in place (`_token_terms`, `_lm_head`): every chunked step asks
        kernels, kernels_s, untabled_s, extrapolated = (self._per_tokens.get(total_new)
                                                        or self._token_terms(total_new))
        num_kernels = len(kernels)
        if num_sampling:
            lm_head = self._lm_heads.get(num_sampling) or self._lm_head(num_sampling)
            kernels_s += lm_head.time_s
            extrapolated += lm_head.extrapolated
            num_kernels += 1
        untabled_s, overhead_s = self._untabled_and_overhead_s(num_seqs, total_new, untabled_s)
        return kernels_s, untabled_s, overhead_s, num_kernels - extrapolated, extrapolated

    def _lm_head(self, num_sampling: int) -> KernelTime:
        """The logits GEMM over `num_sampling` positions (cached: sampled counts repeat)."""
        return cached(self._lm_heads, num_sampling, self._gemm, "lm_head", num_sampling,
                      self.model.vocab_size // self.tp, self.model.hidden_size, 1)

    def _untabled_and_overhead_s(self, num_seqs: int, total_new: int,
                                 untabled_s: float) -> tuple[float, float]:
        """A batch's untabled time (the token terms' `untabled_s` plus SSM state traffic) and
        its per-step overheads."""
        c = self.coefficients
        if total_new and self._ssm_layers:
            untabled_s += self._ssm_layers * c.untabled_kernel_latency_s + max(
                self._ssm_flops_per_token * total_new / self.hardware.compute_peak("bf16"),
                2.0 * self._ssm_state_bytes_rank * num_seqs / self._untabled_bandwidth)
        return untabled_s, c.step_overhead_s + c.per_sequence_overhead_s * num_seqs

    # ---- kernels ------------------------------------------------------------------------
    def _gemm(self, name: str, m: int, n: int, k: int, layers: int) -> KernelTime:
        row = self._gemm_rows.get((n, k))
        if row is None:
            row = self._gemm_rows[(n, k)] = self._gemm_table.row(0, 0, (n, k))
        found = row.at(m)
        if found.in_range and self._gemm_native:
            return KernelTime(f"gemm {name}", layers * found.value_s, False)
        anchor = found.anchor or (m, n, k)  # in range, but at another dtype
        time_s = found.value_s * _ratio(
            roofline.gemm_s(self.hardware, m, n, k, self._weight_bytes),
            roofline.gemm_s(self.hardware, *anchor, self._gemm_table_bytes))
        return KernelTime(f"gemm {name}", layers * time_s, True)

    def _moe(self, tokens: int) -> KernelTime:
        m, moe = self.model, self.model.moe
        assert moe is not None
        table, native = dtype_table(self.tables, "moe", self._moe_dtype)
        weight_bytes = dtype_bytes(self._moe_dtype)
        shape = (m.hidden_size, moe.expert_intermediate_size, moe.experts_per_token,
                 moe.num_experts, self.tp)
        index = table.shape_index(shape)
        exact = native and index is not None
        if index is None:
            index = table.nearest_shape(shape)
        found = table.lookup(index, (tokens,))
        time_s = found.value_s
        exact = exact and found.in_range
        if not exact:
            anchor = tuple(int(v) for v in table.shapes[index])
            time_s *= _ratio(
                roofline.moe_s(self.hardware, tokens, *shape, weight_bytes, m.gated_mlp),
                roofline.moe_s(self.hardware, (found.anchor or (tokens,))[0], *anchor,
                               weight_bytes if native else 2.0, m.gated_mlp))
        return KernelTime("moe", m.num_moe_layers * time_s, not exact)

    def _allreduce(self, tokens: int) -> KernelTime:
        c = self.coefficients
        elements = tokens * self.model.hidden_size
        message_bytes = elements * ACTIVATION_BYTES
        if message_bytes > c.custom_allreduce_max_bytes:
            name = "nccl"
        else:
            name = "custom_graph" if tokens <= c.cuda_graph_max_tokens else "custom_eager"
        table, index, exact, row, axis = (self._allreduce_tables.get(name)
                                          or self._allreduce_table(name))
        found = _interior_lookup(row, axis, float(elements)) if row is not None else None
        if found is None:
            found = table.lookup(index, (elements,))
        time_s = found.value_s
        exact = exact and found.in_range
        if not exact:
            gpus = int(table.shapes[index][0])
            anchor_elements = (found.anchor or (elements,))[0]
            time_s *= _ratio(roofline.allreduce_s(self.hardware, self.tp, message_bytes),
                             roofline.allreduce_s(self.hardware, gpus,
                                                  anchor_elements * ACTIVATION_BYTES))
        return KernelTime(f"all-reduce {name}", self._num_allreduces * time_s, not exact)

    def _allreduce_table(self, name: str) -> _AllReduceTable:
        """The all-reduce table `name` (cached): its shape index at this TP, whether that
        shape was measured (else the nearest), and its row and axis ends when the table has
        one axis, every point of it measured (`_interior_lookup` then reads it in place of
        `lookup`)."""
        table = self.tables.get(f"allreduce/{name}")
        if table is None:
            raise ValueError(f"the {self.tables.engine} kernel tables of {self.hardware.name} "
                             f"have no {name} all-reduce table")
        index = table.shape_index((self.tp,))
        exact = index is not None
        if index is None:
            index = table.nearest_shape((self.tp,))
        row = (table.row(index, 0, ()) if len(table.axes) == 1
               and not np.isnan(table.grid_s(index)).any() else None)
        axis = table.axes[0]
        found = self._allreduce_tables[name] = (table, index, exact, row,
                                                (float(axis[0]), float(axis[-1])))
        return found

    def _query_s(self, phase: str, batch: float, length: float) -> float:
        """Roofline time of this model's own attention (or MLA module) call."""
        m = self.model
        if m.mla is not None:
            return roofline.mla_module_s(self.hardware, phase, batch, length, self._heads,
                                         m.hidden_size, m.mla, self._weight_bytes, self._kv_bytes)
        return roofline.attention_s(self.hardware, phase, batch, length,
                                    (self._heads, self._kv_heads, m.attn_head_dim), self._kv_bytes)

    def _untabled_attention_s(self, phase: str, batch: float, length: float) -> float:
        """An attention call with no table on this hardware: its roofline time at the
        untabled kernels' bandwidth share."""
        return self._query_s(phase, batch, length) / self.coefficients.untabled_bandwidth_eff

    def _decode_attention(self, num_decodes: int, kv_global: int,
                          kv_local: int) -> tuple[KernelTime, ...]:
        """Decode attention of `num_decodes` rows reading `kv_global` cached tokens in all
        (`kv_local` within the sliding window): one kernel per layer kind, at the mean length."""
        if not num_decodes:
            return ()
        return tuple(self._decode_kernel(kind, num_decodes,
                                         (kv_local if kind.decode_capped else kv_global) / num_decodes,
                                         self._row(kind, num_decodes))
                     for kind in self._kinds)

    def _decode_steps(self, num_decodes: int, kv_global: Sequence[int],
                      kv_local: Sequence[int]) -> list[tuple[KernelTime, ...]]:
        """`_decode_attention` of each step of a run, its row looked up once per kind."""
        per_kind = []
        price = self._decode_kernel
        for kind in self._kinds:
            row = self._row(kind, num_decodes)
            kv = kv_local if kind.decode_capped else kv_global
            per_kind.append([price(kind, num_decodes, tokens / num_decodes, row) for tokens in kv])
        return list(zip(*per_kind))

    def _decode_kernel(self, kind: LayerKind, num_decodes: int, length: float,
                       row: Row | None) -> KernelTime:
        where = kind.generation
        if where is None or row is None:
            return KernelTime(kind.decode_name, kind.layers * self._untabled_attention_s(
                "generation", num_decodes, length), True)
        found = row.at(length)
        if where.exact and found.in_range:
            return KernelTime(kind.decode_name, kind.layers * found.value_s, False)
        anchor = found.anchor or (num_decodes * where.batch_factor, length)
        time_s = found.value_s * _ratio(self._query_s("generation", num_decodes, length),
                                        where.anchor_s(self.hardware, "generation", *anchor))
        return KernelTime(kind.decode_name, kind.layers * time_s, True)

    def _row(self, kind: LayerKind, num_decodes: int) -> Row | None:
        """The decode table of `kind` at a batch of `num_decodes` (cached per batch size;
        None when this hardware has no table for it)."""
        key = (kind.name, num_decodes)
        row = self._rows.get(key)
        if row is None and kind.generation is not None:
            where = kind.generation
            row = self._rows[key] = where.table.row(where.shape_index, 1,
                                                    (num_decodes * where.batch_factor,))
        return row

    def _prefill_attention(self, chunks: list[tuple[int, int]]) -> tuple[KernelTime, ...]:
        """Context attention of prefill chunks and verifies `(new, cached)`: one call per
        layer kind, as that many prompts of the length with the same attended pairs."""
        count = len(chunks)
        return tuple([self._context_kernel(kind, count, _summed_pairs(chunks, kind.window))
                      for kind in self._kinds])

    def _context_kernel(self, kind: LayerKind, count: int, pairs: float) -> KernelTime:
        """Context attention of `kind` over `count` rows attending `pairs` pairs in all."""
        time_s, exact = self._context_time(kind, count, pairs)
        return KernelTime(kind.prefill_name, time_s, not exact)

    def _context_time(self, kind: LayerKind, count: int, pairs: float) -> tuple[float, bool]:
        """`_context_kernel`'s time over every layer of `kind`, and whether its lookup was
        exact (in range)."""
        pairs_per_row = pairs / count
        prompt = equivalent_prompt(pairs_per_row, None)
        where = kind.context
        if where is None:
            return kind.layers * self._untabled_attention_s("context", count, prompt), False
        point = (count * where.batch_factor,
                 prompt if where.table_window is None
                 else equivalent_prompt(pairs_per_row, where.table_window))
        key = (kind.prefill_name, count)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = where.table.row(where.shape_index, 1, point[:1])
        found = row.at(point[1])
        time_s = found.value_s
        exact = where.exact and found.in_range
        if not exact:
            time_s *= _ratio(self._query_s("context", count, prompt),
                             where.anchor_s(self.hardware, "context", *(found.anchor or point)))
        return kind.layers * time_s, exact

    # ---- Executor protocol --------------------------------------------------------------
    def plan_cost(self, plan: Plan) -> MeasuredIterationCost:
        return self.breakdown(*plan_shape(plan))

    def execute(self, plan: Plan) -> StepResult:
        return self.run_priced(plan, self.price(plan))

    def price(self, plan: Plan) -> PricedPlan:
        """What `plan` takes, its lookups not yet counted (`run_priced` counts them)."""
        return priced_with_moves(self, self.price_rows(*plan_shape(plan)), plan)

    def run_priced(self, plan: Plan, priced: PricedPlan) -> StepResult:
        """`execute(plan)`'s result for a plan priced as `priced`: its lookups counted."""
        self.ran_rows(priced)
        return StepResult(priced.duration_s)

    def execute_decodes_apart(self, decode_contexts: list[int], plan: Plan) -> StepResult:
        """`execute` of `plan` after one-token decodes on `decode_contexts`
        (`PricesDecodesApart`)."""
        priced = (self._price_decodes_apart(decode_contexts, *plan_shape(plan))
                  if decode_contexts and not plan.padding and self._windowless
                  and not self.model.sliding_window
                  else None)
        if priced is None:
            priced = self.price_rows(*plan_shape_after_decodes(decode_contexts, plan))
        return self.run_priced(plan, priced_with_moves(self, priced, plan))

    def _price_decodes_apart(self, decode_contexts: list[int], new_tokens: list[int],
                             context_tokens: list[int], num_sampling: int) -> PricedPlan | None:
        """`price_rows` of one-token decodes on `decode_contexts` followed by the rows
        `new_tokens` on `context_tokens` (`num_sampling` sampled among those), without a
        sliding window, from the decodes' count and summed context: `_breakdown`'s batch
        terms, decode attention and prefill attention added up as `_step_time_s` adds them,
        without the whole step's row lists or its kernels. None (price the rows) when a row
        computes no token. (A step's decodes outnumber its chunks twenty to one, and its
        batch shape is mostly new: tested bit for bit against `price_rows`.)"""
        num_decodes, kv = len(decode_contexts), sum(decode_contexts)
        total_new = num_decodes
        prefills = []
        for new, ctx in zip(new_tokens, context_tokens):
            if new < 1:
                return None
            total_new += new
            if new == 1 and ctx > 0:  # a decode row of the plan's own (`_breakdown`'s split)
                num_decodes += 1
                kv += ctx
            else:
                prefills.append((new, ctx))
        kernels_s, untabled_s, overhead_s, num_in_range, num_extrapolated = self._batch_sums(
            len(decode_contexts) + len(new_tokens), total_new, len(decode_contexts) + num_sampling)
        num_attention = num_attention_extrapolated = 0
        for kind in self._kinds:
            kernel = self._decode_kernel(kind, num_decodes, kv / num_decodes,
                                         self._row(kind, num_decodes))
            kernels_s += kernel.time_s
            num_attention += 1
            num_attention_extrapolated += kernel.extrapolated
        if len(prefills) == 1:
            attention = cached(self._prefills, tuple(prefills), self._prefill_attention,
                               prefills)
        else:
            attention = self._prefill_attention(prefills) if prefills else ()
        for kernel in attention:
            kernels_s += kernel.time_s
            num_attention += 1
            num_attention_extrapolated += kernel.extrapolated
        return PricedPlan(kernels_s + untabled_s + overhead_s,
                          num_in_range + num_attention - num_attention_extrapolated,
                          num_extrapolated + num_attention_extrapolated)

    def price_rows(self, new_tokens: list[int], context_tokens: list[int],
                   num_sampling: int) -> PricedPlan:
        """What a plan of these rows without swaps or copies takes (`PricesRows`). Rows that
        all compute more than one token (a speculative step's verifies) are priced from their
        summed attended pairs when no layer has a window (`breakdown`'s terms: the same
        integer), from their cached tokens' sum when they all compute the same n."""
        num_rows, new = len(new_tokens), new_tokens[0] if new_tokens else 0
        if new > 1 and num_rows > 1 and self._windowless:
            if new_tokens.count(new) == num_rows:
                return self._price_chunks(num_rows, new * num_rows, num_sampling,
                                          new * sum(context_tokens)
                                          + num_rows * (new * (new + 1) // 2))
            if min(new_tokens) > 1:
                return self._price_chunks(num_rows, sum(new_tokens), num_sampling,
                                          _summed_pairs(zip(new_tokens, context_tokens), None))
        cost = self.breakdown(new_tokens, context_tokens, num_sampling)
        batch, attention = cost
        attention_extrapolated = len([kernel for kernel in attention if kernel.extrapolated])
        return PricedPlan(cost.time_s, batch.num_in_range + len(attention) - attention_extrapolated,
                          batch.num_extrapolated + attention_extrapolated)

    def _price_chunks(self, num_rows: int, total_new: int, num_sampling: int,
                      pairs: int) -> PricedPlan:
        """`price_rows` of rows that are all chunks (no decode attention), `pairs` attended
        in all: `breakdown`'s batch terms and one context kernel per layer kind, added up as
        `_step_time_s` adds them, without building the kernels."""
        batch = self._batch_terms_of(num_rows, total_new, num_sampling)
        total_s = batch.kernels_s
        num_extrapolated = batch.num_extrapolated
        for kind in self._kinds:
            time_s, exact = self._context_time(kind, num_rows, pairs)
            total_s += time_s
            if not exact:
                num_extrapolated += 1
        return PricedPlan(total_s + batch.untabled_s + batch.overhead_s,
                          batch.num_in_range + batch.num_extrapolated + len(self._kinds)
                          - num_extrapolated, num_extrapolated)

    def ran_rows(self, priced: PricedPlan) -> None:
        """Rows priced as `priced` ran: count their lookups."""
        self.lookups_in_range += priced.num_in_range
        self.lookups_extrapolated += priced.num_extrapolated

    @property
    def prices_by_context_sum(self) -> bool:
        """Without sliding windows (which cap each row's context): decode attention reads
        the batch's mean context, prefill attention its rows' summed attended pairs."""
        return self._windowless

    def lockstep_decode_times(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0,
                              padding_contexts: Collection[int] = ()) -> list[float] | None:
        """What `execute` would return for each of `num_steps` decode-only iterations of one
        batch, sequence i on `context_tokens[i] + j` cached tokens at step j (from
        `first_step`), beside padding rows on `padding_contexts` (the same each step). None
        for padding under a sliding window (the engine then steps one at a time)."""
        if padding_contexts and not self._windowless:
            return None
        if self._windowless and num_steps < ARRAY_STEPS:
            num_seqs = len(context_tokens)
            num_rows = num_seqs + len(padding_contexts)
            total = sum(context_tokens) + sum(padding_contexts)
            times = self._one_cell_times(num_rows, total + num_seqs * first_step, num_steps,
                                         num_seqs)
            if times is not None:
                if not first_step:
                    self._in_one_cell = (num_rows, num_seqs, total, num_steps)
                return times
        return self._lockstep(context_tokens, num_steps, first_step, padding_contexts)

    def lockstep_decode_sum_s(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0, total_s: float = 0.0) -> float:
        """`lockstep_decode_times(...)` added one by one onto `total_s` (a stretch of draft
        passes): a short stretch in one table cell from `_one_cell_times`, else `_lockstep`."""
        num_seqs = len(context_tokens)
        times = (self._one_cell_times(num_seqs, sum(context_tokens) + num_seqs * first_step,
                                      num_steps, num_seqs)
                 if self._windowless and num_steps < ARRAY_STEPS else None)
        if times is None:
            times = self._lockstep(context_tokens, num_steps, first_step)
        for time_s in times:
            total_s += time_s
        return total_s

    def _one_cell_times(self, num_seqs: int, first_kv: int, num_steps: int,
                        num_growing: int) -> list[float] | None:
        """`_short_run`'s times of a short run without a sliding window whose batch of
        `num_seqs` rows reads `first_kv` cached tokens in all at its first step and
        `num_growing` more each step (all but its padding rows), when its one layer kind's
        exact table holds every step's mean length in one cell (most runs: the mean rises by
        one a step); None otherwise. Each step is `_one_kernel_step_times_s`' sum of
        `lerp_each`'s value, spelled out in one comprehension: the same operations in the
        same order, without the mean lengths' and values' lists."""
        batch, rows = self._decode_batch(num_seqs)
        if len(rows) != 1 or rows[0] is None:
            return None
        stop = first_kv + num_growing * num_steps
        cell = rows[0].one_cell(first_kv / num_seqs, (stop - num_growing) / num_seqs)
        if cell is None:
            return None
        x0, x1, y0, y1 = cell
        dx, dy = x1 - x0, y1 - y0
        kernels_s, untabled_s, overhead_s = batch.kernels_s, batch.untabled_s, batch.overhead_s
        layers = self._kinds[0].layers
        return [kernels_s + layers * (y0 + (kv / num_seqs - x0) / dx * dy) + untabled_s + overhead_s
                for kv in range(first_kv, stop, num_growing)]

    def ran_lockstep_decodes(self, context_tokens: list[int], num_steps: int,
                             padding_contexts: Collection[int] = ()) -> None:
        """The engine ran the first `num_steps` of those iterations: count their lookups (a
        decode lookup is in range when its kind's table is exact and its row covers the
        step's mean length, as in `_decode_kernel`)."""
        num_growing = len(context_tokens)
        num_seqs = num_growing + len(padding_contexts)
        batch, rows = self._decode_batch(num_seqs)
        extrapolated = num_steps * batch.num_extrapolated
        seqs_in_cell, growing_in_cell, total_in_cell, steps_in_cell = self._in_one_cell
        if (num_seqs == seqs_in_cell and num_growing == growing_in_cell
                and num_steps <= steps_in_cell
                and sum(context_tokens) + sum(padding_contexts) == total_in_cell):
            # one kind, every lookup in range
            self.lookups_extrapolated += extrapolated
            self.lookups_in_range += num_steps * (len(batch.kernels) + 1) - extrapolated
            return
        kv_global, kv_local = self._lockstep_kv(context_tokens, num_steps, 0, padding_contexts)
        for kind, row in zip(self._kinds, rows):
            if row is None:
                extrapolated += num_steps
                continue
            kv = kv_local if kind.decode_capped else kv_global
            # The mean length only grows over a run and a row covers an interval: with both
            # ends covered, so is every step.
            if not (row.covers(kv[0] / num_seqs) and row.covers(kv[-1] / num_seqs)):
                extrapolated += sum(1 for tokens in kv if not row.covers(tokens / num_seqs))
        self.lookups_extrapolated += extrapolated
        self.lookups_in_range += num_steps * (len(batch.kernels) + len(self._kinds)) - extrapolated

    def _lockstep_kv(self, context_tokens: list[int], num_steps: int, first_step: int,
                     padding_contexts: Collection[int] = ()) -> tuple[range, Sequence[int]]:
        """Cached tokens the batch reads at each step, in all (a range: it grows by the
        batch size a step; padding rows, only without a sliding window, add the same each
        step) and within the sliding window (without one, the same range)."""
        num_seqs, total = len(context_tokens), sum(context_tokens) + sum(padding_contexts)
        kv_global = range(total + num_seqs * first_step,
                          total + num_seqs * (first_step + num_steps), num_seqs)
        window = self.model.sliding_window
        if not window:
            return kv_global, kv_global
        steps = range(first_step, first_step + num_steps)
        contexts = np.asarray(context_tokens, dtype=np.int64)[None, :] + np.asarray(steps)[:, None]
        return kv_global, np.minimum(contexts, window).sum(axis=1).tolist()

    def _lockstep(self, context_tokens: list[int], num_steps: int, first_step: int,
                  padding_contexts: Collection[int] = ()) -> list[float]:
        """Decode steps of one batch (and its padding rows): a short run step by step
        through `_decode_attention` (what `execute` does), a long one as arrays over the
        steps where every lookup lies inside its table (`Row.interior`: `Row.at`'s
        arithmetic, so the same bits) and step by step for the others; every step summed by
        `_step_time`."""
        num_seqs = len(context_tokens) + len(padding_contexts)
        decode = self._decode_batch(num_seqs)
        batch = decode.batch
        kv_global, kv_local = self._lockstep_kv(context_tokens, num_steps, first_step,
                                                padding_contexts)
        if num_steps < ARRAY_STEPS:
            return self._short_run(decode, num_seqs, kv_global, kv_local)
        in_one_go = np.ones(num_steps, dtype=bool)
        kernels = []
        for kind, row in zip(self._kinds, decode.exact_rows):
            if row is None:
                in_one_go[:] = False
                break
            kv = np.asarray(kv_local if kind.decode_capped else kv_global, dtype=np.int64)
            values, inside = row.interior(kv / num_seqs)
            in_one_go &= inside
            kernels.append(KernelTime(kind.decode_name, kind.layers * values, False))
        times = (_step_time(batch, tuple(kernels)) if in_one_go.any()
                 else np.zeros(num_steps)).tolist()
        for j in np.flatnonzero(~in_one_go).tolist():
            times[j] = _step_time(batch, self._decode_attention(num_seqs, kv_global[j],
                                                                kv_local[j]))
        return times

    def _decode_batch(self, num_seqs: int) -> _DecodeBatch:
        """The pricing parts of a decode batch of `num_seqs` (built at its first run)."""
        found = self._decode_batches.get(num_seqs)
        if found is None:
            rows = [self._row(kind, num_seqs) for kind in self._kinds]
            found = self._decode_batches[num_seqs] = _DecodeBatch(
                self._batch_terms_of(num_seqs, num_seqs, num_seqs),
                tuple(row if row is not None and kind.generation.exact else None
                      for kind, row in zip(self._kinds, rows)))
        return found

    def _short_run(self, decode: _DecodeBatch, num_seqs: int, kv_global: Sequence[int],
                   kv_local: Sequence[int]) -> list[float]:
        """A short run step by step: with one layer kind whose table holds every step, its
        in-range values (what `_decode_kernel` returns, looked up a table cell at a time:
        the mean lengths only rise) summed as `_step_time_s` sums them, without building the
        kernels; otherwise through `_decode_steps`."""
        batch, rows = decode
        if len(rows) == 1 and rows[0] is not None:
            kind = self._kinds[0]
            kv = kv_local if kind.decode_capped else kv_global
            mean_lengths = list(map(truediv, kv, repeat(num_seqs, len(kv))))
            values = rows[0].rising_in_range_values(mean_lengths)
            if len(values) == len(kv):
                return _one_kernel_step_times_s(batch, kind.layers, values)
        return [_step_time(batch, attention)
                for attention in self._decode_steps(num_seqs, kv_global, kv_local)]


# ---- helpers ------------------------------------------------------------------------------
def _summed_pairs(chunks: Iterable[tuple[int, int]], window: int | None) -> float:
    """`attended_pairs` summed over `(new, cached)` chunks; without a window in integers,
    the same value (every term and partial sum is an integer below 2**53, so the floats'
    sum is exact too) without a call per chunk."""
    if window is None:
        return sum([n * ctx + n * (n + 1) // 2 for n, ctx in chunks])
    return sum([attended_pairs(ctx, n, window) for n, ctx in chunks])


def _interior_lookup(row: Row, axis: tuple[float, float], x: float) -> Lookup | None:
    """`table.lookup(shape, (x,))` of a one-axis table whose every point was measured, read
    from its `row` of that shape, where `x` lies strictly inside the `axis` (its first and
    last values) and the row's coordinates: there both find the same cell of the same floats
    and interpolate it alike (a grid point's value is the lerp's, by a weight of 0), at a
    tenth of the cost. None elsewhere (the edges clamp and flag; `lookup` decides)."""
    if not axis[0] < x < axis[1]:
        return None
    xs = row.xs
    c = math.log(x) if row.log_space else x
    return row.at(x) if xs[0] < c < xs[-1] else None


def _ratio(query_s: float, anchor_s: float) -> float:
    return query_s / anchor_s if anchor_s > 0 else 1.0
