"""The prefix-cache counters every caching allocator reports (`paged-prefix`, hybrid paged,
`radix`), so their `stats()` read the same and the hit rate compares across them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PrefixHitCounts:
    """Cumulative hits and queries at admission, in tokens and in whole blocks (a hit of 20
    tokens with block size 16 counts one block)."""

    hit_tokens: int = 0
    query_tokens: int = 0
    hit_blocks: int = 0
    query_blocks: int = 0

    def record(self, hit_tokens: int, query_tokens: int, block_size: int) -> None:
        """One admission: `hit_tokens` of its `query_tokens` known tokens were cached."""
        self.hit_tokens += hit_tokens
        self.query_tokens += query_tokens
        self.hit_blocks += hit_tokens // block_size
        self.query_blocks += query_tokens // block_size

    def stats(self, evictions: int) -> dict[str, int]:
        """`KVAllocator.stats()`: these counters and the allocator's `evictions`."""
        return {
            "prefix_hit_tokens": self.hit_tokens,
            "prefix_query_tokens": self.query_tokens,
            "prefix_hit_blocks": self.hit_blocks,
            "prefix_query_blocks": self.query_blocks,
            "evictions": evictions,
        }
