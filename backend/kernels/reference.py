"""Paged attention in plain torch: gather each sequence's K/V through its block table, then
ordinary masked softmax attention. The ground truth for the Triton kernels, and the CPU path.

Layout (shared with the kernels):

    q             [T, H, D]            new tokens of all sequences, packed
    k/v_pages     [P, page, KVH, D]    physical pool of one layer
    block_tables  [B, max_pages]       page ids per sequence (int32), row b padded with anything
    query_start   [B + 1]              q rows of sequence b are query_start[b]:query_start[b+1]
    context_lens  [B]                  tokens of sequence b with KV after this step (cached + new)

A sequence's new tokens are its last `n` positions: query i sits at position
`context_len - n + i` and sees keys at positions <= its own (causal within the new chunk, all of
the cached prefix), or only the last `sliding_window` of them. With `attend_ends` [T] query t
sees keys at positions < attend_ends[t] instead (block diffusion: the whole of its own block,
`backend/diffusion.py`).
"""

from __future__ import annotations

import torch


def slots_for(block_table: torch.Tensor, num_tokens: int, page_size: int) -> torch.Tensor:
    """Flat slot index of positions 0..num_tokens-1 in a pool viewed as [P * page, ...]."""
    positions = torch.arange(num_tokens, device=block_table.device)
    pages = block_table[positions // page_size].long()
    return pages * page_size + positions % page_size


def paged_attention_ref(
    q: torch.Tensor,
    k_pages: torch.Tensor,
    v_pages: torch.Tensor,
    block_tables: torch.Tensor,
    query_start: list[int],
    context_lens: list[int],
    scale: float,
    sliding_window: int | None = None,
    attend_ends: torch.Tensor | None = None,
    chunk_masks: list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """`chunk_masks[b]` [n, n] (bool), when given for sequence b, replaces the causal mask
    among its n new tokens (a token tree or lookahead's 2D window: token i sees new token j
    where it is True); every new token still sees the whole context before the chunk."""
    num_heads = q.shape[1]
    num_pages, page_size, num_kv_heads, head_dim = k_pages.shape
    group = num_heads // num_kv_heads
    k_flat = k_pages.reshape(num_pages * page_size, num_kv_heads, head_dim)
    v_flat = v_pages.reshape(num_pages * page_size, num_kv_heads, head_dim)
    out = torch.empty_like(q)
    for b, context_len in enumerate(context_lens):
        start, end = query_start[b], query_start[b + 1]
        num_new = end - start
        slots = slots_for(block_tables[b], context_len, page_size)
        k = k_flat[slots].repeat_interleave(group, dim=1)  # [L, H, D]
        v = v_flat[slots].repeat_interleave(group, dim=1)  # [L, H, D]
        scores = torch.einsum("nhd,lhd->hnl", q[start:end].float(), k.float()) * scale
        key_pos = torch.arange(context_len, device=q.device)
        query_pos = context_len - num_new + torch.arange(num_new, device=q.device)
        mask = None if chunk_masks is None else chunk_masks[b]
        if mask is not None:
            hidden = torch.zeros(num_new, context_len, dtype=torch.bool, device=q.device)
            hidden[:, context_len - num_new:] = ~mask  # [n, L]
        elif attend_ends is None:
            hidden = key_pos[None, :] > query_pos[:, None]  # [n, L]
        else:
            hidden = key_pos[None, :] >= attend_ends[start:end, None]  # [n, L]
        if sliding_window is not None:
            hidden |= key_pos[None, :] <= query_pos[:, None] - sliding_window
        scores.masked_fill_(hidden, float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # [H, n, L]
        out[start:end] = torch.einsum("hnl,lhd->nhd", probs, v.float()).to(q.dtype)
    return out
