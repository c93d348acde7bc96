"""The CPU's batched decode attention against the torch reference: the same random paged
inputs the Triton kernels are checked on (ragged contexts, GQA ratios, page size 1, a sliding
window), plus a batch whose pages are shared (forks) and one sequence of length 1."""

from __future__ import annotations

import pytest
import torch

from backend.kernels.reference import paged_attention_ref
from backend.kernels.torch_paged import context_slots, paged_decode_attention_torch
from tests.real.paged_cases import CASES, random_case


def _decode(q, k, v, tables, context_lens, scale, window):
    lengths = torch.tensor(context_lens)
    return paged_decode_attention_torch(q, k, v, context_slots(tables, lengths, k.shape[1]),
                                        lengths, scale, window)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_batched_decode_matches_reference(case):
    heads, kv_heads, dim, page, ctx, _, window = CASES[case]
    q, k, v, tables, qs = random_case(200 + case, heads, kv_heads, dim, page, ctx,
                                      [1] * len(ctx), torch.float32)
    expected = paged_attention_ref(q, k, v, tables, qs, ctx, dim ** -0.5, window)
    torch.testing.assert_close(_decode(q, k, v, tables, ctx, dim ** -0.5, window), expected,
                               rtol=1e-5, atol=1e-5)


def test_shared_pages_and_a_single_token_context():
    q, k, v, tables, _ = random_case(9, 4, 2, 16, 4, [9, 9, 1], [1, 1, 1], torch.float32)
    tables[1] = tables[0]  # a forked sample reads its parent's pages
    q[1] = q[0]
    out = _decode(q, k, v, tables, [9, 9, 1], 0.25, None)
    torch.testing.assert_close(out[1], out[0])
    expected = paged_attention_ref(q, k, v, tables, [0, 1, 2, 3], [9, 9, 1], 0.25)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # One visible key: the output is that key's value, whatever the query.
    slot = int(tables[2, 0]) * 4
    value = v.reshape(-1, 2, 16)[slot].repeat_interleave(2, dim=0)
    torch.testing.assert_close(out[2], value)
