"""Triton paged attention against the torch reference: fresh random inputs per case, ragged
context lengths, GQA ratios, page sizes (1 = contiguous spans), sliding windows; the output is
poisoned with NaN before each run so an unwritten row cannot pass. Interpreted on CPU (the root
conftest sets TRITON_INTERPRET=1), compiled on CUDA."""

from __future__ import annotations

import pytest
import torch

triton_paged = pytest.importorskip("backend.kernels.triton_paged", reason="needs triton")
from backend.kernels.reference import paged_attention_ref  # noqa: E402

from tests.real.paged_cases import CASES, DEVICE, random_case  # noqa: E402


@pytest.mark.parametrize("case", range(len(CASES)))
def test_prefill_kernel_matches_reference(case):
    heads, kv_heads, dim, page, ctx, new, window = CASES[case]
    q, k, v, tables, qs = random_case(case, heads, kv_heads, dim, page, ctx, new, torch.float32)
    scale = dim ** -0.5
    expected = paged_attention_ref(q, k, v, tables, qs, ctx, scale, window)
    got = triton_paged.paged_prefill_attention(
        q, k, v, tables, torch.tensor(qs, device=DEVICE), torch.tensor(ctx, device=DEVICE),
        scale, window, out=torch.full_like(q, float("nan")))
    assert not got.isnan().any()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_decode_kernel_matches_reference(case):
    heads, kv_heads, dim, page, ctx, _, window = CASES[case]
    new = [1] * len(ctx)
    q, k, v, tables, qs = random_case(100 + case, heads, kv_heads, dim, page, ctx, new,
                                       torch.float32)
    scale = dim ** -0.5
    expected = paged_attention_ref(q, k, v, tables, qs, ctx, scale, window)
    got = triton_paged.paged_decode_attention(
        q, k, v, tables, torch.tensor(ctx, device=DEVICE), scale, window,
        out=torch.full_like(q, float("nan")))
    assert not got.isnan().any()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_reference_decode_equals_dense_softmax_attention():
    """The reference itself, against attention written out by hand for one sequence."""
    q, k, v, tables, qs = random_case(7, 2, 1, 16, 4, [6], [1], torch.float32)
    out = paged_attention_ref(q, k, v, tables, qs, [6], 0.25)
    slots = [int(tables[0, p // 4]) * 4 + p % 4 for p in range(6)]
    keys = k.reshape(-1, 1, 16)[slots, 0]  # [6, 16]
    values = v.reshape(-1, 1, 16)[slots, 0]
    for head in range(2):
        weights = torch.softmax(keys.cpu() @ q[0, head].cpu() * 0.25, dim=0)
        torch.testing.assert_close(out[0, head].cpu(), weights @ values.cpu())


@pytest.mark.skipif(DEVICE != "cuda", reason="half precision kernels need CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernels_in_half_precision_on_cuda(dtype):
    q, k, v, tables, qs = random_case(11, 8, 2, 64, 16, [300, 1000], [300, 1], dtype)
    expected = paged_attention_ref(q, k, v, tables, qs, [300, 1000], 0.125)
    got = triton_paged.paged_prefill_attention(
        q, k, v, tables, torch.tensor(qs, device=DEVICE), torch.tensor([300, 1000],
                                                                        device=DEVICE), 0.125)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
