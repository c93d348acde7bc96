"""The measured model's shortcuts for a chunked step priced with its decodes apart: the same
bits as the paths they stand in for (`price_rows` of the whole step's rows; the all-reduce
table's `lookup`)."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from sim.cost.catalog import get_hardware, get_model
from sim.cost.measured import MeasuredCostModel, _interior_lookup
from sim.cost.measured_coefficients import measured_coefficients

MODELS = {  # name: (tp, hardware): dense, MoE, MLA, an SSM hybrid
    "llama-2-70b": (2, "a100"), "llama-3-8b": (1, "h100"), "mixtral-8x7b": (2, "h100"),
    "deepseek-v2-lite": (1, "h100"), "jamba-v0.1": (2, "h100"),
}
_built: dict[str, MeasuredCostModel] = {}


def measured(name: str) -> MeasuredCostModel:
    """One model per name for the whole module (their caches only ever hold what they
    would compute again)."""
    if name not in _built:
        tp, hardware = MODELS[name]
        _built[name] = MeasuredCostModel(get_model(name), get_hardware(hardware),
                                         measured_coefficients(), tp=tp)
    return _built[name]


@settings(max_examples=150, deadline=None)
@given(decodes=st.lists(st.integers(1, 9000), min_size=1, max_size=64),
       chunks=st.lists(st.tuples(st.one_of(st.integers(0, 2), st.integers(0, 3000)),
                                 st.one_of(st.integers(0, 2), st.integers(0, 9000))), max_size=4),
       sampled=st.integers(0, 4), model=st.sampled_from(sorted(MODELS)))
def test_decodes_apart_price_as_the_whole_steps_rows(decodes, chunks, sampled, model):
    """`_price_decodes_apart` (from the decodes' count and summed context, the batch terms
    without their kernels) gives `price_rows` of the step's rows in order (the decodes, then
    the chunks: some one-token rows on a context among them, which price as decodes) to the
    bit, with its lookup counts; None only where a row computes nothing. (A sliding window
    is not its to price: `execute_decodes_apart` prices those rows as rows.)"""
    cost = measured(model)
    new, ctx = [n for n, _ in chunks], [c for _, c in chunks]
    sampled = min(sampled, len(chunks))
    priced = cost._price_decodes_apart(decodes, new, ctx, sampled)
    if priced is None:
        assert min(new) < 1
        return
    expected = cost.price_rows([1] * len(decodes) + new, decodes + ctx, len(decodes) + sampled)
    assert priced == expected
    assert priced.duration_s.hex() == expected.duration_s.hex()


@settings(max_examples=200, deadline=None)
@given(elements=st.one_of(st.integers(1, 2 ** 31), st.sampled_from([128, 256, 512, 1024])),
       model=st.sampled_from(["llama-2-70b", "mixtral-8x7b", "jamba-v0.1"]))
def test_allreduce_row_reads_as_the_tables_lookup(elements, model):
    """`_interior_lookup` of an all-reduce table's row gives the table's own `lookup` to the
    bit wherever it answers (strictly inside the axis, grid points included), and answers
    everywhere strictly inside."""
    cost = measured(model)
    for name in ("custom_graph", "custom_eager", "nccl"):
        table, index, _, row, axis = (cost._allreduce_tables.get(name)
                                      or cost._allreduce_table(name))
        assert row is not None
        found = _interior_lookup(row, axis, float(elements))
        if axis[0] < elements < axis[1]:
            assert found == table.lookup(index, (elements,))
            assert found.value_s.hex() == table.lookup(index, (elements,)).value_s.hex()
        else:
            assert found is None
