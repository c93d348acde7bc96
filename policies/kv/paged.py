"""PagedAttention's block allocator, with optional automatic prefix caching (`paged-prefix`),
for the plain layout, every layer keeping every token (hybrid layouts: `hybrid_paged.py`).

The allocator keeps each sequence's block table, prefix hashes, copy-on-write and forks, as
vLLM v1's KVCacheManager does; the blocks themselves (free queue, owner counts, the hash ->
block cache) live in a `BlockPool` (`block_pool.py`), handed out in the order vLLM's
free-block queue would: never-used blocks in id order, then freed blocks oldest first.

    block table of a 37-token sequence, block_size 16:
    [ b0: 16 slots full ][ b1: 16 slots full ][ b2: 5 used, 11 empty ]
                                                 ^ internal fragmentation

With prefix caching, each full block of committed tokens carries a chained content hash
(`block_hashes.py`); blocks are reference counted, so requests with a common prefix share
them. A block whose last owner leaves keeps its hash: it is cached-free, reusable by a later
hit until allocation reaches it in the pool's LRU queue and evicts it. A sequence frees its
blocks tail first, so the blocks least likely to be shared (the ends of prompts) are evicted
first.

A length-only request with one sample (`_caches_own_run`: no token ids, no trace hash ids)
shares no content: its keys are private to it, so only it can hit its blocks again, after a
recompute preemption. Such a request is cached as its own run, `_own_runs[request_id][index]`
= block, with no hash computed or looked up; an entry is live while the pool still holds the
block cached for that (request, index) (`BlockPool.own_key_of`), so eviction needs no update
here. While the sequence runs, the blocks it fills past its run are only counted; they join
the run, and the pool learns their keys, in one go when it frees them (`_close_own_run`).
Hits, evictions, the free queue's order and every count come out as with hashes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import attrgetter

from policies.fast_forward import GrowsForVerifies, GrowsInLockstep, VerifyRunKV
from policies.kv.base import (ForksSequences, KVUsage, LockstepUsage, PageTableAllocator,
                               PoolParams, PrefixCache, ShrinksSlots, blocks_never_fit_reason,
                               kv_tokens_needed)
from policies.kv.block_hashes import extend_block_hashes, iter_block_hashes
from policies.kv.block_pool import BlockPool
from policies.kv.prefix_stats import PrefixHitCounts
from policies.types import Request, SeqStatus, Sequence


@dataclass(frozen=True, slots=True)
class PagedParams(PoolParams):
    enable_prefix_caching: bool = False

    def __post_init__(self) -> None:
        PoolParams.__post_init__(self)
        if self.enable_prefix_caching and self.layout.fixed_blocks:
            raise ValueError(
                "paged-prefix caches attention KV only; this model's SSM layers keep a "
                "recurrent state a prefix hit cannot restore (use --allocator paged)"
            )


@dataclass(frozen=True, slots=True)
class PagedPrefixParams(PagedParams):
    enable_prefix_caching: bool = True


class PagedAllocator(GrowsInLockstep, GrowsForVerifies, ForksSequences, ShrinksSlots,
                     PageTableAllocator):
    """`paged`; `PagedPrefixAllocator` is `paged-prefix` (`make_paged_allocator` picks)."""

    registers_verified_blocks = True  # `grow_in_lockstep` registers them, or declines

    def __init__(self, params: PagedParams) -> None:
        if not params.layout.is_plain:
            raise ValueError("PagedAllocator keeps one token-indexed block table per sequence; "
                             "a hybrid KV layout needs HybridPagedAllocator (make_paged_allocator)")
        if params.enable_prefix_caching != isinstance(self, PrefixCache):
            raise ValueError(f"enable_prefix_caching={params.enable_prefix_caching} does not "
                             f"fit {type(self).__name__}: make_paged_allocator picks the class")
        self.block_size = params.block_size
        self.page_size = params.block_size
        self.num_blocks = params.num_blocks
        self.caching = params.enable_prefix_caching
        self.layout = params.layout
        self._watermark_blocks = int(params.watermark * params.num_blocks)
        self.pool = BlockPool(params.num_blocks)
        self.block_tables: dict[int, list[int]] = {}
        self._num_tokens: dict[int, int] = {}
        self._hashes: dict[int, list[int]] = {}
        self._num_registered: dict[int, int] = {}
        self._own_runs: dict[int, list[int]] = {}  # request id -> block cached for each index
        self._ordered_registrations: set[int] = set()
        """Live caching sequences whose registrations a lockstep growth must interleave with
        its takes: hashed ones (a take may evict another copy of what they register) and own
        runs still holding an earlier admission's copies past what they registered."""
        self._filled_slots = 0
        self._shared_slots = 0  # filled slots counted once per extra owner of a shared block
        self._copies: list[tuple[int, int, int]] = []
        self.prefix_counts = PrefixHitCounts()

    # ---- queries ------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation may take: never used, freed, or cached-free."""
        return self.pool.num_free

    def page_table(self, seq_id: int) -> list[int]:
        """The real backend's view of a sequence's KV: its block table (pages of `page_size`)."""
        return self.block_tables[seq_id]

    def blocks_for(self, num_tokens: int) -> int:
        return -(-max(0, num_tokens) // self.block_size)

    def never_fits_reason(self, request: Request) -> str | None:
        return blocks_never_fit_reason(self.blocks_for(kv_tokens_needed(request)),
                                       kv_tokens_needed(request), self.num_blocks,
                                       self._watermark_blocks)

    @staticmethod
    def _caches_own_run(request: Request) -> bool:
        """Whether `request`'s blocks are cached as its own run: the trace gives only its
        lengths, so every block key is private to it, and its one sample is the only
        sequence that can hit them."""
        return (request.prompt_token_ids is None and not request.prefix_block_hashes
                and request.n == 1 and not request.beam)

    def _own_cached_prefix(self, request_id: int, max_blocks: int) -> list[int]:
        """The leading blocks (at most `max_blocks`) of request `request_id`'s own run that
        the pool still holds cached for it."""
        table = self.block_tables.get(request_id)
        if table is not None:  # running: the blocks it filled join its run first
            self._close_own_run(request_id, table, finished=False)
        run = self._own_runs.get(request_id)
        if run is None:
            return []
        own_key_of = self.pool.own_key_of
        cached = []
        for index, block in enumerate(run[:max_blocks]):
            if own_key_of(block) != (request_id, index):
                break
            cached.append(block)
        return cached

    def _block_hashes(self, seq: Sequence, num_tokens: int) -> list[int]:
        """Hashes of `seq`'s full blocks among its first `num_tokens` committed tokens."""
        hashes = self._hashes.setdefault(seq.seq_id, [])
        extend_block_hashes(hashes, seq.request, self.block_size, num_tokens, seq.sample_index)
        return hashes

    # ---- allocation ---------------------------------------------------------------------
    def allocate_slots(self, seq: Sequence, num_tokens: int, num_cached_tokens: int = 0) -> bool:
        """Room for `num_tokens` tokens of `seq`; all-or-nothing.

        A sequence holding no blocks is being admitted: its first `num_cached_tokens` (from
        `match_prefix`, block-aligned) reuse cached blocks, and it must leave the watermark free.
        """
        seq_id = seq.seq_id
        table = self.block_tables.get(seq_id)
        if table is None:
            return self._admit(seq, num_tokens, num_cached_tokens)
        shared_tail = self._shared_tail(seq_id, table, num_tokens)
        missing = max(0, self.blocks_for(num_tokens) - len(table))
        if missing + (shared_tail is not None) > self.num_free_blocks:
            return False
        if shared_tail is not None:
            self._copy_on_write(seq_id, table, shared_tail)
        if missing:
            table.extend(self.pool.take(missing))
        self._register_hashes(seq, table, num_tokens)
        self._set_filled(seq_id, num_tokens)
        return True

    def _shared_tail(self, seq_id: int, table: list[int], num_tokens: int) -> int | None:
        """Index of the partly filled block this growth would write into, if another sequence
        shares it (a forked sample's last prompt block); None when no copy is needed."""
        held = self._num_tokens.get(seq_id, 0)
        index = held // self.block_size
        if num_tokens <= held or held % self.block_size == 0 or index >= len(table):
            return None
        return index if self.pool.is_shared(table[index]) else None

    def _copy_on_write(self, seq_id: int, table: list[int], index: int) -> None:
        """Give `seq_id` its own copy of the shared block at `index` before it writes there."""
        held_in_block = self._num_tokens[seq_id] - index * self.block_size
        source = table[index]
        table[index] = self.pool.take_one()
        self.pool.release(source)  # another owner keeps it
        self._shared_slots -= held_in_block
        self._copies.append((source, table[index], held_in_block))

    def fork(self, parent: Sequence, child: Sequence) -> bool:
        """`child` shares every block of `parent` by reference (parallel sampling, beam
        search); the partly filled last block is copied when either first writes to it."""
        self._share_table(parent, child, 0)
        return True

    def _share_table(self, parent: Sequence, child: Sequence, num_held: int) -> None:
        """`child` gets a copy of `parent`'s block table and counts, and becomes one more
        owner of each block past the first `num_held` (which it holds already)."""
        table = self.block_tables[parent.seq_id]
        self.block_tables[child.seq_id] = list(table)
        for block in table[num_held:]:
            self.pool.hold(block)
        held = self._num_tokens.get(parent.seq_id, 0)
        self._num_tokens[child.seq_id] = held
        self._filled_slots += held
        self._shared_slots += held
        if self.caching:
            self._hashes[child.seq_id] = list(self._hashes.get(parent.seq_id, []))
            self._num_registered[child.seq_id] = self._num_registered.get(parent.seq_id, 0)
            self._ordered_registrations.add(child.seq_id)

    def refork(self, loser: Sequence, donor: Sequence) -> bool:
        """`free(loser)` then `fork(donor, loser)`, leaving alone the leading blocks the two
        tables share (beams share their prompt and most of their past; only the last few
        blocks differ). The two calls would drop one owner of each and give it back, and
        none reaches the free queue (the donor holds it), so only the loser's other blocks
        are released (tail first, as `free`) and the donor's other blocks held. Step by
        step beam search over 1,000-token prompts spent most of its time in those calls."""
        table = self.block_tables.get(loser.seq_id)
        donor_table = self.block_tables.get(donor.seq_id)
        num_shared = 0
        if (self._shared_slots and table is not None and donor_table is not None
                and not (self.caching and self._caches_own_run(loser.request))):
            num_shared = min(len(table), len(donor_table))
            while num_shared and table[num_shared - 1] != donor_table[num_shared - 1]:
                num_shared -= 1
        if not num_shared or table[:num_shared] != donor_table[:num_shared]:
            self.free(loser)
            return self.fork(donor, loser)
        del self.block_tables[loser.seq_id]
        self._drop_table(loser.seq_id, table, num_shared)
        self._share_table(donor, loser, num_shared)
        return True

    def take_copies(self) -> list[tuple[int, int, int]]:
        """Block copies made since the last call, as (source, destination, tokens)."""
        copies, self._copies = self._copies, []
        return copies

    def _admit(self, seq: Sequence, num_tokens: int, num_cached_tokens: int) -> bool:
        pool = self.pool
        hit_blocks = num_cached_tokens // self.block_size
        own_run = self.caching and self._caches_own_run(seq.request)
        if own_run:
            found = self._own_cached_prefix(seq.request.request_id, hit_blocks)
            cached: list[int | None] = [*found, *[None] * (hit_blocks - len(found))]
        else:
            hashes = self._block_hashes(seq, num_cached_tokens) if self.caching else []
            cached = [pool.cached(h) for h in hashes[:hit_blocks]]
        if None in cached:
            raise ValueError(f"{num_cached_tokens} cached tokens claimed for request "
                             f"{seq.seq_id}, but the cache holds a shorter prefix of it")
        reclaimed = sum(map(pool.is_cached_free, cached))
        new_blocks = self.blocks_for(num_tokens) - hit_blocks
        if new_blocks + reclaimed > pool.num_free - self._watermark_blocks:
            return False
        for block in cached:
            if not pool.is_cached_free(block):  # owned: now shared
                self._shared_slots += self.block_size
            pool.hold(block)
        table = cached + pool.take(new_blocks)
        self.block_tables[seq.seq_id] = table
        if self.caching:
            self.prefix_counts.record(num_cached_tokens, seq.num_known_tokens, self.block_size)
            self._num_registered[seq.seq_id] = hit_blocks
            if not own_run or hit_blocks < len(self._own_runs.get(seq.request.request_id, ())):
                self._ordered_registrations.add(seq.seq_id)
            self._register_hashes(seq, table, num_tokens)
        self._set_filled(seq.seq_id, num_tokens)
        return True

    def _register_hashes(self, seq: Sequence, table: list[int], num_tokens: int) -> None:
        """Cache the blocks this allocation fills with committed tokens (their KV is computed
        this step); slots beyond the known tokens (speculative ones) are never cached."""
        if self.caching:
            self._register_full_blocks(seq, table, min(num_tokens, seq.num_final_tokens) // self.block_size)

    def _register_full_blocks(self, seq: Sequence, table: list[int], num_full: int) -> None:
        done = self._num_registered.get(seq.seq_id, 0)
        if num_full <= done:
            return
        if self._caches_own_run(seq.request):
            run = self._own_runs.get(seq.request.request_id)
            if run is not None and done < len(run):
                self._register_over_run(seq.request.request_id, run, table, done, num_full)
            # past the run: nothing to decide now, `_close_own_run` registers them
        else:
            hashes = self._block_hashes(seq, num_full * self.block_size)
            self.pool.register_many(table[done:num_full], hashes[done:num_full])
        self._num_registered[seq.seq_id] = num_full

    def _register_over_run(self, request_id: int, run: list[int], table: list[int], done: int,
                           num_full: int) -> None:
        """`register_many` for a request cached as its own run (its one sequence's id is the
        request id), for the indices from `done` to `num_full` that an earlier admission's
        run covers: where that copy is still cached it stays the cached one (as with
        hashes), else `table`'s block takes its place. Decided now, since a take may evict
        that copy before the sequence is freed."""
        index = done
        while index < min(num_full, len(run)):
            if self.pool.own_key_of(run[index]) != (request_id, index):
                run[index] = table[index]
                self.pool.register_own([table[index]], request_id, index)
            index += 1
        if index == len(run):
            self._ordered_registrations.discard(request_id)

    def _close_own_run(self, request_id: int, table: list[int], finished: bool) -> None:
        """Register, in one go, the blocks of `table` (request `request_id`'s, cached as its
        own run) registered past its run; the run keeps them unless the request `finished`."""
        run = self._own_runs.pop(request_id, [])
        start, registered = len(run), self._num_registered.get(request_id, 0)
        if registered > start:
            blocks = table[start:registered]
            self.pool.register_own(blocks, request_id, start)
            run += blocks
        if not finished:
            self._own_runs[request_id] = run

    def grow_in_lockstep(self, seqs: list[Sequence], num_steps: int) -> LockstepUsage | None:
        """Do at once what `num_steps` rounds of `allocate_slots(seq, seq.num_known_tokens +
        round)` over `seqs`, in order, would do (every sequence decoding one token a step,
        the simulator's decode fast-forward), and return the usage after each round. None,
        with nothing changed, when a round could not be served or would copy a shared block.

        Only the rounds where something happens cost work: a sequence takes a new block when
        its tokens cross a block boundary and, with prefix caching, registers a block when it
        fills one; those events run in the order the rounds would run them, so block ids,
        hashes and evictions come out exactly as step by step. Where no take can evict what a
        later round registers (`_registers_after_takes`), every take comes first, in one go.
        """
        if self._copies:
            return None  # pending copies belong to the next step's plan
        if not self.caching:
            return self._grow_uncached_in_lockstep(seqs, num_steps)
        size, pool = self.block_size, self.pool
        held_tokens, tables = self._num_tokens, self.block_tables
        shared = self._shared_slots > 0  # else no block has a second owner
        num_registered = self._num_registered
        takes_first = self._registers_after_takes(seqs)
        events: list[tuple[int, int, int]] = []  # (round, sequence order, 0 new block / 1 register)
        fills: list[tuple[Sequence, int]] = []  # with takes first: (sequence, full blocks after)
        for order, seq in enumerate(seqs):
            held = held_tokens.get(seq.seq_id, -1)
            if held != seq.request.prompt_tokens + seq.num_output_tokens - 1:
                return None  # holds no blocks, or not exactly its known tokens but the last
            # Round r asks for held + 1 + r tokens: a new block when held + r is a multiple
            # of the block size, a full block to register when held + 1 + r is.
            first_new = -held % size
            if first_new and shared and pool.is_shared(tables[seq.seq_id][held // size]):
                return None  # round 0 would copy a shared partial block first
            if first_new < num_steps:
                events.append((first_new, order, 0))  # usually the only one (steps < size)
                if first_new + size < num_steps:
                    events.extend(zip(range(first_new + size, num_steps, size), repeat(order), repeat(0)))
            num_full = (held + num_steps) // size
            if num_registered.get(seq.seq_id, 0) >= num_full:
                continue
            if takes_first:
                fills.append((seq, num_full))
            elif num_registered.get(seq.seq_id, 0) < held // size and (held + 1) % size:
                return None  # full blocks left unregistered (a verify's accepted tokens)
            else:
                first_full = (-held - 1) % size
                events.extend(zip(range(first_full, num_steps, size), repeat(order), repeat(1)))
        reserved = [0] * num_steps  # slots each round reserves anew (then, below, in all)
        for round_, _, kind in events:
            if not kind:
                reserved[round_] += size
        num_new_blocks = sum(reserved) // size
        if num_new_blocks > pool.num_free:
            return None
        events.sort()
        evictions = [0] * num_steps
        if takes_first:
            self._take_in_rounds(seqs, events, evictions)
            for seq, num_full in fills:
                self._register_full_blocks(seq, tables[seq.seq_id], num_full)
        else:
            for round_, order, kind in events:
                seq = seqs[order]
                table = tables[seq.seq_id]
                if kind == 0:
                    before = pool.evictions
                    table.append(pool.take_one())
                    evictions[round_] += pool.evictions - before
                else:
                    self._register_full_blocks(seq, table, (seq.num_known_tokens + round_) // size)
        for seq in seqs:
            held_tokens[seq.seq_id] += num_steps
        first_filled = self._filled_slots - self._shared_slots + len(seqs)
        self._filled_slots += len(seqs) * num_steps
        reserved[0] += (self.num_blocks - pool.num_free - num_new_blocks) * size  # used before
        cached_before = (pool.num_cached_free + sum(evictions)) * size
        return LockstepUsage(
            list(accumulate(reserved)),
            list(range(first_filled, first_filled + len(seqs) * num_steps, len(seqs))),
            [cached_before - size * n for n in accumulate(evictions)],
        )

    def _grow_uncached_in_lockstep(self, seqs: list[Sequence],
                                   num_steps: int) -> LockstepUsage | None:
        """`grow_in_lockstep` without prefix caching: no block carries a key, so no take
        evicts and one take serves the whole run, its blocks handed out in the order the
        rounds would take them (by round, then by sequence). Each sequence's held count
        moves on in the same pass that finds its takes (put back if the growth declines)."""
        size, pool = self.block_size, self.pool
        held_tokens, tables = self._num_tokens, self.block_tables
        shared = self._shared_slots > 0  # else no block has a second owner
        takes: list[tuple[int, int]] = []  # (round, sequence order) of each new block
        for order, seq in enumerate(seqs):
            seq_id = seq.seq_id
            held = held_tokens.get(seq_id, -1)
            first_new = -held % size  # round r asks for held + 1 + r tokens: see above
            if held != seq.request.prompt_tokens + seq.num_output_tokens - 1 or (
                    first_new and shared and pool.is_shared(tables[seq_id][held // size])):
                # it holds no blocks, or not exactly its known tokens but the last; or
                # round 0 would copy a shared partial block first
                self._put_back_held(seqs[:order], num_steps)
                return None
            held_tokens[seq_id] = held + num_steps
            if first_new < num_steps:
                takes.append((first_new, order))  # usually the only one (steps < size)
                if first_new + size < num_steps:
                    takes.extend(zip(range(first_new + size, num_steps, size), repeat(order)))
        num_free = pool.num_free
        if len(takes) > num_free:
            self._put_back_held(seqs, num_steps)
            return None
        reserved = [0] * num_steps  # slots each round reserves anew (then, below, in all)
        reserved[0] = (self.num_blocks - num_free) * size  # used before
        if takes:  # a few blocks a run, in one take, handed out by round, then sequence
            takes.sort()
            for (round_, order), block in zip(takes, pool.take(len(takes))):
                tables[seqs[order].seq_id].append(block)
                reserved[round_] += size
        num_seqs = len(seqs)
        first_filled = self._filled_slots - self._shared_slots + num_seqs
        self._filled_slots += num_seqs * num_steps
        return LockstepUsage(
            list(accumulate(reserved)),
            list(range(first_filled, first_filled + num_seqs * num_steps, num_seqs)),
            [pool.num_cached_free * size] * num_steps,
        )

    def _put_back_held(self, seqs: list[Sequence], num_steps: int) -> None:
        """Undo a declined lockstep growth's moves of `seqs`' held counts."""
        for seq in seqs:
            self._num_tokens[seq.seq_id] -= num_steps

    def _registers_after_takes(self, seqs: list[Sequence]) -> bool:
        """Whether a lockstep growth of `seqs` may take all its blocks before registering any:
        none of them registers in an order a take could change (`_ordered_registrations`)."""
        ordered = self._ordered_registrations
        return not ordered or ordered.isdisjoint([seq.seq_id for seq in seqs])

    def _take_in_rounds(self, seqs: list[Sequence], events: list[tuple[int, int, int]],
                        evictions: list[int]) -> None:
        """Append to `seqs`' tables the blocks of `events` (new-block events, in order) in
        one take, counting into `evictions` what each round evicted."""
        blocks, evicted = self.pool.take_reporting(len(events))
        tables = self.block_tables
        for (_, order, _), block in zip(events, blocks):
            tables[seqs[order].seq_id].append(block)
        if evicted:
            for (round_, _, _), block in zip(events, blocks):
                evictions[round_] += block in evicted

    def grow_for_verifies(self, seqs: list[Sequence], num_tokens: list[int]) -> bool:
        """One speculative step's growth (the speculative fast-forward): every sequence's
        decode slot, then every sequence's draft slots up to `num_tokens`, as the inner
        scheduler and the speculative wrapper allocate them, in order (so block ids, hashes
        and evictions come out as step by step); False, with nothing changed, when the pool
        cannot serve all of it or a shared block would be copied."""
        if self._copies:
            return False
        size, pool, tables, held_tokens = self.block_size, self.pool, self.block_tables, self._num_tokens
        shared = self._shared_slots > 0  # else no block has a second owner
        caching = self.caching
        decode_takes: list[tuple[Sequence, list[int], int]] = []  # every row when caching
        draft_takes: list[tuple[list[int], int]] = []
        seq_ids = []
        missing = held_in_all = 0
        for seq, total in zip(seqs, num_tokens):
            seq_id = seq.seq_id
            table = tables.get(seq_id)
            held = held_tokens.get(seq_id)
            # `num_known_tokens` spelled out: every row of every step asks it
            known = seq.request.prompt_tokens + seq.num_output_tokens + seq.num_block_tokens
            if table is None or held != seq.num_computed_tokens or total < known:
                return False  # holds no blocks, or not exactly its computed tokens; or shrinks
            if shared and held % size and pool.is_shared(table[held // size]):
                return False  # the first write would copy a shared partial block
            held_in_all += held
            seq_ids.append(seq_id)
            if not caching and total <= len(table) * size:
                continue  # its blocks hold the step (most steps): nothing to take or register
            num_blocks = len(table)
            decode_blocks = max(0, -(-known // size) - num_blocks)
            draft_blocks = max(0, -(-total // size) - num_blocks - decode_blocks)
            if decode_blocks or caching:
                decode_takes.append((seq, table, decode_blocks))
            if draft_blocks:
                draft_takes.append((table, draft_blocks))
            missing += decode_blocks + draft_blocks
        if missing and missing > pool.num_free:
            return False
        # What those `allocate_slots` calls do, less their checks: no copy, no failure.
        # (A step takes a block or two: one at a time, as `take` would hand them out.)
        for seq, table, decode_blocks in decode_takes:
            for _ in range(decode_blocks):
                table.append(pool.take_one())
            if caching:
                self._register_hashes(seq, table, seq.num_known_tokens)
        for table, draft_blocks in draft_takes:
            for _ in range(draft_blocks):
                table.append(pool.take_one())
        held_tokens.update(zip(seq_ids, num_tokens))
        self._filled_slots += sum(num_tokens) - held_in_all
        return True

    def verify_run(self, seqs: list[Sequence]) -> PagedVerifyRun:
        """A speculative run's growth and give-back of batch `seqs` (`GrowsForVerifies`)."""
        return PagedVerifyRun(self, seqs)

    def _set_filled(self, seq_id: int, num_tokens: int) -> None:
        previous = self._num_tokens.get(seq_id, 0)
        if num_tokens > previous:
            self._num_tokens[seq_id] = num_tokens
            self._filled_slots += num_tokens - previous

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        """Give back the blocks past `num_tokens` (they held only rejected drafts, which were
        never hashed: `_register_hashes` stops at the known tokens), tail first as in `free`."""
        self._shrink_each((seq,), (num_tokens,))

    def shrink_to_computed(self, seqs: list[Sequence]) -> None:
        """`shrink_slots` of each sequence to its computed tokens, in order, in one loop (a
        call per verify costs about 0.15 s over the Azure conv trace)."""
        self._shrink_each(seqs, [seq.num_computed_tokens for seq in seqs])

    def _shrink_each(self, seqs: Iterable[Sequence], num_tokens: Iterable[int]) -> None:
        """`shrink_slots(seqs[i], num_tokens[i])` for each i, in order."""
        tables, held_tokens, size = self.block_tables, self._num_tokens, self.block_size
        released = 0
        for seq, keep_tokens in zip(seqs, num_tokens):
            seq_id = seq.seq_id
            table = tables.get(seq_id)
            previous = held_tokens.get(seq_id, 0)
            if table is None or keep_tokens >= previous:
                continue
            held_tokens[seq_id] = keep_tokens
            released += previous - keep_tokens
            keep = -(-keep_tokens // size)  # `blocks_for`: keep_tokens >= 0 here
            if keep < len(table):
                self._release_tail(table, previous, keep)
                del table[keep:]
        self._filled_slots -= released

    def free(self, seq: Sequence) -> None:
        table = self.block_tables.pop(seq.seq_id, None)
        if table is None:
            return
        if self.caching and self._caches_own_run(seq.request):
            self._close_own_run(seq.seq_id, table, seq.status is SeqStatus.FINISHED)
        self._drop_table(seq.seq_id, table, 0)

    def _drop_table(self, seq_id: int, table: list[int], num_kept: int) -> None:
        """Forget sequence `seq_id`, whose `table` left `block_tables`: release its blocks
        from the last down to index `num_kept` (tail first: evicted before the shared head)
        and its counts. The first `num_kept` blocks keep this owner (`refork` gives each to
        a copy that holds it already)."""
        held = self._num_tokens.pop(seq_id, 0)
        self._release_tail(table, held, num_kept)
        # the kept blocks' count, as releasing them would subtract (another holder keeps each)
        self._shared_slots -= min(held, num_kept * self.block_size)
        self._filled_slots -= held
        self._hashes.pop(seq_id, None)
        self._num_registered.pop(seq_id, None)
        self._ordered_registrations.discard(seq_id)

    def _tokens_in_block(self, num_tokens: int, index: int) -> int:
        """Tokens of a `num_tokens`-token sequence in its block `index`."""
        return max(0, min(self.block_size, num_tokens - index * self.block_size))

    def _release_tail(self, table: list[int], num_tokens: int, keep: int) -> None:
        """Drop one owner of each block of `table` (a `num_tokens`-token sequence's) from the
        last down to index `keep`; a block left with none joins the free queue's tail (still
        cached if it carries a hash)."""
        if not self._shared_slots:  # every block has one owner: release them in bulk
            self.pool.release_many(table[keep:][::-1])
            return
        for index in range(len(table) - 1, keep - 1, -1):
            if not self.pool.release(table[index]):  # another sequence still holds it
                self._shared_slots -= self._tokens_in_block(num_tokens, index)

    # ---- accounting ---------------------------------------------------------------------
    def usage(self) -> KVUsage:
        size, pool = self.block_size, self.pool
        # positional: every step logs one
        return KVUsage(self.num_blocks * size, (self.num_blocks - pool.num_free) * size,
                       self._filled_slots - self._shared_slots, pool.num_cached_free * size)


class PagedPrefixAllocator(PagedAllocator, PrefixCache):
    """`paged-prefix`: the paged allocator with automatic prefix caching (`PagedPrefixParams`)."""

    def match_prefix(self, seq: Sequence) -> int:
        """Tokens of `seq`'s prompt already in the cache (whole blocks); the pool is untouched.

        At least one token is always left to compute, since its logits are needed: a hit on
        every block of a block-aligned prompt gives back the last block.
        """
        size = self.block_size
        max_blocks = (seq.num_final_tokens - 1) // size
        if self._caches_own_run(seq.request):
            return len(self._own_cached_prefix(seq.request.request_id, max_blocks)) * size
        hits = 0
        for block_hash in self._block_hashes(seq, seq.num_final_tokens):
            if self.pool.cached(block_hash) is None:
                break
            hits += 1
        return min(hits, max_blocks) * size

    def cached_prefix_tokens(self, request: Request) -> int:
        """Leading prompt tokens of a request not (yet) on this replica that the cache holds:
        what a cache-aware router asks every replica."""
        if self._caches_own_run(request):
            num_blocks = request.prompt_tokens // self.block_size
            return len(self._own_cached_prefix(request.request_id, num_blocks)) * self.block_size
        hits = 0
        for block_hash in iter_block_hashes(request, self.block_size, request.prompt_tokens):
            if self.pool.cached(block_hash) is None:
                break
            hits += 1
        return hits * self.block_size

    def stats(self) -> dict[str, int]:
        return self.prefix_counts.stats(self.pool.evictions)


_computed_tokens = attrgetter("num_computed_tokens")
_new_tuple = tuple.__new__


class PagedVerifyRun(VerifyRunKV):
    """A speculative run's KV over a `PagedAllocator`. Its first step is grown and shrunk by
    the allocator's methods, checks and all, unless the rows already hold exactly their
    computed tokens in exactly the blocks they need, each knowing one more token (it
    decodes): the methods leave them so, and so does every commit after. Without prefix
    caching or shared blocks, a step then only finds the rows whose blocks do not hold its
    verify and takes blocks for those (every decode slot's, then every draft slot's, in row
    order, as the method takes them), and its commit gives back blocks on those rows only
    (any other row's verify fit the blocks its computed tokens need); the pool's occupancy
    follows from the rows' sums, and the allocator learns what each row holds when a row
    finishes or the run ends. A step the pool cannot serve goes to the method, which
    refuses it."""

    __slots__ = ("_allocator", "_seqs", "_seq_ids", "_tables", "_num_tokens", "_grown",
                 "_computed", "_computed_in_all", "_held_unsaid")

    def __init__(self, allocator: PagedAllocator, seqs: list[Sequence]) -> None:
        self._allocator = allocator
        self._seqs = seqs
        self._seq_ids = [seq.seq_id for seq in seqs]
        self._tables: list[list[int]] | None = None
        """The rows' block tables once the rows were found as the methods leave them (a
        table is only ever shrunk in place); None till then."""
        self._num_tokens: list[int] | None = None
        """The tokens each row holds since this step's growth, when it was not the method's
        (its commit then shrinks by the method too)."""
        self._grown: list[tuple[list[int], int, int, Sequence]] = []
        """This step's rows that took blocks: (table, decode blocks, draft blocks, sequence)."""
        self._computed: list[int] | None = None
        """Each row's computed tokens (each holds as many slots) between steps, once a
        commit shrank the whole batch."""
        self._computed_in_all = 0
        self._held_unsaid = False
        """Whether the allocator's held tokens of the rows are still those before
        `_computed` (`_say_held` brings them up to date)."""
        if not (allocator.caching or allocator._shared_slots or allocator._copies):
            self._start_light()

    def _start_light(self) -> None:
        """Where every row already holds exactly its computed tokens in exactly the blocks
        they need, and knows one more (the first commit of the methods would leave that),
        the first step goes without the methods too."""
        allocator, size = self._allocator, self._allocator.block_size
        tables, held_tokens = allocator.block_tables, allocator._num_tokens
        computed = list(map(_computed_tokens, self._seqs))
        row_tables = []
        for seq, held in zip(self._seqs, computed):
            table = tables.get(seq.seq_id)
            if (table is None or held_tokens.get(seq.seq_id) != held
                    or len(table) != -(-held // size) or seq.num_uncomputed_tokens != 1):
                return
            row_tables.append(table)
        self._tables, self._computed, self._computed_in_all = row_tables, computed, sum(computed)

    def grow(self, num_tokens: list[int]) -> bool:
        allocator, tables, computed = self._allocator, self._tables, self._computed
        if tables is None or computed is None or allocator.caching or allocator._shared_slots:
            return self._grow_by_method(num_tokens)
        size = allocator.block_size
        grown = []
        missing = 0
        for held, table, total, seq in zip(computed, tables, num_tokens, self._seqs):
            num_blocks = len(table)
            if total > num_blocks * size:  # a third of a step's rows
                # its blocks hold just its computed tokens; the token it knows past them
                # opens a block when they fill theirs
                decode_blocks = 0 if held % size else 1
                draft_blocks = -(-total // size) - num_blocks - decode_blocks
                grown.append((table, decode_blocks, draft_blocks, seq))
                missing += decode_blocks + draft_blocks
        if grown:
            pool = allocator.pool
            if missing > pool.num_free:
                return self._grow_by_method(num_tokens)  # refuses it
            take_one = pool.take_one
            for table, decode_blocks, _, _ in grown:
                if decode_blocks:
                    table.append(take_one())
            for table, _, draft_blocks, _ in grown:
                for _ in range(draft_blocks):
                    table.append(take_one())
        allocator._filled_slots += sum(num_tokens) - self._computed_in_all
        self._num_tokens = num_tokens
        self._grown = grown
        return True

    def _grow_by_method(self, num_tokens: list[int]) -> bool:
        self._say_held()
        self._num_tokens = None
        return self._allocator.grow_for_verifies(self._seqs, num_tokens)

    def shrink_to_computed(self, seqs: list[Sequence]) -> None:
        allocator = self._allocator
        num_tokens = self._num_tokens
        whole = seqs is self._seqs
        self._computed = None
        if num_tokens is None:  # grown by the method
            allocator.shrink_to_computed(seqs)
            if whole:  # no finish (a finish ends the run)
                tables = allocator.block_tables
                self._tables = [tables[seq_id] for seq_id in self._seq_ids]
                self._computed = list(map(_computed_tokens, seqs))
                self._computed_in_all = sum(self._computed)
            return
        computed = list(map(_computed_tokens, seqs))
        grown = self._grown
        if whole:
            allocator._filled_slots -= sum(num_tokens) - sum(computed)
            self._computed = computed
            self._computed_in_all = sum(computed)
            self._held_unsaid = True
        else:  # the rows up to a finish (which frees its blocks), then the rest after it
            first = self._seqs.index(seqs[0])
            last = first + len(seqs)
            allocator._num_tokens.update(zip(self._seq_ids[first:last], computed))
            allocator._filled_slots -= sum(num_tokens[first:last]) - sum(computed)
            self._held_unsaid = False  # the stretches of this commit say every row's
            grown = [row for row in grown if row[3] in seqs]
        size, pool = allocator.block_size, allocator.pool
        for table, _, _, seq in grown:
            keep = -(-seq.num_computed_tokens // size)
            if keep < len(table):
                pool.release_many(table[keep:][::-1])  # tail first, as `_release_tail`
                del table[keep:]

    def computed_tokens(self) -> list[int] | None:
        return self._computed

    def usage(self) -> KVUsage:
        allocator = self._allocator
        if self._num_tokens is None:  # grown by the method
            return allocator.usage()
        # `PagedAllocator.usage` with no shared or cached block, the named tuple made
        # without its Python-level constructor (every step logs one)
        size, num_blocks = allocator.block_size, allocator.num_blocks
        return _new_tuple(KVUsage, (num_blocks * size,
                                    (num_blocks - allocator.pool.num_free) * size,
                                    allocator._filled_slots, 0))

    def end(self) -> None:
        self._say_held()

    def _say_held(self) -> None:
        """The allocator's held tokens of each row, its computed tokens."""
        if self._held_unsaid:
            self._allocator._num_tokens.update(zip(self._seq_ids, self._computed))
            self._held_unsaid = False
