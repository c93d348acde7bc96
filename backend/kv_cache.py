"""The physical KV pool, addressed by exactly the ids the policy allocator hands out.

    k[layer]  [num_blocks, block_size, kv_heads, head_dim]      (v alike)
               ^ block id from the allocator's `page_table(seq_id)`

A paged sequence's position p lives in block `table[p // block_size]`, slot `p % block_size`.
A contiguous allocator hands out slot spans instead; the same memory viewed as single-slot
pages (`pages(layer, 1)`) addresses span `(start, length)` as the page list start..start+length-1,
so one attention path serves both. Block copies (copy-on-write) and swap to a CPU pool are
primitives the executor runs when a plan preempts by swap.
"""

from __future__ import annotations

from typing import Sequence as Seq

import torch

from policies.kv.base import KVAllocator, PageTableAllocator


class KVCache:
    def __init__(
        self,
        *,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        self.block_size = block_size
        self.num_blocks = num_blocks
        # Zeros, not empty: a read of a never-written slot is then a visible bug, not noise.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def num_bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def pages(self, layer: int, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `layer`'s K and V as [num_pages, page_size, kv_heads, head_dim] views."""
        k, v = self.k[layer], self.v[layer]
        if page_size == self.block_size:
            return k, v
        shape = (-1, page_size, k.shape[2], k.shape[3])
        return k.reshape(shape), v.reshape(shape)

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' K/V ([T, kv_heads, head_dim]) at flat slot ids [T]."""
        flat_shape = (-1, self.k.shape[3], self.k.shape[4])
        self.k[layer].view(flat_shape).index_copy_(0, slots, k)
        self.v[layer].view(flat_shape).index_copy_(0, slots, v)

    def copy_blocks(self, pairs: Seq[tuple[int, int]]) -> None:
        """Copy block `src` to block `dst` in every layer (copy-on-write of a shared block)."""
        if not pairs:
            return
        src = torch.tensor([s for s, _ in pairs], device=self.k.device)
        dst = torch.tensor([d for _, d in pairs], device=self.k.device)
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]

    def copy_slots(self, source: int, destination: int, num_slots: int) -> None:
        """Copy `num_slots` consecutive slots (flat index block * block_size + offset) of
        every layer from `source` to `destination` (a copy-on-write or a forked span)."""
        k = self.k.view(self.k.shape[0], -1, *self.k.shape[3:])
        v = self.v.view(self.v.shape[0], -1, *self.v.shape[3:])
        k[:, destination:destination + num_slots] = k[:, source:source + num_slots].clone()
        v[:, destination:destination + num_slots] = v[:, source:source + num_slots].clone()

    def copy_scattered_slots(self, sources: torch.Tensor, destinations: torch.Tensor) -> None:
        """Copy flat slots `sources` [n] to `destinations` [n] of every layer (lookahead's
        accepted drafts, from the candidate branch to the positions after x); the two sets
        must not overlap."""
        k = self.k.view(self.k.shape[0], -1, *self.k.shape[3:])
        v = self.v.view(self.v.shape[0], -1, *self.v.shape[3:])
        k[:, destinations] = k[:, sources]
        v[:, destinations] = v[:, sources]

    def swap_out(self, blocks: Seq[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy `blocks` of every layer to host memory, returned as (k, v), each
        [num_layers, len(blocks), block_size, kv_heads, head_dim]. Host memory is taken per
        swapped sequence, so only what is swapped out is held (the scheduler's swap space
        bounds it)."""
        index = torch.tensor(list(blocks), dtype=torch.long, device=self.k.device)
        pin = self.k.device.type == "cuda"
        k = torch.empty((self.k.shape[0], len(blocks), *self.k.shape[2:]), dtype=self.k.dtype,
                        pin_memory=pin)
        v = torch.empty_like(k, pin_memory=pin)
        k.copy_(self.k[:, index])
        v.copy_(self.v[:, index])
        return k, v

    def swap_in(self, saved: tuple[torch.Tensor, torch.Tensor], blocks: Seq[int]) -> None:
        """Copy swapped-out KV back into (usually different) device `blocks`."""
        k, v = saved
        if k.shape[1] != len(blocks):
            raise ValueError(f"{k.shape[1]} swapped blocks cannot fill {len(blocks)} blocks")
        index = torch.tensor(list(blocks), dtype=torch.long, device=self.k.device)
        self.k[:, index] = k.to(self.k.device, non_blocking=True)
        self.v[:, index] = v.to(self.v.device, non_blocking=True)


def require_page_tables(allocator: KVAllocator) -> PageTableAllocator:
    """`allocator`, if this pool can address the KV it places (it keeps page tables)."""
    if not isinstance(allocator, PageTableAllocator):
        raise ValueError(f"the real backend reads KV through page tables, which "
                         f"{type(allocator).__name__} does not keep: use --allocator paged, "
                         f"paged-prefix or contiguous with --executor real")
    return allocator
