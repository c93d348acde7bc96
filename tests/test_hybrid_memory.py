"""Memory of non-standard attention: sliding windows, cross-layer sharing, MLA, SSM hybrids."""

from __future__ import annotations

import dataclasses

import pytest

from policies.kv.layout import KVLayout
from policies.kv.hybrid_paged import HybridPagedAllocator
from policies.kv.paged import PagedParams
from sim.api import simulate
from sim.assembly import build_cost_model
from sim.config import ReplayOptions, resolve
from sim.cost.catalog import get_model
from sim.cost.memory import kv_budget, kv_layout
from sim.cost.specs import ModelSpec
from traces import Trace
from policies.types import Request
from tests.helpers import make_seq

LONG = 32768


def _long_context_trace(n: int) -> Trace:
    requests = [Request(i, 0.0, LONG - 200, 200) for i in range(n)]
    return Trace(name="32k", requests=requests, invalid_rows=[], notes=[])


def test_layouts_derived_from_the_specs():
    def layout(model):
        config = resolve(ReplayOptions(model=model, hardware="h200", tp=2), _long_context_trace(1))
        return kv_layout(build_cost_model(config), 16)[0]

    assert layout("llama-3-8b") == KVLayout()
    assert layout("mistral-7b") == KVLayout(0, 1, 4096, 0)
    assert layout("gemma-3-12b") == KVLayout(1, 5, 1024, 0)  # 8 global, 40 local layers
    jamba = layout("jamba-v0.1")
    assert (jamba.full_units, jamba.window_units) == (1, 0) and jamba.fixed_blocks > 0


def test_sliding_window_blocks_stop_growing_at_the_window():
    alloc = HybridPagedAllocator(PagedParams(block_size=16, num_blocks=10_000, watermark=0.0,
                                             layout=KVLayout(1, 5, 1024, 0)))
    seq = make_seq(0, 4096, 100)  # prefilled in chunks
    grown = []
    for tokens in (16, 1024, 2048, 4096):
        assert alloc.allocate_slots(seq, tokens)
        grown.append(alloc.num_held_blocks(0))
    # 1 global unit grows with the context; 5 local units stop at 1024/16 + 1 blocks each.
    assert grown == [6, 64 + 5 * 64, 128 + 5 * 65, 256 + 5 * 65]


def test_cross_layer_sharing_halves_kv_per_token():
    assert get_model("llama-3-8b-cla2").kv_bytes_per_token() == get_model("llama-3-8b").kv_bytes_per_token() / 2


def test_ssm_state_is_constant_per_request():
    jamba = get_model("jamba-v0.1")
    # 28 Mamba layers x 8192 channels x (16 state + 4 conv) x 2 bytes.
    assert jamba.ssm_state_bytes() == 28 * 8192 * 20 * 2
    assert jamba.kv_footprint_bytes(100_000) - jamba.kv_footprint_bytes(1000) == pytest.approx(
        99_000 * jamba.kv_bytes_per_token())


def _batch_at_32k(model: ModelSpec) -> tuple[int, float]:
    """(32K-token requests the KV pool holds at once, mean running batch when 160 arrive),
    on 2x H200."""
    trace = _long_context_trace(160)
    options = ReplayOptions(model="llama-3-8b", hardware="h200", tp=2, max_num_seqs=256,
                            max_model_len=LONG)
    config = dataclasses.replace(resolve(options, trace), model=model)
    cost = build_cost_model(config)
    budget = kv_budget(cost, block_size=16, gpu_memory_utilization=0.9,
                       max_num_batched_tokens=config.max_num_batched_tokens, max_num_seqs=256)
    layout, _ = kv_layout(cost, 16)
    fits = budget.num_blocks // layout.blocks_for(LONG, 16)
    return fits, simulate(config).summary["batch_size_mean"]


def test_hybrid_fits_a_far_larger_batch_at_32k_than_pure_attention(capsys):
    """Jamba (1 attention : 7 Mamba layers, 52B) against Mixtral-8x7B (all attention, 47B),
    and Gemma-3-12B (5 local : 1 global) against the same model with every layer global,
    each on 2x H200."""
    gemma = get_model("gemma-3-12b")
    all_global = dataclasses.replace(gemma, name="gemma-3-12b-all-global", layer_pattern=None,
                                     sliding_window=None)
    models = [get_model("jamba-v0.1"), get_model("mixtral-8x7b"), gemma, all_global]
    rows = {m.name: _batch_at_32k(m) for m in models}
    with capsys.disabled():
        print("\n  model                    32K requests in KV   mean batch (160 x 32K arrive)")
        for name, (fits, batch) in rows.items():
            print(f"  {name:<24} {fits:>18} {batch:>22.1f}")
    assert rows["jamba-v0.1"][0] > 4 * rows["mixtral-8x7b"][0]
    assert rows["gemma-3-12b"][0] > 3 * rows["gemma-3-12b-all-global"][0]
    assert rows["jamba-v0.1"][1] > 2.5 * rows["mixtral-8x7b"][1]
