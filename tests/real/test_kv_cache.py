"""The physical pool is addressed by exactly the allocator's block ids; copies and swaps move
whole blocks in every layer."""

from __future__ import annotations

import pytest
import torch

from backend.kv_cache import KVCache, require_page_tables
from policies.kv.contiguous import ContiguousAllocator, ContiguousParams
from policies.kv.paged import PagedAllocator, PagedParams
from policies.kv.radix import RadixAllocator, RadixParams
from tests.helpers import make_seq


def _cache(num_blocks=6, block_size=4) -> KVCache:
    return KVCache(num_layers=2, num_blocks=num_blocks, block_size=block_size, num_kv_heads=2,
                   head_dim=8, dtype=torch.float32, device="cpu")


def _fill(cache: KVCache, layer: int, block: int, value: float) -> None:
    cache.k[layer, block] = value
    cache.v[layer, block] = -value


def test_write_lands_in_the_allocators_blocks():
    allocator = PagedAllocator(PagedParams(block_size=4, num_blocks=6))
    first, second = make_seq(0, 5, 2), make_seq(1, 3, 2)
    assert allocator.allocate_slots(first, 6) and allocator.allocate_slots(second, 3)
    allocator.free(first)
    third = make_seq(2, 9, 1)
    assert allocator.allocate_slots(third, 9)
    pages = allocator.page_table(2)
    assert (allocator.page_size, pages) == (4, [3, 4, 5])  # never-used blocks first, in id order
    cache = _cache()
    positions = torch.arange(9)
    slots = torch.tensor(pages)[positions // 4] * 4 + positions % 4
    k = torch.arange(9.0)[:, None, None].expand(9, 2, 8).contiguous()
    cache.write(1, slots, k, -k)
    assert cache.k[1, 3, :, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert cache.k[1, 5, 0, 1, 7].item() == 8.0
    assert cache.v[1, 4, 2, 0, 0].item() == -6.0
    assert cache.k[0].abs().sum() == 0  # other layers untouched
    assert cache.k[1, :3].abs().sum() == 0  # other blocks untouched


def test_contiguous_spans_are_single_slot_pages():
    allocator = ContiguousAllocator(ContiguousParams(block_size=4, num_blocks=6,
                                                     reserve="oracle"))
    assert allocator.allocate_slots(make_seq(0, 3, 3), 5)
    assert allocator.allocate_slots(make_seq(1, 4, 2), 5)
    assert (allocator.page_size, allocator.page_table(1)) == (1, [5, 6, 7, 8, 9])
    cache = _cache()
    k_pages, _ = cache.pages(0, 1)
    assert k_pages.shape == (24, 1, 2, 8)
    k_pages[7] = 1.0  # slot 7 of the flat pool is block 1, offset 3
    assert cache.k[0, 1, 3].eq(1.0).all()


def test_the_pool_refuses_an_allocator_it_cannot_address():
    paged = PagedAllocator(PagedParams(block_size=4, num_blocks=6))
    assert require_page_tables(paged) is paged
    radix = RadixAllocator(RadixParams(block_size=4, num_blocks=6))
    with pytest.raises(ValueError, match="RadixAllocator does not keep: use --allocator paged"):
        require_page_tables(radix)


def test_copy_blocks_copies_every_layer_and_nothing_else():
    cache = _cache()
    for layer in range(2):
        _fill(cache, layer, 1, 10.0 + layer)
        _fill(cache, layer, 2, 20.0 + layer)
    cache.copy_blocks([(1, 4), (2, 5)])
    for layer in range(2):
        assert cache.k[layer, 4].eq(10.0 + layer).all()
        assert cache.v[layer, 5].eq(-20.0 - layer).all()
    assert cache.k[:, 0].abs().sum() == 0 and cache.k[:, 3].abs().sum() == 0


def test_swap_out_and_back_in_round_trips():
    cache = _cache()
    _fill(cache, 0, 2, 3.0)
    _fill(cache, 1, 2, 4.0)
    _fill(cache, 1, 5, 5.0)
    saved = cache.swap_out([2, 5])
    assert saved[0].device.type == "cpu" and saved[0].shape == (2, 2, 4, 2, 8)
    assert saved[0][1, 0].eq(4.0).all() and saved[1][1, 1].eq(-5.0).all()
    cache.k.zero_()
    cache.v.zero_()
    cache.swap_in(saved, [1, 3])  # back into different device blocks
    assert cache.k[0, 1].eq(3.0).all() and cache.k[1, 1].eq(4.0).all()
    assert cache.v[1, 3].eq(-5.0).all()
    assert cache.k[:, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="2 swapped blocks cannot fill 3"):
        cache.swap_in(saved, [0, 1, 4])


def test_pool_size_in_bytes():
    assert _cache().num_bytes == 2 * 2 * 6 * 4 * 2 * 8 * 4
