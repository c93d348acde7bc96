"""How much of the pool a sequence occupies when its layers keep different amounts of cache.

The pool's unit is a block: `block_size` tokens of KV for one *unit* of layers. For a plain
transformer the unit is every layer, and a sequence of n tokens takes ceil(n / block_size)
blocks. Hybrid models mix three kinds of layers (vLLM v1 calls them KV-cache groups):

    global layers   keep every token            full_units   x ceil(n / block_size)
    local layers    keep the last W tokens      window_units x min(ceil(n / bs), ceil(W / bs) + 1)
                    (blocks that slide out of the window are recycled; one extra block holds
                    the window's partly filled edge)
    SSM layers      keep a constant state       fixed_blocks, from the first token on

so a 5:1 local:global model has full_units 1 and window_units 5 (a unit is a sixth of its
attention layers), and a Mamba hybrid adds the blocks its recurrent state fills. The simulator
derives the numbers from the model spec (`sim.cost.memory.kv_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KVLayout:
    full_units: int = 1
    window_units: int = 0
    window_tokens: int = 0
    fixed_blocks: int = 0

    def __post_init__(self) -> None:
        if min(self.full_units, self.window_units, self.window_tokens, self.fixed_blocks) < 0:
            raise ValueError("KV layout counts must be >= 0")
        if self.full_units + self.window_units < 1:
            raise ValueError("a KV layout needs at least one attention unit")
        if self.window_units and self.window_tokens < 1:
            raise ValueError("windowed units need window_tokens >= 1")

    @property
    def is_plain(self) -> bool:
        """Every block maps to one block_size run of tokens (block tables index tokens)."""
        return self == KVLayout()

    def blocks_for(self, num_tokens: int, block_size: int) -> int:
        if num_tokens <= 0:
            return 0
        token_blocks = -(-num_tokens // block_size)
        window_blocks = min(token_blocks, -(-self.window_tokens // block_size) + 1)
        return self.full_units * token_blocks + self.window_units * window_blocks + self.fixed_blocks

    def slots_for(self, num_tokens: int, block_size: int) -> int:
        """Token-granular footprint in slots (a contiguous reservation's size)."""
        if num_tokens <= 0:
            return 0
        window = min(num_tokens, self.window_tokens + block_size)
        return (self.full_units * num_tokens + self.window_units * window
                + self.fixed_blocks * block_size)
