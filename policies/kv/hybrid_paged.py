"""Paged KV for hybrid layouts, with optional prefix caching, as vLLM v1's hybrid KV-cache
manager does it (`paged` and `paged-prefix` on sliding-window, chunked-local and SSM models).

Each unit of layers (`layout.py`) has its own token-indexed block table, all drawn from one
pool: full units keep every block, window units only the blocks from `window_start_block` on
(the ones before slid out of the window and went back to the pool, still cached), and SSM
state takes `fixed_blocks` blocks for the sequence's life. A sequence holding n tokens holds
exactly `layout.blocks_for(n)` blocks, except while it holds speculative tokens: the window
slides by committed tokens only, so a verify that rejects drafts never needs a slid-out block
back (vLLM slides by computed tokens too).

    1 full + 2 window units, block_size 4, sliding window 8 (window units keep 3 blocks),
    a 21-token sequence, blocks 0..5:
    full     [f0][f1][f2][f3][f4][f5]
    window a  --  --  -- [a3][a4][a5]      -- : slid out, in the free queue with its hash
    window b  --  --  -- [b3][b4][b5]

Prefix caching keys a block by (unit, chained block hash), so each unit caches its own copy of
a position. A hit of h blocks needs every full unit to hold blocks 0..h-1 and every window unit
the blocks the window still reads when the next token is computed, from
`window_start_block(h * block_size + 1)` to h-1 (vLLM's rule: a sliding window needs the
ceil((W - 1) / block_size) blocks before the hit, one more when W = 1 mod block_size, as the
layout keeps one for the window's edge; a chunked one the blocks of the current chunk). The
longest hit is found as vLLM's HybridKVCacheCoordinator finds it: full units scan left to right
(a hit there is downward-closed), then window units scan down from that length for a run of
cached blocks long enough.

A prompt prefilled in one step computes KV for positions that slide out of the window at once;
with caching on those blocks are taken, cached and freed in the same call (a real engine holds
them for the step and frees them after it, as vLLM does), so a later request sharing a long
prefix finds window blocks wherever its hit ends. Blocks are taken unit by unit and freed tail
first, position by position across units, so the blocks of one position sit together in the
LRU queue and are evicted together. SSM state is not cached: `paged-prefix` refuses layouts
with fixed blocks (`PagedParams`).
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.fast_forward import GrowsInLockstep
from policies.kv.base import (ForksSequences, KVUsage, LockstepUsage, PrefixCache, ShrinksSlots,
                               blocks_never_fit_reason, kv_tokens_needed)
from policies.kv.block_hashes import block_hashes, extend_block_hashes
from policies.kv.block_pool import BlockPool
from policies.kv.paged import PagedAllocator, PagedParams, PagedPrefixAllocator
from policies.kv.prefix_stats import PrefixHitCounts
from policies.types import Request, Sequence


def make_paged_allocator(params: PagedParams) -> PagedAllocator | HybridPagedAllocator:
    """The `paged` / `paged-prefix` policy: the plain allocator when every layer keeps every
    token (its fast paths assume one block table indexing tokens), this one otherwise; each
    with its prefix-caching subclass when the params enable caching."""
    caching = params.enable_prefix_caching
    if params.layout.is_plain:
        return (PagedPrefixAllocator if caching else PagedAllocator)(params)
    return (HybridPagedPrefixAllocator if caching else HybridPagedAllocator)(params)


@dataclass(slots=True)
class _SeqBlocks:
    """A live sequence's blocks: `tables[u]` is unit u's blocks in token order, from block 0
    for full units and from `window_start` for window units; `num_registered` leading full
    blocks have been offered to the cache."""

    tables: list[list[int]]
    window_start: int
    fixed: list[int]
    num_tokens: int
    num_registered: int
    shared_tail: bool = False  # a fork may share the partly filled last block


class HybridPagedAllocator(GrowsInLockstep, ForksSequences, ShrinksSlots):
    """`paged` on a hybrid layout; `HybridPagedPrefixAllocator` is its `paged-prefix`."""

    def __init__(self, params: PagedParams) -> None:
        if params.enable_prefix_caching != isinstance(self, PrefixCache):
            raise ValueError(f"enable_prefix_caching={params.enable_prefix_caching} does not "
                             f"fit {type(self).__name__}: make_paged_allocator picks the class")
        self.block_size = params.block_size
        self.num_blocks = params.num_blocks
        self.caching = params.enable_prefix_caching
        self.layout = params.layout
        self._num_full = params.layout.full_units
        self._num_units = params.layout.full_units + params.layout.window_units
        self._watermark_blocks = int(params.watermark * params.num_blocks)
        self.pool = BlockPool(params.num_blocks)
        self._seqs: dict[int, _SeqBlocks] = {}
        self._hashes: dict[int, list[int]] = {}
        self._filled_slots = 0  # tokens in owned blocks, each block counted once
        self._copies: list[tuple[int, int, int]] = []
        self.prefix_counts = PrefixHitCounts()

    # ---- queries ------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    def blocks_for(self, num_tokens: int) -> int:
        return self.layout.blocks_for(num_tokens, self.block_size)

    def num_held_blocks(self, seq_id: int) -> int:
        state = self._seqs.get(seq_id)
        if state is None:
            return 0
        return sum(map(len, state.tables)) + len(state.fixed)

    def unit_tables(self, seq_id: int) -> list[list[int | None]]:
        """Each unit's block table indexed by token block, None where a window slid out."""
        state = self._seqs[seq_id]
        return [table if u < self._num_full else [None] * state.window_start + table
                for u, table in enumerate(state.tables)]

    def fixed_blocks(self, seq_id: int) -> list[int]:
        return list(self._seqs[seq_id].fixed)

    def never_fits_reason(self, request: Request) -> str | None:
        return blocks_never_fit_reason(self.blocks_for(kv_tokens_needed(request)),
                                       kv_tokens_needed(request), self.num_blocks,
                                       self._watermark_blocks)

    def _longest_hit(self, hashes: list[int]) -> int:
        """Blocks of the longest prefix of `hashes` that is a hit for every unit."""
        pool, full_units = self.pool, range(self._num_full)
        hit = 0
        while hit < len(hashes) and all(pool.cached((u, hashes[hit])) is not None
                                        for u in full_units):
            hit += 1
        window_units = range(self._num_full, self._num_units)
        if not window_units:
            return hit
        while hit > 0:
            start = self._hit_window_start(hit)
            miss = next((i for i in range(hit - 1, start - 1, -1)
                         if any(pool.cached((u, hashes[i])) is None for u in window_units)), None)
            if miss is None:
                return hit
            hit = miss  # any longer hit would need the missing block too
        return 0

    def _hit_window_start(self, hit_blocks: int) -> int:
        """First block the window units need for a hit of `hit_blocks` blocks: what they keep
        once the next token is computed."""
        return self.layout.window_start_block(hit_blocks * self.block_size + 1, self.block_size)

    def _seq_hashes(self, seq: Sequence, num_tokens: int) -> list[int]:
        hashes = self._hashes.setdefault(seq.seq_id, [])
        extend_block_hashes(hashes, seq.request, self.block_size, num_tokens, seq.sample_index)
        return hashes

    # ---- allocation ---------------------------------------------------------------------
    def allocate_slots(self, seq: Sequence, num_tokens: int, num_cached_tokens: int = 0) -> bool:
        """Room for `num_tokens` tokens of `seq`; all-or-nothing. A sequence holding no blocks
        is being admitted: its first `num_cached_tokens` (a `match_prefix` answer) reuse
        cached blocks, and it must leave the watermark free."""
        state = self._seqs.get(seq.seq_id)
        if state is None:
            return self._admit(seq, num_tokens, num_cached_tokens)
        if self._growth_need(state, num_tokens, seq.num_final_tokens) > self.pool.num_free:
            return False
        self._grow(seq, state, num_tokens, seq.num_final_tokens)
        return True

    def _admit(self, seq: Sequence, num_tokens: int, num_cached_tokens: int) -> bool:
        size, pool = self.block_size, self.pool
        hit = num_cached_tokens // size
        hashes = self._seq_hashes(seq, hit * size) if hit else []
        committed = min(num_tokens, seq.num_final_tokens)
        window_from = 0
        if self._num_full < self._num_units:
            window_from = min(hit, self.layout.window_start_block(committed, size))
        tables = self._cached_tables(hashes, hit, window_from)
        if tables is None:
            raise ValueError(f"{num_cached_tokens} cached tokens claimed for request {seq.seq_id}, "
                             f"but the cache holds a shorter prefix of it")
        state = _SeqBlocks(tables, window_from, [], hit * size, hit)
        reclaimed = sum(pool.is_cached_free(block) for table in tables for block in table)
        need = (reclaimed + self.layout.fixed_blocks
                + self._growth_need(state, num_tokens, seq.num_final_tokens))
        if need > pool.num_free - self._watermark_blocks:
            return False
        for table in tables:
            for block in table:
                if pool.is_cached_free(block):
                    self._filled_slots += size
                pool.hold(block)
        state.fixed = pool.take(self.layout.fixed_blocks)
        self._filled_slots += size * len(state.fixed)
        self._seqs[seq.seq_id] = state
        if self.caching:
            self.prefix_counts.record(num_cached_tokens, seq.num_known_tokens, size)
        self._grow(seq, state, num_tokens, seq.num_final_tokens)
        return True

    def _cached_tables(self, hashes: list[int], hit: int, window_from: int) -> list[list[int]] | None:
        """Each unit's cached blocks for a hit of `hit` blocks (window units' from block
        `window_from`, the first they keep), or None if one is not cached."""
        tables = []
        for u in range(self._num_units):
            table = []
            for index in range(0 if u < self._num_full else window_from, hit):
                block = self.pool.cached((u, hashes[index]))
                if block is None:
                    return None
                table.append(block)
            tables.append(table)
        return tables

    def _window_start(self, state: _SeqBlocks, num_committed: int) -> int:
        if self._num_full == self._num_units:
            return 0
        return max(state.window_start, self.layout.window_start_block(num_committed, self.block_size))

    def _fills_last_block(self, state: _SeqBlocks, num_tokens: int, num_committed: int) -> bool:
        """Whether growing to `num_tokens` only writes into the partly filled last block of
        each unit (most decode steps): no block to take, copy, cache or slide."""
        held = state.num_tokens
        return (0 < num_tokens - held <= -held % self.block_size and not state.shared_tail
                and (not self.caching or num_committed // self.block_size <= state.num_registered)
                and self._window_start(state, num_committed) == state.window_start)

    def _growth_need(self, state: _SeqBlocks, num_tokens: int, num_known: int) -> int:
        """Pool blocks `_grow` would take, net of the slid-out blocks it would free."""
        if self._fills_last_block(state, num_tokens, min(num_tokens, num_known)):
            return 0
        size, pool = self.block_size, self.pool
        held, target = state.num_tokens, max(state.num_tokens, num_tokens)
        end_before, end = -(-held // size), -(-target // size)
        need = self._num_full * (end - end_before)
        copied = self._tail_copies(state, num_tokens)
        need += len(copied)
        window_units = self._num_units - self._num_full
        if window_units:
            start = self._window_start(state, min(num_tokens, num_known))
            need += window_units * (end - max(end_before, start))
            slid = max(0, min(start, end_before) - state.window_start)
            for u in range(self._num_full, self._num_units):
                need -= sum(not pool.is_shared(block) for block in state.tables[u][:slid])
                if slid > 0 and u in copied and end_before - 1 < state.window_start + slid:
                    need -= 1  # the private copy of a shared edge block slides out too
        return need

    def _tail_copies(self, state: _SeqBlocks, num_tokens: int) -> set[int]:
        """Units whose partly filled last block another sequence shares (a fork), when this
        growth would write into it: each needs a private copy first."""
        held = state.num_tokens
        if not state.shared_tail or num_tokens <= held or not held % self.block_size:
            return set()
        return {u for u, table in enumerate(state.tables) if self.pool.is_shared(table[-1])}

    def _grow(self, seq: Sequence, state: _SeqBlocks, num_tokens: int, num_known: int) -> None:
        """Hold `num_tokens` tokens (the caller checked `_growth_need`): copy shared edge
        blocks, cache blocks filled with committed tokens, slide the windows, take new blocks."""
        committed = min(num_tokens, num_known)
        if self._fills_last_block(state, num_tokens, committed):
            self._filled_slots += self._num_units * (num_tokens - state.num_tokens)
            state.num_tokens = num_tokens
            return
        size, pool = self.block_size, self.pool
        held, target = state.num_tokens, max(state.num_tokens, num_tokens)
        end_before, end = -(-held // size), -(-target // size)
        for u in self._tail_copies(state, num_tokens):
            self._copy_tail(state, u)
        if target > held:
            state.shared_tail = False
            if held % size:  # the partly filled last block fills further
                units = self._num_units if end_before - 1 >= state.window_start else self._num_full
                self._filled_slots += units * (min(target, end_before * size) - held)
        full_blocks = committed // size
        self._register(seq, state, state.num_registered, min(full_blocks, end_before))
        start = self._window_start(state, committed)
        self._slide(state, start)
        if self.caching:
            self._cache_passing_blocks(seq, end_before, start, full_blocks)
        new_full = end - end_before
        new_window = end - max(end_before, start)
        for u, table in enumerate(state.tables):
            count = new_full if u < self._num_full else new_window
            if count:
                table.extend(pool.take(count))
        window_units = self._num_units - self._num_full
        self._filled_slots += self._num_full * max(0, target - end_before * size)
        self._filled_slots += window_units * max(0, target - max(end_before, start) * size)
        state.num_tokens = target
        self._register(seq, state, max(state.num_registered, end_before), full_blocks)
        state.num_registered = max(state.num_registered, full_blocks)

    def _copy_tail(self, state: _SeqBlocks, unit: int) -> None:
        """Give this sequence its own copy of unit `unit`'s shared partly filled last block."""
        table = state.tables[unit]
        held_in_block = state.num_tokens % self.block_size
        source = table[-1]
        (copy,) = self.pool.take(1)
        self.pool.release(source)  # another owner keeps it
        table[-1] = copy
        self._filled_slots += held_in_block
        self._copies.append((source, copy, held_in_block))

    def _slide(self, state: _SeqBlocks, start: int) -> None:
        """Free the window blocks before block `start`, oldest position first, into the cache."""
        count = start - state.window_start
        if count <= 0:
            return
        window_tables = state.tables[self._num_full:]
        for offset in range(min(count, len(window_tables[0]))):
            for table in window_tables:
                if self.pool.release(table[offset]):
                    self._filled_slots -= self.block_size
        for table in window_tables:
            del table[:count]
        state.window_start = start

    def _cache_passing_blocks(self, seq: Sequence, first: int, stop: int, num_full: int) -> None:
        """Window blocks `first..stop-1` are computed in this step but out of the window by its
        end: take each, cache it, free it at once (unless its content is cached already)."""
        stop = min(stop, num_full)
        if first >= stop:
            return
        hashes = self._seq_hashes(seq, stop * self.block_size)
        pool = self.pool
        for index in range(first, stop):
            for u in range(self._num_full, self._num_units):
                key = (u, hashes[index])
                if pool.cached(key) is None:
                    (block,) = pool.take(1)
                    pool.register(block, key)
                    pool.release(block)

    def _register(self, seq: Sequence, state: _SeqBlocks, first: int, stop: int) -> None:
        """Cache the held blocks `first..stop-1`, full of committed tokens."""
        if not self.caching or first >= stop:
            return
        hashes = self._seq_hashes(seq, stop * self.block_size)
        for u, table in enumerate(state.tables):
            offset = state.window_start if u >= self._num_full else 0
            for index in range(max(first, offset), stop):
                self.pool.register(table[index - offset], (u, hashes[index]))

    def refork(self, loser: Sequence, donor: Sequence) -> bool:
        """`free(loser)`, then `fork(donor, loser)`."""
        self.free(loser)
        return self.fork(donor, loser)

    def fork(self, parent: Sequence, child: Sequence) -> bool:
        """`child` shares every block `parent` holds by reference (the partly filled last ones
        are copied when either first writes to them); SSM state, which each sample updates in
        place, is copied now. False, with nothing taken, when the copies do not fit."""
        source = self._seqs[parent.seq_id]
        if len(source.fixed) > self.pool.num_free:
            return False
        tables = [list(table) for table in source.tables]
        for table in tables:
            for block in table:
                self.pool.hold(block)
        fixed = self.pool.take(len(source.fixed))
        self._filled_slots += self.block_size * len(fixed)
        self._copies.extend((s, d, self.block_size) for s, d in zip(source.fixed, fixed))
        source.shared_tail = True
        self._seqs[child.seq_id] = _SeqBlocks(tables, source.window_start, fixed, source.num_tokens,
                                              source.num_registered, shared_tail=True)
        if self.caching:
            self._hashes[child.seq_id] = list(self._hashes.get(parent.seq_id, []))
        return True

    def take_copies(self) -> list[tuple[int, int, int]]:
        """Block copies made since the last call, as (source, destination, tokens)."""
        copies, self._copies = self._copies, []
        return copies

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        """Give back the blocks past `num_tokens` (they held rejected drafts, never cached)
        and slide the windows to match; blocks the accepted tokens filled are cached by the
        next growth, or now if the window slides past them."""
        state = self._seqs.get(seq.seq_id)
        if state is None or num_tokens > state.num_tokens:
            return  # (when every draft was accepted the window still slides to match)
        size = self.block_size
        start = self._window_start(state, min(num_tokens, seq.num_known_tokens))
        passed = min(num_tokens // size, start)
        self._register(seq, state, state.num_registered, passed)
        state.num_registered = max(state.num_registered, passed)
        keep = -(-num_tokens // size)
        self._release_tail(state, keep)
        if num_tokens % size:  # the new last block loses the rejected tokens it held
            units = self._num_units if keep - 1 >= state.window_start else self._num_full
            self._filled_slots -= units * (min(state.num_tokens, keep * size) - num_tokens)
        state.num_tokens = num_tokens
        self._slide(state, start)

    def free(self, seq: Sequence) -> None:
        state = self._seqs.pop(seq.seq_id, None)
        if state is None:
            return
        self._hashes.pop(seq.seq_id, None)
        for block in state.fixed:
            if self.pool.release(block):
                self._filled_slots -= self.block_size
        self._release_tail(state, 0)

    def _release_tail(self, state: _SeqBlocks, keep: int) -> None:
        """Drop this sequence's blocks from the last position down to block `keep`, position
        by position across units (so a position's blocks are evicted together)."""
        size, held = self.block_size, state.num_tokens
        for index in range(-(-held // size) - 1, keep - 1, -1):
            fill = min(size, held - index * size)
            for u, table in enumerate(state.tables):
                offset = state.window_start if u >= self._num_full else 0
                if index >= offset and self.pool.release(table[index - offset]):
                    self._filled_slots -= fill
        for u, table in enumerate(state.tables):
            offset = state.window_start if u >= self._num_full else 0
            del table[max(0, keep - offset):]

    def grow_in_lockstep(self, seqs: list[Sequence], num_steps: int) -> LockstepUsage | None:
        """Do what `num_steps` rounds of `allocate_slots(seq, seq.num_known_tokens + round)`
        over `seqs`, in order, would do (the simulator's decode fast-forward), and return the
        usage after each round. None, with nothing changed, when a round would copy a shared
        block or when the rounds need more new blocks than are free now (the blocks windows
        free as they slide are not counted on: the engine then steps one round at a time)."""
        if self._copies:
            return None
        size = self.block_size
        states, new_blocks = [], 0
        for seq in seqs:
            state = self._seqs.get(seq.seq_id)
            held = seq.request.prompt_tokens + seq.num_output_tokens - 1
            if state is None or state.num_tokens != held or self._tail_copies(state, held + 1):
                return None
            crossings = (held + num_steps - 1) // size - (held - 1) // size
            new_blocks += crossings * self._num_units
            states.append(state)
        if new_blocks > self.pool.num_free:
            return None
        reserved, filled, cached = [], [], []
        for round_ in range(num_steps):
            for seq, state in zip(seqs, states):
                known = seq.num_known_tokens + round_
                self._grow(seq, state, known, known)
            usage = self.usage()
            reserved.append(usage.reserved_slots)
            filled.append(usage.filled_slots)
            cached.append(usage.cached_free_slots)
        return LockstepUsage(reserved, filled, cached)

    # ---- accounting ---------------------------------------------------------------------
    def usage(self) -> KVUsage:
        size = self.block_size
        return KVUsage(
            total_slots=self.num_blocks * size,
            reserved_slots=(self.num_blocks - self.pool.num_free) * size,
            filled_slots=self._filled_slots,
            cached_free_slots=self.pool.num_cached_free * size,
        )


class HybridPagedPrefixAllocator(HybridPagedAllocator, PrefixCache):
    """`paged-prefix` on a hybrid layout: each unit caches its blocks (`PagedPrefixParams`)."""

    def match_prefix(self, seq: Sequence) -> int:
        """Leading tokens of `seq` every unit has cached as its layers need them (whole blocks);
        the last known token is always left to compute, since its logits are needed."""
        limit = (seq.num_final_tokens - 1) // self.block_size
        hashes = self._seq_hashes(seq, limit * self.block_size)
        return self._longest_hit(hashes[:limit]) * self.block_size

    def cached_prefix_tokens(self, request: Request) -> int:
        """The same question for a request not on this replica (cache-aware routing)."""
        hashes = block_hashes(request, self.block_size, request.prompt_tokens)
        return self._longest_hit(hashes) * self.block_size

    def stats(self) -> dict[str, int]:
        return self.prefix_counts.stats(self.pool.evictions)
