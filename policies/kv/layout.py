"""How much of the pool a sequence occupies when its layers keep different amounts of cache.

The pool's unit is a block: `block_size` tokens of KV for one *unit* of layers. For a plain
transformer the unit is every layer, and a sequence of n tokens takes ceil(n / block_size)
blocks. Hybrid models mix three kinds of layers (vLLM v1 calls them KV-cache groups):

    global layers   keep every token            full_units   x ceil(n / block_size)
    local layers    keep their window           window_units x (ceil(n / bs) - window_start_block(n))
    SSM layers      keep a constant state       fixed_blocks, from the first token on

A local layer's window is either sliding (Mistral, Gemma-3: the last W tokens; it keeps
min(ceil(n / bs), ceil(W / bs) + 1) blocks, one extra holding the window's partly filled edge)
or chunked (Llama-4: tokens attend within aligned chunks of W tokens; it keeps the blocks of
the chunk the last token is in). Blocks before `window_start_block` have slid out and are
recycled. A 5:1 local:global model has full_units 1 and window_units 5 (a unit is a sixth of
its attention layers), and a Mamba hybrid adds the blocks its recurrent state fills. The
simulator derives the numbers from the model spec (`sim.cost.memory.kv_layout`).

    sliding, W = 8, block_size 4, n = 21 tokens (blocks 0..5): a window unit keeps 3 blocks
    [ 0 ][ 1 ][ 2 ][ 3 ][ 4 ][ 5: 1 token ]
     slid out       ^ window_start_block(21) = 6 - 3 = 3
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KVLayout:
    full_units: int = 1
    window_units: int = 0
    window_tokens: int = 0
    fixed_blocks: int = 0
    chunked: bool = False
    """Window units attend within aligned chunks of `window_tokens` (chunked local attention)
    instead of a sliding window."""

    def __post_init__(self) -> None:
        if min(self.full_units, self.window_units, self.window_tokens, self.fixed_blocks) < 0:
            raise ValueError("KV layout counts must be >= 0")
        if self.full_units + self.window_units < 1:
            raise ValueError("a KV layout needs at least one attention unit")
        if self.window_units and self.window_tokens < 1:
            raise ValueError("windowed units need window_tokens >= 1")
        if self.chunked and not self.window_units:
            raise ValueError("a chunked layout needs window units")

    @property
    def is_plain(self) -> bool:
        """Every block maps to one block_size run of tokens (block tables index tokens)."""
        return self == KVLayout()

    def window_start_token(self, num_tokens: int) -> int:
        """First token whose KV a window unit of an `num_tokens`-token sequence keeps, token by
        token (the radix tree's granularity): the last `window_tokens` of a sliding window,
        the chunk of the last token of a chunked one."""
        if num_tokens <= 0:
            return 0
        if self.chunked:
            return (num_tokens - 1) // self.window_tokens * self.window_tokens
        return max(0, num_tokens - self.window_tokens)

    def window_start_block(self, num_tokens: int, block_size: int) -> int:
        """Index of the first block a window unit of an `num_tokens`-token sequence keeps:
        the blocks before it hold only tokens that no later query reads."""
        if num_tokens <= 0:
            return 0
        if self.chunked:
            return (num_tokens - 1) // self.window_tokens * self.window_tokens // block_size
        token_blocks = -(-num_tokens // block_size)
        return max(0, token_blocks - -(-self.window_tokens // block_size) - 1)

    def blocks_for(self, num_tokens: int, block_size: int) -> int:
        if num_tokens <= 0:
            return 0
        token_blocks = -(-num_tokens // block_size)
        window_blocks = token_blocks - self.window_start_block(num_tokens, block_size)
        return self.full_units * token_blocks + self.window_units * window_blocks + self.fixed_blocks

    def slots_for(self, num_tokens: int, block_size: int) -> int:
        """Token-granular footprint in slots (a contiguous reservation's size, so a chunked
        window counts its largest chunk so far)."""
        if num_tokens <= 0:
            return 0
        edge = 0 if self.chunked else block_size
        window = min(num_tokens, self.window_tokens + edge)
        return (self.full_units * num_tokens + self.window_units * window
                + self.fixed_blocks * block_size)
