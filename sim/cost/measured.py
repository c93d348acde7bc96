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
included). A model shape the attention tables lack is mapped to an equivalent measured one
where one exists (heads h over KV heads g at batch B does the work of h'/g' = h/g at batch
B g / g': the kernels parallelize over sequences x KV heads), else to the nearest measured
shape, scaled by the roofline and flagged. Every lookup outside the measured range, or of a
shape or dtype the tables lack, is the nearest measured point times the roofline's ratio
between the query and that point, and counts as extrapolated (`lookup_counts`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
import numpy as np

from policies.types import Plan, StepResult
from sim.cost.coefficients import default_coefficients
from sim.cost.kernel_tables import KernelTable, KernelTables, Lookup, Row, shipped_tables
from sim.cost.roofline import CostModel, attended_pairs, plan_shape
from sim.cost.specs import (HardwareSpec, MLASpec, ModelSpec, dtype_bytes,
                            expected_distinct_experts)

ACTIVATION_BYTES = 2.0  # bf16 activations
UNTABLED_KERNELS_PER_LAYER = 5
"""Small kernels of a decoder layer with no table: two fused residual-add + RMSNorm, rotary
embedding, the KV-cache write, SiLU-and-mul (vLLM's Llama-style layer)."""
DEEPSEEK_V3_MLA = MLASpec(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                          v_head_dim=128, q_lora_rank=1536)
DEEPSEEK_V3_HIDDEN = 7168
"""The MLA module tables measure DeepSeek-V3's attention module (huggingface.co/deepseek-ai/
DeepSeek-V3/blob/main/config.json: hidden 7168, q_lora_rank 1536, kv_lora_rank 512,
qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128) at several heads per GPU."""
BATCH_TERMS_CACHE = 4096
TABLE_DTYPES = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8"}
"""servesim dtype -> the tables measured at it (fp16 kernels run as fast as bf16 ones)."""


@dataclass(frozen=True, slots=True)
class MeasuredCoefficients:
    """The measured model's named coefficients (see data/measured_coefficients.json)."""

    step_overhead_s: float
    per_sequence_overhead_s: float
    untabled_bandwidth_eff: float
    untabled_kernel_latency_s: float
    cuda_graph_max_tokens: int
    custom_allreduce_max_bytes: float
    provenance: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "provenance":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"measured coefficient {f.name}={value!r} must be a number >= 0")
        if not 0.0 < self.untabled_bandwidth_eff <= 1.0:
            raise ValueError(f"untabled_bandwidth_eff={self.untabled_bandwidth_eff} must lie in (0, 1]")

    @classmethod
    def from_json(cls, data: dict) -> MeasuredCoefficients:
        known = {f.name for f in fields(cls)}
        unknown, missing = set(data) - known, known - set(data) - {"provenance"}
        if unknown or missing:
            raise ValueError(f"measured coefficients: unknown keys {sorted(unknown)}, missing "
                             f"{sorted(missing)}")
        return cls(**data)


def measured_coefficients(engine: str = "vllm", path: str | Path | None = None) -> MeasuredCoefficients:
    """The engine's coefficients from `path` (default: the shipped file)."""
    try:
        text = (Path(path).read_text() if path is not None else resources.files("sim.cost")
                .joinpath("data/measured_coefficients.json").read_text())
        table = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read measured coefficients {path}: {exc}") from None
    if engine not in table:
        raise ValueError(f"no measured coefficients for engine {engine!r} (have {sorted(table)})")
    return MeasuredCoefficients.from_json(table[engine])


@dataclass(frozen=True, slots=True)
class KernelTime:
    """One kernel family of an iteration: its time over every layer that runs it."""

    name: str
    time_s: float
    extrapolated: bool


@dataclass(frozen=True, slots=True)
class BatchTerms:
    """The parts of an iteration's price that depend on its batch shape only (rows, tokens,
    sampled positions), not on the context it attends to."""

    kernels: tuple[KernelTime, ...]
    kernels_s: float
    untabled_s: float
    overhead_s: float
    num_in_range: int
    num_extrapolated: int


def _step_time(batch: BatchTerms, attention: tuple[KernelTime, ...]) -> float:
    """An iteration's time: the one sum every pricing path goes through (plain left to right,
    so a decode run priced step by step and one priced in a batch get the same bits)."""
    total = batch.kernels_s
    for kernel in attention:
        total += kernel.time_s
    return total + batch.untabled_s + batch.overhead_s


@dataclass(frozen=True, slots=True)
class MeasuredIterationCost:
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


@dataclass(frozen=True, slots=True)
class _Attention:
    """Where one layer kind's attention is looked up: a table, the shape row in it, the batch
    multiplier of an equivalent shape, the window the table applies (None: full attention,
    lengths capped by the caller), and whether the shape and dtype are the model's own."""

    table: KernelTable
    shape_index: int
    batch_factor: float
    table_window: int | None
    exact: bool
    table_shape: tuple[int, int, int]
    table_kv_bytes: float


class MeasuredCostModel:
    """Measured-kernel executor for one replica: `model` on `tp` devices of `hardware`."""

    def __init__(self, model: ModelSpec, hardware: HardwareSpec,
                 coefficients: MeasuredCoefficients, *, tp: int = 1, pp: int = 1,
                 weight_dtype: str = "bf16", kv_dtype: str = "bf16",
                 tables: KernelTables | None = None) -> None:
        if pp != 1:
            raise ValueError("--cost-model measured prices one pipeline stage only: use --pp 1 "
                             "(or --cost-model roofline)")
        # The roofline model checks the configuration and owns the byte counts both share
        # (KV bytes per token, swaps, copies); the measured model prices the compute.
        self._roofline = CostModel(model, hardware, default_coefficients(hardware.name), tp=tp,
                                   weight_dtype=weight_dtype, kv_dtype=kv_dtype)
        self.model = model
        self.hardware = hardware
        self.coefficients = coefficients
        self.tp = tp
        self.pp = pp
        self.weight_dtype = weight_dtype
        self.kv_dtype = kv_dtype
        self.tables = tables if tables is not None else shipped_tables(hardware.name)
        self.lookups_in_range = 0
        self.lookups_extrapolated = 0
        self._batch_terms: dict[tuple[int, int, int], BatchTerms] = {}
        self._decode_rows: dict[tuple[str, int], Row] = {}
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

    # ---- per-rank constants -------------------------------------------------------------
    def _precompute(self) -> None:
        m, tp = self.model, self.tp
        self._weight_bytes = dtype_bytes(self.weight_dtype)
        self._kv_bytes = dtype_bytes(self.kv_dtype)
        self._heads = m.num_heads // tp
        self._kv_heads = max(1, m.num_kv_heads // tp)
        d = m.attn_head_dim
        # (name, n, k, layers) of the GEMMs every computed token goes through, per rank.
        gemms: list[tuple[str, int, int, int]] = []
        attention_layers = m.num_attention_layers
        if m.mla is None:
            gemms.append(("qkv", (self._heads + 2 * self._kv_heads) * d, m.hidden_size,
                          attention_layers))
            gemms.append(("o", m.hidden_size, self._heads * d, attention_layers))
        if m.ssm is not None:
            s, ssm_layers = m.ssm, m.count_layers("ssm")
            gemms += [("ssm in", 2 * s.d_inner // tp, m.hidden_size, ssm_layers),
                      ("ssm x", s.dt_rank + 2 * s.d_state, s.d_inner // tp, ssm_layers),
                      ("ssm dt", s.d_inner // tp, s.dt_rank, ssm_layers),
                      ("ssm out", m.hidden_size, s.d_inner // tp, ssm_layers)]
        up = 2 if m.gated_mlp else 1
        if m.num_dense_mlp_layers:
            gemms += [("gate_up", up * m.intermediate_size // tp, m.hidden_size, m.num_dense_mlp_layers),
                      ("down", m.hidden_size, m.intermediate_size // tp, m.num_dense_mlp_layers)]
        if m.moe is not None:
            gemms.append(("router", m.moe.num_experts, m.hidden_size, m.num_moe_layers))
            if m.moe.num_shared_experts:
                shared = m.moe.num_shared_experts * m.moe.expert_intermediate_size // tp
                gemms += [("shared gate_up", up * shared, m.hidden_size, m.num_moe_layers),
                          ("shared down", m.hidden_size, shared, m.num_moe_layers)]
        self._gemms = [g for g in gemms if g[3] > 0]
        self._gemm_table, self._gemm_native = self._table_for("gemm", self.weight_dtype)
        self._gemm_table_bytes = 1.0 if self._gemm_native and self._weight_bytes == 1.0 else 2.0

        self._attention: dict[tuple[str, str], _Attention | None] = {}
        if m.mla is None:
            for phase in ("context", "generation"):
                self._attention[(phase, "global")] = self._resolve_attention(phase, None)
                if m.sliding_window:
                    self._attention[(phase, "local")] = self._resolve_attention(phase, m.sliding_window)
        else:
            for phase in ("context", "generation"):
                self._attention[(phase, "mla")] = self._resolve_mla(phase)

        inter = m.intermediate_size if m.moe is None else m.moe.expert_intermediate_size
        # Bytes the untabled kernels of one layer move per token (read + write, per rank).
        norms = 2 * 4 * m.hidden_size * ACTIVATION_BYTES
        rotary = 2 * (self._heads + self._kv_heads) * d * ACTIVATION_BYTES if m.mla is None else 0.0
        kv_write = 2 * self._kv_heads * d * (ACTIVATION_BYTES + self._kv_bytes) if m.mla is None else 0.0
        activation = (up + 1) * inter / tp * ACTIVATION_BYTES if m.gated_mlp else 0.0
        self._untabled_bytes_per_token = m.num_layers * (norms + rotary + kv_write + activation)
        self._untabled_kernels = m.num_layers * UNTABLED_KERNELS_PER_LAYER
        self._ssm_state_bytes_rank = m.ssm_state_bytes(self.kv_dtype) / tp
        self._ssm_flops_per_token = (9.0 * m.count_layers("ssm") * m.ssm.d_inner * m.ssm.d_state / tp
                                     if m.ssm else 0.0)
        self._num_allreduces = 2 * m.num_layers if tp > 1 else 0

    def _table_for(self, family: str, dtype: str) -> tuple[KernelTable, bool]:
        """The `family/<dtype>` table measured at `dtype`, else the bf16 one (not native)."""
        native = TABLE_DTYPES.get(dtype)
        if native is not None:
            table = self.tables.get(f"{family}/{native}")
            if table is not None:
                return table, True
        table = self.tables.get(f"{family}/bf16")
        if table is None:
            raise ValueError(f"the {self.tables.engine} kernel tables of {self.hardware.name} "
                             f"have no {family} table")
        return table, False

    def _resolve_attention(self, phase: str, window: int | None) -> _Attention:
        h, g, d = self._heads, self._kv_heads, self.model.attn_head_dim
        native = TABLE_DTYPES.get(self.kv_dtype)
        for kv in ([native] if native else []) + ["bf16"]:
            names = ([f"{phase}_attention/{kv}/window{window}"] if window else []) + \
                    [f"{phase}_attention/{kv}/window0"]
            for name in names:
                table = self.tables.get(name)
                if table is None:
                    continue
                found = _equivalent_shape(table, h, g, d)
                if found is not None:
                    index, factor = found
                    shape = tuple(int(v) for v in table.shapes[index])
                    return _Attention(table, index, factor, window if name.endswith(f"window{window}")
                                      and window else None, kv == native,
                                      shape, dtype_bytes(kv))
        table = self.tables.get(f"{phase}_attention/{native or 'bf16'}/window0") or \
            self.tables.get(f"{phase}_attention/bf16/window0")
        if table is None:
            raise ValueError(f"the {self.tables.engine} kernel tables of {self.hardware.name} "
                             f"have no {phase} attention table")
        index = _nearest_shape(table, (h, g, d))
        kv = table.meta["filters"]["kv_cache_dtype"]
        return _Attention(table, index, 1.0, None, False,
                          tuple(int(v) for v in table.shapes[index]),
                          dtype_bytes("fp8" if kv == "fp8" else "bf16"))

    def _resolve_mla(self, phase: str) -> _Attention | None:
        """The MLA module table for this model's heads per GPU (None: no MLA tables here)."""
        native_kv = TABLE_DTYPES.get(self.kv_dtype)
        native_gemm = TABLE_DTYPES.get(self.weight_dtype)
        for kv in ([native_kv] if native_kv else []) + ["bf16"]:
            for gemm in ([native_gemm] if native_gemm else []) + ["bf16"]:
                table = self.tables.get(f"mla_{phase}/{kv}/{gemm}")
                if table is None:
                    continue
                index = table.shape_index((self._heads,))
                exact = (index is not None and kv == native_kv and gemm == native_gemm
                         and self.model.mla == DEEPSEEK_V3_MLA
                         and self.model.hidden_size == DEEPSEEK_V3_HIDDEN)
                if index is None:
                    index = _nearest_shape(table, (self._heads,))
                return _Attention(table, index, 1.0, None, exact,
                                  (int(table.shapes[index][0]), 1, 0), dtype_bytes(kv))
        return None

    # ---- iteration cost -----------------------------------------------------------------
    def breakdown(self, new_tokens: list[int], context_tokens: list[int],
                  num_sampling: int | None = None) -> MeasuredIterationCost:
        """Cost of one iteration computing `new_tokens[i]` on top of `context_tokens[i]`;
        `num_sampling` positions compute logits (default: one per row)."""
        num_seqs = len(new_tokens)
        sampling = num_seqs if num_sampling is None else num_sampling
        batch = self._batch_terms_of(num_seqs, sum(new_tokens), sampling)
        num_decodes = kv_global = kv_local = 0
        prefills: list[tuple[int, int]] = []
        window = self.model.sliding_window or 0
        for n, ctx in zip(new_tokens, context_tokens):
            if n == 1 and ctx > 0:
                num_decodes += 1
                kv_global += ctx
                kv_local += min(ctx, window)
            elif n > 0:
                prefills.append((n, ctx))
        attention = self._decode_attention(num_decodes, kv_global, kv_local)
        if prefills:
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
        key = (num_seqs, total_new, num_sampling)
        terms = self._batch_terms.get(key)
        if terms is None:
            if len(self._batch_terms) >= BATCH_TERMS_CACHE:
                self._batch_terms.clear()
            terms = self._batch_terms[key] = self._terms_of_batch(*key)
        return terms

    def _terms_of_batch(self, num_seqs: int, total_new: int, num_sampling: int) -> BatchTerms:
        kernels: list[KernelTime] = []
        if total_new:
            kernels += [self._gemm(name, total_new, n, k, layers)
                        for name, n, k, layers in self._gemms]
            if self.model.moe is not None:
                kernels.append(self._moe(total_new))
            if self._num_allreduces:
                kernels.append(self._allreduce(total_new))
        if num_sampling:
            kernels.append(self._gemm("lm_head", num_sampling, self.model.vocab_size // self.tp,
                                      self.model.hidden_size, 1))
        kernels_s = 0.0
        for kernel in kernels:
            kernels_s += kernel.time_s
        c = self.coefficients
        bandwidth = self.hardware.mem_bandwidth_bytes_s * c.untabled_bandwidth_eff
        untabled_s = 0.0
        if total_new:
            untabled_s = (self._untabled_kernels * c.untabled_kernel_latency_s
                          + self._untabled_bytes_per_token * total_new / bandwidth)
            if self.model.ssm is not None:
                untabled_s += self.model.count_layers("ssm") * c.untabled_kernel_latency_s + max(
                    self._ssm_flops_per_token * total_new / self.hardware.compute_peak("bf16"),
                    2.0 * self._ssm_state_bytes_rank * num_seqs / bandwidth)
        overhead_s = c.step_overhead_s + c.per_sequence_overhead_s * num_seqs
        extrapolated = sum(1 for k in kernels if k.extrapolated)
        return BatchTerms(tuple(kernels), kernels_s, untabled_s, overhead_s,
                          len(kernels) - extrapolated, extrapolated)

    # ---- kernels ------------------------------------------------------------------------
    def _gemm(self, name: str, m: int, n: int, k: int, layers: int) -> KernelTime:
        table = self._gemm_table
        found = table.lookup(0, (m, n, k))
        time_s = found.value_s
        exact = found.in_range and self._gemm_native
        if not exact:
            time_s *= self._ratio(_gemm_roofline(self.hardware, m, n, k, self._weight_bytes),
                                  _gemm_roofline(self.hardware, *found.anchor, self._gemm_table_bytes))
        return KernelTime(f"gemm {name}", layers * time_s, not exact)

    def _moe(self, tokens: int) -> KernelTime:
        m, moe = self.model, self.model.moe
        assert moe is not None
        table, native = self._table_for("moe", self.weight_dtype)
        shape = (m.hidden_size, moe.expert_intermediate_size, moe.experts_per_token,
                 moe.num_experts, self.tp)
        index = table.shape_index(shape)
        exact = native and index is not None
        if index is None:
            index = _nearest_shape(table, shape)
        found = table.lookup(index, (tokens,))
        time_s = found.value_s
        if not (exact and found.in_range):
            anchor = tuple(int(v) for v in table.shapes[index])
            time_s *= self._ratio(
                _moe_roofline(self.hardware, tokens, *shape, self._weight_bytes, m.gated_mlp),
                _moe_roofline(self.hardware, found.anchor[0], *anchor,
                              self._weight_bytes if native else 2.0, m.gated_mlp))
        return KernelTime("moe", m.num_moe_layers * time_s, not (exact and found.in_range))

    def _allreduce(self, tokens: int) -> KernelTime:
        c = self.coefficients
        elements = tokens * self.model.hidden_size
        message_bytes = elements * ACTIVATION_BYTES
        if message_bytes > c.custom_allreduce_max_bytes:
            name = "nccl"
        else:
            name = "custom_graph" if tokens <= c.cuda_graph_max_tokens else "custom_eager"
        table = self.tables.get(f"allreduce/{name}")
        if table is None:
            raise ValueError(f"the {self.tables.engine} kernel tables of {self.hardware.name} "
                             f"have no {name} all-reduce table")
        index = table.shape_index((self.tp,))
        exact = index is not None
        if index is None:
            index = _nearest_shape(table, (self.tp,))
        found = table.lookup(index, (elements,))
        time_s = found.value_s
        if not (exact and found.in_range):
            gpus = int(table.shapes[index][0])
            time_s *= self._ratio(_allreduce_roofline(self.hardware, self.tp, message_bytes),
                                  _allreduce_roofline(self.hardware, gpus,
                                                      found.anchor[0] * ACTIVATION_BYTES))
        return KernelTime(f"all-reduce {name}", self._num_allreduces * time_s,
                          not (exact and found.in_range))

    def _decode_attention(self, num_decodes: int, kv_global: int,
                          kv_local: int) -> tuple[KernelTime, ...]:
        """Decode attention of `num_decodes` rows reading `kv_global` cached tokens in all
        (`kv_local` within the sliding window), per layer kind; empty with no decodes."""
        if not num_decodes:
            return ()
        m = self.model
        if m.mla is not None:
            return (self._mla_time("generation", num_decodes, kv_global / num_decodes,
                                   m.num_attention_layers),)
        kernels = [self._generation("global", num_decodes, kv_global, m.count_layers("global"))]
        if m.sliding_window and m.count_layers("local"):
            where = self._attention[("generation", "local")]
            kv = kv_global if where is not None and where.table_window else kv_local
            kernels.append(self._generation("local", num_decodes, kv, m.count_layers("local")))
        return tuple(k for k in kernels if k is not None)

    def _generation(self, kind: str, num_decodes: int, kv_tokens: int,
                    layers: int) -> KernelTime | None:
        if not layers:
            return None
        where = self._attention[("generation", kind)]
        assert where is not None
        row = self._decode_rows.get((kind, num_decodes))
        if row is None:
            row = self._decode_rows[(kind, num_decodes)] = where.table.row(
                where.shape_index, num_decodes * where.batch_factor)
        length = kv_tokens / num_decodes
        found = row.at(length)
        time_s = found.value_s
        exact = where.exact and found.in_range
        if not exact:
            time_s *= self._ratio(self._decode_roofline(num_decodes, length), _attention_roofline(
                self.hardware, "generation", found.anchor[0], found.anchor[1], where.table_shape,
                where.table_kv_bytes))
        return KernelTime(f"decode attention {kind}", layers * time_s, not exact)

    def _decode_roofline(self, batch: float, length: float) -> float:
        return _attention_roofline(self.hardware, "generation", batch, length,
                                   (self._heads, self._kv_heads, self.model.attn_head_dim),
                                   self._kv_bytes)

    def _prefill_attention(self, chunks: list[tuple[int, int]]) -> tuple[KernelTime, ...]:
        """Context attention of prefill chunks and verifies `(new, cached)`, one call per layer."""
        m = self.model
        count = len(chunks)
        if m.mla is not None:
            pairs = sum(attended_pairs(ctx, n, None) for n, ctx in chunks)
            return (self._mla_time("context", count, _equivalent_prompt(pairs / count, None),
                                   m.num_attention_layers),)
        kernels = []
        for kind, window in (("global", None), ("local", m.sliding_window)):
            layers = m.count_layers(kind)
            if not layers:
                continue
            where = self._attention[("context", kind)]
            assert where is not None
            pairs = sum(attended_pairs(ctx, n, window) for n, ctx in chunks)
            prompt = _equivalent_prompt(pairs / count, where.table_window)
            found = where.table.lookup(where.shape_index, (count * where.batch_factor, prompt))
            time_s = found.value_s
            exact = where.exact and found.in_range
            if not exact:
                query = _attention_roofline(self.hardware, "context", count,
                                            _equivalent_prompt(pairs / count, None),
                                            (self._heads, self._kv_heads, m.attn_head_dim),
                                            self._kv_bytes)
                anchor_prompt = (found.anchor[1] if where.table_window is None else
                                 _equivalent_prompt(_window_pairs(found.anchor[1], where.table_window), None))
                time_s *= self._ratio(query, _attention_roofline(
                    self.hardware, "context", found.anchor[0], anchor_prompt, where.table_shape,
                    where.table_kv_bytes))
            kernels.append(KernelTime(f"prefill attention {kind}", layers * time_s, not exact))
        return tuple(kernels)

    def _mla_time(self, phase: str, batch: int, length: float, layers: int) -> KernelTime:
        """A whole MLA module (projections and attention) per layer, from the module tables;
        a model whose MLA or hidden size is not DeepSeek-V3's scales them by the roofline."""
        where = self._attention[(phase, "mla")]
        m, mla = self.model, self.model.mla
        assert mla is not None
        query = _mla_roofline(self.hardware, phase, batch, length, self._heads, m.hidden_size,
                              mla, self._weight_bytes, self._kv_bytes)
        if where is None:  # no MLA tables for this hardware: the roofline alone
            eff = default_coefficients(self.hardware.name)
            return KernelTime(f"mla {phase}", layers * query / min(eff.attention_memory_eff,
                                                                    eff.linear_memory_eff), True)
        if phase == "generation":
            row = self._decode_rows.get(("mla", batch))
            if row is None:
                row = self._decode_rows[("mla", batch)] = where.table.row(where.shape_index, batch)
            found = row.at(length)
        else:
            found = where.table.lookup(where.shape_index, (batch, length))
        time_s = found.value_s
        exact = where.exact and found.in_range
        if not exact:
            time_s *= self._ratio(query, _mla_roofline(
                self.hardware, phase, found.anchor[0], found.anchor[1], where.table_shape[0],
                DEEPSEEK_V3_HIDDEN, DEEPSEEK_V3_MLA,
                1.0 if where.table.meta["filters"]["gemm_type"] == "fp8_block" else 2.0,
                where.table_kv_bytes))
        return KernelTime(f"mla {phase}", layers * time_s, not exact)

    @staticmethod
    def _ratio(query_s: float, anchor_s: float) -> float:
        return query_s / anchor_s if anchor_s > 0 else 1.0

    # ---- Executor protocol --------------------------------------------------------------
    def plan_cost(self, plan: Plan) -> MeasuredIterationCost:
        return self.breakdown(*plan_shape(plan))

    def execute(self, plan: Plan) -> StepResult:
        cost = self.plan_cost(plan)
        self._count(cost.batch, cost.attention)
        swap_s = self.swap_time(plan.swap_out_slots + plan.swap_in_slots)
        copy_s = self.copy_time(sum(tokens for _, _, tokens in plan.block_copies))
        return StepResult(cost.time_s + swap_s + copy_s)

    def lockstep_decode_times(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0) -> list[float]:
        """What `execute` would return for each of `num_steps` decode-only iterations of one
        batch, sequence i on `context_tokens[i] + j` cached tokens at step j (from
        `first_step`): the same `_step_time` of the same terms, step by step."""
        num_seqs = len(context_tokens)
        batch = self._batch_terms_of(num_seqs, num_seqs, num_seqs)
        return [_step_time(batch, self._decode_attention(num_seqs, kv_global, kv_local))
                for kv_global, kv_local in self._lockstep_kv(context_tokens, num_steps, first_step)]

    def ran_lockstep_decodes(self, context_tokens: list[int], num_steps: int) -> None:
        """The engine ran the first `num_steps` of those iterations: count their lookups."""
        num_seqs = len(context_tokens)
        batch = self._batch_terms_of(num_seqs, num_seqs, num_seqs)
        for kv_global, kv_local in self._lockstep_kv(context_tokens, num_steps, 0):
            self._count(batch, self._decode_attention(num_seqs, kv_global, kv_local))

    def _lockstep_kv(self, context_tokens: list[int], num_steps: int,
                     first_step: int) -> list[tuple[int, int]]:
        """(cached tokens read, those within the sliding window) at each of the steps."""
        num_seqs, total = len(context_tokens), sum(context_tokens)
        steps = range(first_step, first_step + num_steps)
        window = self.model.sliding_window
        if not window:
            return [(total + num_seqs * j, 0) for j in steps]
        contexts = np.asarray(context_tokens, dtype=np.int64)[None, :] + np.asarray(steps)[:, None]
        capped = np.minimum(contexts, window).sum(axis=1).tolist()
        return [(total + num_seqs * j, local) for j, local in zip(steps, capped)]

    def _count(self, batch: BatchTerms, attention: tuple[KernelTime, ...]) -> None:
        attention_extrapolated = sum(1 for k in attention if k.extrapolated)
        self.lookups_in_range += batch.num_in_range + len(attention) - attention_extrapolated
        self.lookups_extrapolated += batch.num_extrapolated + attention_extrapolated

    def lookup_counts(self) -> tuple[int, int]:
        """(in range, extrapolated) kernel lookups of the iterations executed so far."""
        return self.lookups_in_range, self.lookups_extrapolated


# ---- helpers ------------------------------------------------------------------------------
def _equivalent_shape(table: KernelTable, heads: int, kv_heads: int,
                      head_dim: int) -> tuple[int, float] | None:
    """(shape index, batch factor) of the model's attention shape in `table`: the shape
    itself, else heads h' over fewer KV heads g' with h'/g' = h/g at g/g' times the batch
    (the same work: the kernels parallelize over sequences x KV heads)."""
    index = table.shape_index((heads, kv_heads, head_dim))
    if index is not None:
        return index, 1.0
    if heads % kv_heads:
        return None
    group = heads // kv_heads
    measured_kv = sorted({int(s[1]) for s in table.shapes if int(s[2]) == head_dim}, reverse=True)
    for kv in measured_kv:
        if kv < kv_heads and kv_heads % kv == 0:
            index = table.shape_index((group * kv, kv, head_dim))
            if index is not None:
                return index, kv_heads / kv
    return None


def _nearest_shape(table: KernelTable, shape: tuple[int, ...]) -> int:
    """The measured shape closest to `shape` in log distance over every shape column."""
    shapes = table.shapes.astype(np.float64)
    distance = (np.log(shapes) - np.log(np.asarray(shape, dtype=np.float64))) ** 2
    return int(np.argmin(distance.sum(axis=1)))


def _equivalent_prompt(pairs_per_row: float, window: int | None) -> float:
    """The prompt length whose causal prefill attends `pairs_per_row` (query, key) pairs
    (each query sees at most `window` keys when a window is given)."""
    if window is not None and pairs_per_row > window * (window + 1) / 2:
        return window + (pairs_per_row - window * (window + 1) / 2) / window
    return (math.sqrt(1.0 + 8.0 * pairs_per_row) - 1.0) / 2.0


def _window_pairs(prompt: float, window: int) -> float:
    """Pairs a fresh prompt of `prompt` tokens attends under a `window` (inverse of the above)."""
    return attended_pairs(0, int(round(prompt)), window)


def _roofline_s(hardware: HardwareSpec, flops: float, nbytes: float, dtype: str = "bf16") -> float:
    return max(flops / hardware.compute_peak(dtype), nbytes / hardware.mem_bandwidth_bytes_s)


def _gemm_roofline(hardware: HardwareSpec, m: float, n: float, k: float,
                   weight_bytes: float) -> float:
    dtype = "fp8" if weight_bytes == 1.0 else "bf16"
    return _roofline_s(hardware, 2.0 * m * n * k,
                       (m * k + m * n) * ACTIVATION_BYTES + n * k * weight_bytes, dtype)


def _moe_roofline(hardware: HardwareSpec, tokens: float, hidden: int, inter: int, topk: int,
                  experts: int, tp: int, weight_bytes: float, gated: bool) -> float:
    matrices = 3 if gated else 2
    expert_params = matrices * hidden * inter / tp
    touched = expected_distinct_experts(experts, topk, max(1, int(round(tokens))))
    return _roofline_s(hardware, 2.0 * tokens * topk * expert_params,
                       touched * expert_params * weight_bytes + 2 * tokens * hidden * ACTIVATION_BYTES)


def _allreduce_roofline(hardware: HardwareSpec, gpus: int, message_bytes: float) -> float:
    """Ring all-reduce: each GPU sends and receives 2 (n - 1) / n of the message."""
    return (2.0 * (gpus - 1) / gpus * message_bytes / hardware.interconnect_bandwidth_bytes_s
            + hardware.interconnect_latency_s)


def _attention_roofline(hardware: HardwareSpec, phase: str, batch: float, length: float,
                        shape: tuple[int, int, int], kv_bytes: float) -> float:
    """One attention call: decode reads `length` cached tokens per row; a prefill of
    `length` tokens per row attends causally and writes its KV."""
    heads, kv_heads, head_dim = shape
    if phase == "generation":
        flops = 4.0 * batch * heads * length * head_dim
        nbytes = batch * (length * 2 * kv_heads * head_dim * kv_bytes
                          + 2 * heads * head_dim * ACTIVATION_BYTES)
    else:
        flops = 4.0 * batch * heads * head_dim * length * (length + 1) / 2
        nbytes = batch * length * (2 * heads * head_dim * ACTIVATION_BYTES
                                   + 2 * kv_heads * head_dim * (ACTIVATION_BYTES + kv_bytes))
    return _roofline_s(hardware, flops, nbytes)


def _mla_roofline(hardware: HardwareSpec, phase: str, batch: float, length: float, heads: int,
                  hidden: int, mla: MLASpec, weight_bytes: float, kv_bytes: float) -> float:
    """One MLA module (projections, attention, output) at `heads` heads per GPU: decode of one
    token per row on `length` cached tokens (up-projections absorbed), or a prefill of
    `length` tokens per row."""
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    latent = mla.kv_lora_rank + mla.qk_rope_head_dim
    q_params = (hidden * heads * qk if mla.q_lora_rank is None
                else hidden * mla.q_lora_rank + mla.q_lora_rank * heads * qk)
    params = (q_params + hidden * latent + mla.kv_lora_rank * heads * (mla.qk_nope_head_dim
              + mla.v_head_dim) + heads * mla.v_head_dim * hidden)
    if phase == "generation":
        tokens = batch
        flops = 2.0 * tokens * params + 2.0 * batch * heads * length * (latent + mla.kv_lora_rank)
        nbytes = params * weight_bytes + batch * length * latent * kv_bytes
    else:
        tokens = batch * length
        pairs = batch * length * (length + 1) / 2
        flops = 2.0 * tokens * params + 2.0 * heads * pairs * (qk + mla.v_head_dim)
        nbytes = params * weight_bytes + tokens * (latent * kv_bytes + 2 * hidden * ACTIVATION_BYTES)
    return _roofline_s(hardware, flops, nbytes)

