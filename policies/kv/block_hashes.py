"""Content identity of full KV blocks, chained so equal hashes mean equal prefixes.

    h_0 = hash((ROOT, key_0)),  h_i = hash((h_{i-1}, key_i))

A block's key is what its tokens are: their ids when the prompt is known, or, for traces that
only carry per-block hash ids (Mooncake: one id per 512 tokens), the pieces of those trace
blocks it covers, `(trace_block_id, first_offset, end_offset)`. This maps trace blocks of any
size onto the simulator's block size exactly: a 16-token block inside trace block 7 is
`((7, 32, 48),)`, and a block straddling two trace blocks names both pieces.

A block whose content the trace does not say (prompts of length-only traces, the part of a
prompt past its hash ids, every output block: the simulator does not know output ids) gets a
key private to its request, `(request_id, block_index)`, and an output block one private to
its sample, `(request_id, sample_index, block_index)`. It can never match another request,
but the request itself hits it again after a recompute preemption, as in vLLM, which knows
the ids. Callers hash only committed tokens, so speculative tokens are never cached.

Python hashes tuples of ints deterministically (PYTHONHASHSEED only salts str/bytes), so runs
are reproducible.
"""

from __future__ import annotations

from typing import Iterator

from policies.types import Request

_ROOT = 0x5E57E51


def extend_block_hashes(hashes: list[int], request: Request, block_size: int, num_tokens: int,
                        sample_index: int = 0) -> None:
    """Append to `hashes` the chained hashes of the full blocks among the first `num_tokens`
    tokens (of sample `sample_index`) that it does not hold yet."""
    if request.prompt_token_ids is None and not request.prefix_block_hashes:
        _extend_private(hashes, request, block_size, num_tokens // block_size, sample_index)
        return
    parent = hashes[-1] if hashes else _ROOT
    for index in range(len(hashes), num_tokens // block_size):
        parent = hash((parent, _block_key(request, block_size, index, sample_index)))
        hashes.append(parent)


def _extend_private(hashes: list[int], request: Request, block_size: int, num_blocks: int,
                    sample_index: int) -> None:
    """`extend_block_hashes` up to `num_blocks` blocks for a request whose trace gives only
    lengths, so every key is private: `_block_key`'s keys without a call per block (hashing
    is a large part of what a prefix-caching replay of a length-only trace costs)."""
    parent = hashes[-1] if hashes else _ROOT
    request_id, first = request.request_id, len(hashes)
    prompt_blocks = min(num_blocks, request.prompt_tokens // block_size)
    for index in range(first, prompt_blocks):
        parent = hash((parent, (request_id, index)))
        hashes.append(parent)
    for index in range(max(first, prompt_blocks), num_blocks):
        parent = hash((parent, (request_id, sample_index, index)))
        hashes.append(parent)


def block_hashes(request: Request, block_size: int, num_tokens: int) -> list[int]:
    hashes: list[int] = []
    extend_block_hashes(hashes, request, block_size, num_tokens)
    return hashes


def iter_block_hashes(request: Request, block_size: int, num_tokens: int) -> Iterator[int]:
    """`block_hashes`, one at a time: a prefix lookup that stops at its first miss computes
    no more (a cache-aware router asks every replica about every arrival)."""
    parent = _ROOT
    for index in range(num_tokens // block_size):
        parent = hash((parent, _block_key(request, block_size, index, 0)))
        yield parent


def _block_key(request: Request, block_size: int, index: int, sample_index: int) -> tuple:
    start, end = index * block_size, (index + 1) * block_size
    private = (request.request_id, index)
    if end > request.prompt_tokens:
        return (request.request_id, sample_index, index)
    if request.prompt_token_ids is not None:
        return tuple(request.prompt_token_ids[start:end])
    trace_ids = request.prefix_block_hashes
    trace_size = request.prefix_block_tokens
    if not trace_ids or not trace_size or end > len(trace_ids) * trace_size:
        return private
    pieces = []
    for j in range(start // trace_size, (end - 1) // trace_size + 1):
        base = j * trace_size
        pieces.append((trace_ids[j], max(start, base) - base, min(end, base + trace_size) - base))
    return tuple(pieces)
