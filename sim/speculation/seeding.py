"""Request streams' generators, seeded as `np.random.default_rng(SeedSequence([seed, r]))`
for a block of consecutive request ids r at once.

A `SeedSequence` hashes its entropy words into a pool of four 32-bit words and expands the
pool into the generator's seed words; the mixing's hash constants never depend on the
entropy, so the same arithmetic runs over a whole block of ids as uint32 arrays (numpy's
uint32 arithmetic wraps as its C code does). Building a generator from its seed words then
costs about 1 us instead of the 9 us a `SeedSequence` and its `generate_state` take, which a
trace's tens of thousands of request streams would otherwise pay one by one. The words are
checked against numpy's own `SeedSequence` in tests/test_spec_seeding.py.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.random.bit_generator import ISeedSequence

IDS_PER_BLOCK = 1024
"""Request ids whose seed words one vectorised computation yields."""

_POOL_SIZE = 4
_INIT_A = 0x43B0D7E5
_MULT_A = 0x931E8875
_INIT_B = 0x8B51F9DD
_MULT_B = 0x58F38DED
_MIX_MULT_L = np.uint32(0xCA01F9DD)
_MIX_MULT_R = np.uint32(0x4973F715)
_XSHIFT = np.uint32(16)
_MASK32 = 0xFFFFFFFF
_SEED_WORDS = 4
"""uint64 words PCG64 asks its seed sequence for: 128 bits of state, 128 of increment."""


class SeedWords(ISeedSequence):
    """A seed sequence whose PCG64 seed words are already known (one row of a block)."""

    __slots__ = ("words",)

    def __init__(self, words: np.ndarray) -> None:
        self.words = words

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        if n_words != _SEED_WORDS or np.dtype(dtype) != np.uint64:
            raise ValueError("SeedWords holds only PCG64's four uint64 seed words")
        return self.words


def request_generator(seed: int, request_id: int) -> np.random.Generator:
    """`np.random.default_rng(np.random.SeedSequence([seed, request_id]))`, bit for bit."""
    if seed < 0 or not 0 <= request_id <= _MASK32:
        return np.random.default_rng(np.random.SeedSequence([seed, request_id]))
    block, row = divmod(request_id, IDS_PER_BLOCK)
    words = _seed_words(seed, block)[row]
    return np.random.Generator(np.random.PCG64(SeedWords(words)))


@lru_cache(maxsize=64)
def _seed_words(seed: int, block: int) -> np.ndarray:
    """PCG64's seed words of request ids `block * IDS_PER_BLOCK` on, one row each:
    what `SeedSequence([seed, id]).generate_state(4, np.uint64)` returns."""
    first = block * IDS_PER_BLOCK
    ids = np.arange(first, min(first + IDS_PER_BLOCK, _MASK32 + 1), dtype=np.uint64)
    entropy = [np.full(len(ids), word, dtype=np.uint32) for word in _words_of(seed)]
    entropy.append(ids.astype(np.uint32))  # an id below 2**32 is one word (0 included)
    pool = _mix_entropy(entropy, len(ids))
    state = []
    hash_const = _INIT_B
    for index in range(2 * _SEED_WORDS):  # generate_state: the pool's words in turn
        value = pool[index % _POOL_SIZE] ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_B) & _MASK32
        value = value * np.uint32(hash_const)
        state.append(value ^ (value >> _XSHIFT))
    low = np.stack(state[0::2], axis=1).astype(np.uint64)
    high = np.stack(state[1::2], axis=1).astype(np.uint64)
    return np.ascontiguousarray(low | (high << np.uint64(32)))


def _words_of(value: int) -> list[int]:
    """A non-negative int as SeedSequence reads it: 32-bit words, least significant first."""
    words = []
    while True:
        words.append(value & _MASK32)
        value >>= 32
        if not value:
            return words


def _mix_entropy(entropy: list[np.ndarray], count: int) -> list[np.ndarray]:
    """SeedSequence's pool of four words from entropy words (each an array over ids)."""
    hash_const = _INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal hash_const
        value = value ^ np.uint32(hash_const)
        hash_const = (hash_const * _MULT_A) & _MASK32
        value = value * np.uint32(hash_const)
        return value ^ (value >> _XSHIFT)

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = _MIX_MULT_L * x - _MIX_MULT_R * y
        return result ^ (result >> _XSHIFT)

    zeros = np.zeros(count, dtype=np.uint32)
    pool = [hashmix(entropy[i] if i < len(entropy) else zeros) for i in range(_POOL_SIZE)]
    for source in range(_POOL_SIZE):
        for target in range(_POOL_SIZE):
            if source != target:
                pool[target] = mix(pool[target], hashmix(pool[source]))
    for source in range(_POOL_SIZE, len(entropy)):
        for target in range(_POOL_SIZE):
            pool[target] = mix(pool[target], hashmix(entropy[source]))
    return pool
