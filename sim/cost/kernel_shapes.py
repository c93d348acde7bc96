"""Where a model's kernels are looked up in the measured tables: which table, which measured
shape (the model's own, an equivalent one, or the nearest), and what the table measured, so an
extrapolation can be scaled by the roofline from there.

An attention shape the tables lack maps to an equivalent measured one where one exists: h heads
over g KV heads at batch B do the work of h' heads over g' KV heads at batch B g / g' when
h / g = h' / g' (the kernels split work over sequences x KV heads, each KV head serving its
group of query heads), so Llama-2-7B's 32 over 32 is 8 over 8 at four times the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.cost import kernel_roofline as roofline
from sim.cost.kernel_tables import KernelTable, KernelTables
from sim.cost.roofline import attended_pairs
from sim.cost.specs import HardwareSpec, MLASpec, ModelSpec, dtype_bytes

TABLE_DTYPES = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8", "mxfp4": "mxfp4"}
"""servesim dtype -> the tables measured at it (fp16 kernels run as fast as bf16 ones; mxfp4
has a MoE table only: gpt-oss's experts)."""
DEEPSEEK_V3_MLA = MLASpec(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                          v_head_dim=128, q_lora_rank=1536)
DEEPSEEK_V3_HIDDEN = 7168
"""The MLA module tables measure DeepSeek-V3's attention module (huggingface.co/deepseek-ai/
DeepSeek-V3/blob/main/config.json: hidden 7168, q_lora_rank 1536, kv_lora_rank 512,
qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128) at several heads per GPU."""


@dataclass(frozen=True, slots=True)
class AttentionTable:
    """Where one phase of a layer kind's attention is looked up: the table and shape row, the
    batch multiplier of an equivalent shape, the window the table's kernel applies (None: full
    attention), whether shape and dtypes are the model's own, and what the table measured (for
    the roofline ratio of an extrapolation, and a run's notes: `table_kv`, as `TABLE_DTYPES`
    names it)."""

    table: KernelTable
    shape_index: int
    batch_factor: float
    table_window: int | None
    exact: bool
    table_shape: tuple[int, int, int]
    table_kv: str
    table_kv_bytes: float
    table_weight_bytes: float
    mla: bool

    def anchor_s(self, hardware: HardwareSpec, phase: str, batch: float, length: float) -> float:
        """Roofline time of the table's own kernel at a point of its grid."""
        if self.mla:
            return roofline.mla_module_s(hardware, phase, batch, length, self.table_shape[0],
                                         DEEPSEEK_V3_HIDDEN, DEEPSEEK_V3_MLA,
                                         self.table_weight_bytes, self.table_kv_bytes)
        if phase == "context" and self.table_window is not None:
            length = equivalent_prompt(attended_pairs(0, round(length), self.table_window), None)
        return roofline.attention_s(hardware, phase, batch, length, self.table_shape,
                                    self.table_kv_bytes)


@dataclass(frozen=True, slots=True)
class LayerKind:
    """Layers that attend alike (global, sliding-window local, or MLA), and where their
    prefill and decode attention are looked up (None: no table on this hardware)."""

    name: str
    layers: int
    window: int | None
    context: AttentionTable | None
    generation: AttentionTable | None
    decode_name: str = ""
    prefill_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "decode_name", f"decode attention {self.name}")
        object.__setattr__(self, "prefill_name", f"prefill attention {self.name}")

    @property
    def decode_capped(self) -> bool:
        """Decodes read the window-capped KV: a full-attention table stands in for the
        windowed kernel."""
        return self.window is not None and (self.generation is None
                                            or self.generation.table_window is None)


def layer_kinds(tables: KernelTables, model: ModelSpec, tp: int, weight_dtype: str,
                kv_dtype: str) -> tuple[LayerKind, ...]:
    """The model's attention layer kinds on `tp` ranks, each with its tables."""
    heads, kv_heads = model.num_heads // tp, max(1, model.num_kv_heads // tp)
    if model.mla is not None:
        return (LayerKind("mla", model.num_attention_layers, None,
                          _mla_table(tables, model, heads, "context", weight_dtype, kv_dtype),
                          _mla_table(tables, model, heads, "generation", weight_dtype, kv_dtype)),)
    shape = (heads, kv_heads, model.attn_head_dim)
    return tuple(LayerKind(kind, model.count_layers(kind), window,
                           _attention_table(tables, "context", shape, window, kv_dtype),
                           _attention_table(tables, "generation", shape, window, kv_dtype))
                 for kind, window in (("global", None), ("local", model.sliding_window))
                 if model.count_layers(kind))


def dtype_table(tables: KernelTables, family: str, dtype: str) -> tuple[KernelTable, bool]:
    """The `family/<dtype>` table measured at `dtype`, else the bf16 one (not native)."""
    native = TABLE_DTYPES.get(dtype)
    if native is not None:
        table = tables.get(f"{family}/{native}")
        if table is not None:
            return table, True
    table = tables.get(f"{family}/bf16")
    if table is None:
        raise ValueError(f"the {tables.engine} kernel tables of {tables.hardware} have no "
                         f"{family} table")
    return table, False


def _attention_table(tables: KernelTables, phase: str, shape: tuple[int, int, int],
                     window: int | None, kv_dtype: str) -> AttentionTable:
    """The KV dtype's own table first, the window's own table before the full-attention one,
    the shape itself or an equivalent; else the nearest measured shape (not exact)."""
    native = TABLE_DTYPES.get(kv_dtype)
    for kv in ([native] if native else []) + ["bf16"]:
        for table_window in ([window] if window else []) + [None]:
            table = tables.get(f"{phase}_attention/{kv}/window{table_window or 0}")
            found = _equivalent_shape(table, *shape) if table is not None else None
            if found is not None:
                return _attention_at(table, *found, table_window, kv == native)
    table = tables.get(f"{phase}_attention/bf16/window0")
    if table is None:
        raise ValueError(f"the {tables.engine} kernel tables of {tables.hardware} have no "
                         f"{phase} attention table")
    return _attention_at(table, table.nearest_shape(shape), 1.0, None, False)


def _attention_at(table: KernelTable, index: int, factor: float, window: int | None,
                  exact: bool) -> AttentionTable:
    kv = "fp8" if table.meta["filters"]["kv_cache_dtype"] == "fp8" else "bf16"
    shape = tuple(int(v) for v in table.shapes[index])
    return AttentionTable(table, index, factor, window, exact, shape, kv, dtype_bytes(kv), 2.0,
                          False)


def _mla_table(tables: KernelTables, model: ModelSpec, heads: int, phase: str,
               weight_dtype: str, kv_dtype: str) -> AttentionTable | None:
    """The MLA module table at `heads` heads per GPU (None: no MLA tables here). Exact only
    for DeepSeek-V3's MLA and hidden size at the model's dtypes."""
    native_kv, native_gemm = TABLE_DTYPES.get(kv_dtype), TABLE_DTYPES.get(weight_dtype)
    for kv in ([native_kv] if native_kv else []) + ["bf16"]:
        for gemm in ([native_gemm] if native_gemm else []) + ["bf16"]:
            table = tables.get(f"mla_{phase}/{kv}/{gemm}")
            if table is None:
                continue
            index = table.shape_index((heads,))
            exact = (index is not None and kv == native_kv and gemm == native_gemm
                     and model.mla == DEEPSEEK_V3_MLA and model.hidden_size == DEEPSEEK_V3_HIDDEN)
            if index is None:
                index = table.nearest_shape((heads,))
            return AttentionTable(table, index, 1.0, None, exact,
                                  (int(table.shapes[index][0]), 1, 0), kv, dtype_bytes(kv),
                                  dtype_bytes(gemm), True)
    return None


def _equivalent_shape(table: KernelTable, heads: int, kv_heads: int,
                      head_dim: int) -> tuple[int, float] | None:
    """(shape index, batch factor) of an attention shape in `table`: the shape itself, else
    one with fewer KV heads and the same group size (module docstring)."""
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


def equivalent_prompt(pairs_per_row: float, window: int | None) -> float:
    """The prompt length whose causal prefill attends `pairs_per_row` (query, key) pairs
    (each query seeing at most `window` keys when a window is given)."""
    if window is not None and pairs_per_row > window * (window + 1) / 2:
        return window + (pairs_per_row - window * (window + 1) / 2) / window
    return (math.sqrt(1.0 + 8.0 * pairs_per_row) - 1.0) / 2.0
