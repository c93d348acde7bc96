"""Paged decode attention in batched torch: the CPU path for decode-only steps.

The reference (`backend/kernels/reference.py`) loops over sequences, gathering each one's K/V
and expanding it per query head; a decode step of a few sequences then costs more in Python and
copies than in arithmetic. Here the whole batch gathers its K/V once, as a [B, L_max] slot grid
padded past each context, and one fused attention call (grouped query heads folded into the
query axis, no expansion) attends with a key mask. Same layout as the reference and the Triton
kernels; the reference stays the ground truth (tests compare them).
"""

from __future__ import annotations

import torch
from torch.nn import functional


def context_slots(page_tables: torch.Tensor, context_lens: torch.Tensor,
                  page_size: int) -> torch.Tensor:
    """[B, L_max] flat pool slots of each sequence's positions 0..L_max-1; positions past a
    context read its first page (masked out by the caller)."""
    positions = torch.arange(int(context_lens.max()), device=page_tables.device)
    pages = page_tables[:, positions // page_size].long()
    return pages * page_size + positions % page_size


def paged_decode_attention_torch(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    slots: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """q [B, H, D] (one new token per sequence, at position context_len - 1) -> [B, H, D]."""
    batch, num_heads, head_dim = q.shape
    num_pages, page_size, num_kv_heads, _ = k_pages.shape
    group = num_heads // num_kv_heads
    context_width = slots.shape[1]
    flat = slots.reshape(-1)  # index_select copies rows about twice as fast as fancy indexing

    def gather(pages: torch.Tensor) -> torch.Tensor:  # -> [B, KVH, L, D]
        rows = pages.reshape(num_pages * page_size, num_kv_heads, head_dim).index_select(0, flat)
        return rows.view(batch, context_width, num_kv_heads, head_dim).transpose(1, 2).float()

    key_pos = torch.arange(context_width, device=q.device)
    visible = key_pos[None, :] < context_lens[:, None]  # [B, L]
    if sliding_window is not None:
        visible &= key_pos[None, :] > context_lens[:, None] - 1 - sliding_window
    out = functional.scaled_dot_product_attention(
        q.view(batch, num_kv_heads, group, head_dim).float(), gather(k_pages), gather(v_pages),
        attn_mask=visible[:, None, None, :], scale=scale)  # [B, KVH, G, D]
    return out.reshape(batch, num_heads, head_dim).to(q.dtype)
