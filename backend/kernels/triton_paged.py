"""Triton paged attention: one kernel for decode (one new token per sequence) and one for
prefill / chunked prefill over a cached prefix (causal within the new chunk).

Both walk a sequence's keys in tiles of BLOCK_N positions and find each position's physical
slot through the block table (`page = table[pos // page_size]`, `slot = pos % page_size`), so
any page size works: the paged allocator's blocks, or single-slot pages for contiguous spans.
Softmax is online (running max and sum, as in FlashAttention), in fp32.

Tensor layout is the one documented in `backend/kernels/reference.py`. On a machine without
CUDA the tests run these kernels under TRITON_INTERPRET=1 (set by the root conftest.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from backend.kernels import triton_takes_head_dim

# A finite "minus infinity" keeps fully masked rows NaN-free: exp(-inf - (-1e30)) is 0.
_NEG_BIG = tl.constexpr(-1.0e30)


@triton.jit
def _decode_kernel(
    Q, K, V, O, BlockTables, ContextLens, scale, page_size, window,
    stride_qt, stride_qh, stride_kp, stride_ks, stride_kh, stride_bt, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // GROUP
    context_len = tl.load(ContextLens + seq)
    query_pos = context_len - 1
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + seq * stride_qt + head * stride_qh + offs_d).to(tl.float32)  # [D]
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(query_pos - window + 1, 0) // BLOCK_N * BLOCK_N
    m_i = _NEG_BIG
    l_i = 0.0
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for start in range(lo, context_len, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        valid = offs_n < context_len
        if HAS_WINDOW:
            valid = valid & (offs_n > query_pos - window)
        page = tl.load(BlockTables + seq * stride_bt + offs_n // page_size, mask=valid, other=0)
        row = page.to(tl.int64) * stride_kp + (offs_n % page_size) * stride_ks + kv_head * stride_kh
        k = tl.load(K + row[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0)  # [N, D]
        s = tl.sum(k.to(tl.float32) * q[None, :], axis=1) * scale  # [N]
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m_i - m_new)
        v = tl.load(V + row[:, None] + offs_d[None, :], mask=valid[:, None], other=0.0)  # [N, D]
        acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        m_i = m_new
    tl.store(O + seq * stride_ot + head * stride_oh + offs_d, (acc / l_i).to(O.dtype.element_ty))


@triton.jit
def _prefill_kernel(
    Q, K, V, O, BlockTables, QueryStart, ContextLens, scale, page_size, window,
    stride_qt, stride_qh, stride_kp, stride_ks, stride_kh, stride_bt, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    m_block = tl.program_id(2)
    kv_head = head // GROUP
    q_start = tl.load(QueryStart + seq)
    num_new = tl.load(QueryStart + seq + 1) - q_start
    if m_block * BLOCK_M < num_new:
        context_len = tl.load(ContextLens + seq)
        offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < num_new
        query_pos = context_len - num_new + offs_m  # [M]
        offs_d = tl.arange(0, HEAD_DIM)
        q_rows = (q_start + offs_m).to(tl.int64)
        q = tl.load(Q + q_rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                    mask=m_valid[:, None], other=0.0)  # [M, D]
        # Keys past this tile's last query are hidden from every row: stop there.
        hi = tl.minimum(context_len, context_len - num_new + (m_block + 1) * BLOCK_M)
        lo = 0
        if HAS_WINDOW:
            first_query = context_len - num_new + m_block * BLOCK_M
            lo = tl.maximum(first_query - window + 1, 0) // BLOCK_N * BLOCK_N
        m_i = tl.full([BLOCK_M], _NEG_BIG, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        for start in range(lo, hi, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            n_valid = offs_n < hi
            page = tl.load(BlockTables + seq * stride_bt + offs_n // page_size, mask=n_valid,
                           other=0)
            row = (page.to(tl.int64) * stride_kp + (offs_n % page_size) * stride_ks
                   + kv_head * stride_kh)
            k = tl.load(K + row[:, None] + offs_d[None, :], mask=n_valid[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [M, N]
            else:
                s = tl.dot(q, tl.trans(k)) * scale  # [M, N]
            visible = n_valid[None, :] & (offs_n[None, :] <= query_pos[:, None])
            if HAS_WINDOW:
                visible = visible & (offs_n[None, :] > query_pos[:, None] - window)
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            v = tl.load(V + row[:, None] + offs_d[None, :], mask=n_valid[:, None], other=0.0)
            if IEEE:
                pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            l_i = l_i * alpha + tl.sum(p, axis=1)
            m_i = m_new
        # Rows past the chunk's end saw no key (l_i == 0); they are not stored.
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(O + q_rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
                 out.to(O.dtype.element_ty), mask=m_valid[:, None])


def _common(q: torch.Tensor, k_pages: torch.Tensor, block_tables: torch.Tensor):
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k_pages.shape[2]
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads do not group over {num_kv_heads} KV heads")
    if not triton_takes_head_dim(head_dim):
        raise ValueError(f"the Triton kernels need a power-of-two head_dim >= 16, got {head_dim}")
    if k_pages.stride(3) != 1 or q.stride(2) != 1:
        raise ValueError("the head dimension must be contiguous")
    return num_heads // num_kv_heads, block_tables.to(torch.int32).contiguous()


def paged_decode_attention(
    q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float, sliding_window: int | None = None,
    block_n: int = 32, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One new token per sequence: `q` is [B, H, D], row b belongs to sequence b. Writes into
    `out` when given (tests pass a NaN-poisoned buffer to catch unwritten rows)."""
    group, tables = _common(q, k_pages, block_tables)
    out = torch.empty_like(q) if out is None else out
    grid = (q.shape[0], q.shape[1])
    _decode_kernel[grid](
        q, k_pages, v_pages, out, tables, context_lens.to(torch.int32), scale,
        k_pages.shape[1], sliding_window or 0,
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=q.shape[2], BLOCK_N=block_n,
        HAS_WINDOW=sliding_window is not None,
    )
    return out


def paged_prefill_attention(
    q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, block_tables: torch.Tensor,
    query_start: torch.Tensor, context_lens: torch.Tensor, scale: float,
    sliding_window: int | None = None, block_m: int = 16, block_n: int = 16,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Any number of new tokens per sequence over its cached prefix (layout as the reference)."""
    group, tables = _common(q, k_pages, block_tables)
    out = torch.empty_like(q) if out is None else out
    lengths = query_start[1:] - query_start[:-1]
    max_new = int(lengths.max()) if lengths.numel() else 0
    grid = (context_lens.numel(), q.shape[1], triton.cdiv(max_new, block_m))
    _prefill_kernel[grid](
        q, k_pages, v_pages, out, tables, query_start.to(torch.int32),
        context_lens.to(torch.int32), scale, k_pages.shape[1], sliding_window or 0,
        q.stride(0), q.stride(1), k_pages.stride(0), k_pages.stride(1), k_pages.stride(2),
        tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=q.shape[2], BLOCK_M=block_m, BLOCK_N=block_n,
        HAS_WINDOW=sliding_window is not None, IEEE=q.dtype == torch.float32,
    )
    return out
