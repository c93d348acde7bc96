"""Content identity of full KV blocks, chained so equal hashes mean equal prefixes.

    h_0 = hash((ROOT, key_0)),  h_i = hash((h_{i-1}, key_i))

A block's key is what its tokens are: their ids when the prompt is known, or, for traces that
only carry per-block hash ids (Mooncake: one id per 512 tokens), the pieces of those trace
blocks it covers, `(trace_block_id, first_offset, end_offset)`. This maps trace blocks of any
size onto the simulator's block size exactly: a 16-token block inside trace block 7 is
`((7, 32, 48),)`, and a block straddling two trace blocks names both pieces. Only full blocks
whose every token is covered get a hash; a request with neither ids nor hash ids gets none, so
its blocks are never shared. Outputs are not hashed (the simulator does not know their ids),
so speculative or rejected tokens can never be cached.

Python hashes tuples of ints deterministically (PYTHONHASHSEED only salts str/bytes), so runs
are reproducible.
"""

from __future__ import annotations

from policies.types import Request

_ROOT = 0x5E57E51


def prompt_block_hashes(request: Request, block_size: int) -> list[int]:
    """Chained hashes of the prompt's full, identifiable blocks, in order."""
    keys = _block_keys(request, block_size)
    hashes: list[int] = []
    parent = _ROOT
    for key in keys:
        parent = hash((parent, key))
        hashes.append(parent)
    return hashes


def _block_keys(request: Request, block_size: int) -> list[tuple]:
    num_full = request.prompt_tokens // block_size
    if request.prompt_token_ids is not None:
        ids = request.prompt_token_ids
        return [tuple(ids[i * block_size:(i + 1) * block_size]) for i in range(num_full)]
    trace_ids = request.prefix_block_hashes
    trace_size = request.prefix_block_tokens
    if not trace_ids or not trace_size:
        return []
    covered = min(request.prompt_tokens, len(trace_ids) * trace_size)
    keys = []
    for i in range(min(num_full, covered // block_size)):
        start, end = i * block_size, (i + 1) * block_size
        pieces = []
        for j in range(start // trace_size, (end - 1) // trace_size + 1):
            base = j * trace_size
            pieces.append((trace_ids[j], max(start, base) - base, min(end, base + trace_size) - base))
        keys.append(tuple(pieces))
    return keys
