"""Chained block hashes built incrementally, in any steps, equal the chain of `_block_key`s
(the per-block definition), for every kind of trace: token ids, trace block hashes, and
lengths only (whose keys are all private and are built without a call per block)."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from policies.kv.block_hashes import _ROOT, _block_key, block_hashes, extend_block_hashes
from policies.types import Request


def reference(request: Request, block_size: int, num_tokens: int, sample_index: int) -> list[int]:
    hashes, parent = [], _ROOT
    for index in range(num_tokens // block_size):
        parent = hash((parent, _block_key(request, block_size, index, sample_index)))
        hashes.append(parent)
    return hashes


@st.composite
def requests(draw) -> Request:
    prompt = draw(st.integers(1, 80))
    kind = draw(st.sampled_from(["lengths", "ids", "trace hashes"]))
    ids = tuple(draw(st.lists(st.integers(0, 3), min_size=prompt, max_size=prompt))) \
        if kind == "ids" else None
    trace = tuple(draw(st.lists(st.integers(0, 9), min_size=1, max_size=6))) \
        if kind == "trace hashes" else None
    return Request(draw(st.integers(0, 5)), 0.0, prompt, draw(st.integers(1, 40)),
                   prefix_block_hashes=trace, prefix_block_tokens=8 if trace else None,
                   prompt_token_ids=ids)


@given(requests(), st.sampled_from([1, 4, 16]), st.integers(0, 3),
       st.lists(st.integers(0, 120), max_size=5))
def test_incremental_hashes_equal_the_per_block_chain(request, block_size, sample_index, steps):
    hashes: list[int] = []
    for num_tokens in sorted(steps):
        extend_block_hashes(hashes, request, block_size, num_tokens, sample_index)
        assert hashes == reference(request, block_size, num_tokens, sample_index)


def test_length_only_keys_are_private_to_the_request_and_sample():
    a, b = Request(0, 0.0, 32, 32), Request(1, 0.0, 32, 32)
    assert block_hashes(a, 16, 32) != block_hashes(b, 16, 32)
    first, second = [], []
    extend_block_hashes(first, a, 16, 64, sample_index=0)
    extend_block_hashes(second, a, 16, 64, sample_index=1)
    assert first[:2] == second[:2] and first[2:] != second[2:]  # the prompt is shared
