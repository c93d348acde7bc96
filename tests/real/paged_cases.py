"""Random paged-attention inputs shared by the kernel tests: ragged context lengths, GQA
ratios, page sizes (1 = contiguous spans), sliding windows, pages in a scrambled order."""

from __future__ import annotations

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (num_heads, num_kv_heads, head_dim, page_size, context_lens, new_lens, sliding_window)
CASES = [
    (4, 2, 16, 4, [5, 17, 33], [5, 3, 1], None),       # prompt, chunk over a prefix, decode
    (4, 1, 32, 8, [40, 9], [20, 9], None),               # MQA, a chunk longer than BLOCK_M
    (6, 3, 16, 1, [12, 30], [12, 1], None),              # page size 1 (contiguous spans)
    (2, 2, 16, 16, [50, 7], [18, 7], 8),                 # MHA with a sliding window
]


def random_case(seed, num_heads, num_kv_heads, head_dim, page_size, context_lens, new_lens,
                dtype):
    gen = torch.Generator().manual_seed(seed)
    pages_per_seq = [-(-length // page_size) for length in context_lens]
    num_pages = sum(pages_per_seq) + 3
    # Pages handed out in a scrambled order, as a long-running free list would.
    order = torch.randperm(num_pages, generator=gen)
    tables = torch.zeros(len(context_lens), max(pages_per_seq), dtype=torch.int32)
    used = 0
    for b, count in enumerate(pages_per_seq):
        tables[b, :count] = order[used:used + count]
        used += count
    k = torch.randn(num_pages, page_size, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(num_pages, page_size, num_kv_heads, head_dim, generator=gen)
    q = torch.randn(sum(new_lens), num_heads, head_dim, generator=gen)
    query_start = [0]
    for n in new_lens:
        query_start.append(query_start[-1] + n)
    to = {"device": DEVICE, "dtype": dtype}
    return q.to(**to), k.to(**to), v.to(**to), tables.to(DEVICE), query_start
