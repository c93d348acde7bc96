"""The host-memory pool that swap preemption copies KV into (vLLM v0's swap space).

Counted in blocks of the device pool's block size. A sequence swapped out moves the KV of its
computed tokens over the host link and keeps its progress; swapping it back in needs fresh
device blocks and the same transfer the other way. The executor charges both transfers to the
iteration that performs them (vLLM v0 swaps synchronously before the forward pass).
"""

from __future__ import annotations

from typing import Callable

from policies.types import Sequence

PREEMPTION_MODES = ("recompute", "swap")


class SwapSpace:
    def __init__(self, num_blocks: int, blocks_for: Callable[[int], int]) -> None:
        """`blocks_for(tokens)` is the device pool's block count for that many tokens."""
        if num_blocks < 0:
            raise ValueError(f"swap space must be >= 0 blocks, got {num_blocks}")
        self.num_blocks = num_blocks
        self._blocks_for = blocks_for
        self._held: dict[int, int] = {}

    @property
    def num_free_blocks(self) -> int:
        return self.num_blocks - sum(self._held.values())

    def try_hold(self, seq: Sequence) -> bool:
        """Take room for `seq`'s computed KV; False (and nothing taken) if it does not fit."""
        need = self._blocks_for(seq.num_computed_tokens)
        if need > self.num_free_blocks:
            return False
        self._held[seq.seq_id] = need
        return True

    def release(self, seq: Sequence) -> None:
        self._held.pop(seq.seq_id, None)
