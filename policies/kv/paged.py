"""PagedAttention's block allocator, with optional automatic prefix caching (`paged-prefix`),
for the plain layout, every layer keeping every token (hybrid layouts: `hybrid_paged.py`).

Blocks are handed out in the order vLLM's free-block queue would: never-used blocks in id
order, then freed blocks in the order they were freed. Blocks are created lazily (a counter
marks the first never-used id), so a pool of millions of blocks costs no memory until used.

    block table of a 37-token sequence, block_size 16:
    [ b0: 16 slots full ][ b1: 16 slots full ][ b2: 5 used, 11 empty ]
                                                 ^ internal fragmentation

With prefix caching, each full block of committed tokens carries a chained content hash
(`block_hashes.py`); blocks are reference counted, so requests with a common prefix share
them. A block whose last owner leaves keeps its hash and joins the free queue's tail: it is
"cached-free", reusable by a later hit until allocation pops it from the queue's head and
evicts its hash (lazy LRU eviction). A sequence frees its blocks tail first, so the blocks
least likely to be shared (the ends of prompts) are evicted first.

    free queue:  head -> [fresh ids ...][b9 (hash)][b4][b7 (hash)] <- tail (newest freed)
                 allocation pops the head; a hit removes a cached block from anywhere

The queue is a deque, so taking and giving back blocks costs a few C calls per sequence. A
hit that takes a cached block out of the middle leaves its entry behind as stale (counted
per block); stale entries always precede a block's live one, so the head skips them. Owner
counts are kept only for shared blocks (`_extra_owners`): a block outside the free queue
has one owner unless listed there, so unshared runs never touch a per-block count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import accumulate, repeat
from dataclasses import dataclass

from policies.kv.base import (KVUsage, LockstepUsage, PoolParams, blocks_never_fit_reason,
                               kv_tokens_needed)
from policies.kv.block_hashes import block_hashes, extend_block_hashes
from policies.types import Request, Sequence


def consume(calls: Iterable[object]) -> None:
    """Run a lazy `map` of calls for their effect, looping in C (bulk evictions)."""
    deque(calls, maxlen=0)


COMPACT_AT_STALE = 1024
"""Stale free-queue entries tolerated before compaction, whatever the queue's length."""


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


class PagedAllocator:
    def __init__(self, params: PagedParams) -> None:
        if not params.layout.is_plain:
            raise ValueError("PagedAllocator keeps one token-indexed block table per sequence; "
                             "a hybrid KV layout needs HybridPagedAllocator (make_paged_allocator)")
        self.block_size = params.block_size
        self.num_blocks = params.num_blocks
        self.caching = params.enable_prefix_caching
        self.layout = params.layout
        self._watermark_blocks = int(params.watermark * params.num_blocks)
        self._next_fresh = 0
        self._free: deque[int] = deque()
        self._stale: dict[int, int] = {}  # per block: entries in `_free` a hit took back
        self._num_stale = 0
        self._extra_owners: dict[int, int] = {}  # owners beyond the first, shared blocks only
        self._block_hash: dict[int, int] = {}
        self._hash_to_block: dict[int, int] = {}
        self._cached_free: set[int] = set()  # hashed blocks in the free queue
        self.block_tables: dict[int, list[int]] = {}
        self._num_tokens: dict[int, int] = {}
        self._hashes: dict[int, list[int]] = {}
        self._num_registered: dict[int, int] = {}
        self._filled_slots = 0
        self._shared_slots = 0  # filled slots counted once per extra owner of a shared block
        self._copies: list[tuple[int, int, int]] = []
        self.hit_tokens = 0
        self.query_tokens = 0
        self.hit_blocks = 0
        self.query_blocks = 0
        self.evictions = 0

    # ---- queries ------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation may take: never used, freed, or cached-free."""
        return self.num_blocks - self._next_fresh + len(self._free) - self._num_stale

    def free_queue(self) -> list[int]:
        """The freed blocks allocation would take after the never-used ids, head first (for
        tests and inspection: this walks the whole queue)."""
        skip = dict(self._stale)
        live = []
        for block in self._free:
            if skip.get(block):
                skip[block] -= 1
            else:
                live.append(block)
        return live

    def blocks_for(self, num_tokens: int) -> int:
        return -(-max(0, num_tokens) // self.block_size)

    def never_fits_reason(self, request: Request) -> str | None:
        return blocks_never_fit_reason(self.blocks_for(kv_tokens_needed(request)),
                                       kv_tokens_needed(request), self.num_blocks,
                                       self._watermark_blocks)

    def match_prefix(self, seq: Sequence) -> int:
        """Tokens of `seq`'s prompt already in the cache (whole blocks); the pool is untouched.

        At least one token is always left to compute, since its logits are needed: a hit on
        every block of a block-aligned prompt gives back the last block.
        """
        if not self.caching:
            return 0
        hits = 0
        for block_hash in self._block_hashes(seq, seq.num_final_tokens):
            if block_hash not in self._hash_to_block:
                break
            hits += 1
        max_blocks = (seq.num_final_tokens - 1) // self.block_size
        return min(hits, max_blocks) * self.block_size

    def cached_prefix_tokens(self, request: Request) -> int:
        """Leading prompt tokens of a request not (yet) on this replica that the cache holds:
        what a cache-aware router asks every replica."""
        if not self.caching:
            return 0
        hits = 0
        for block_hash in block_hashes(request, self.block_size, request.prompt_tokens):
            if block_hash not in self._hash_to_block:
                break
            hits += 1
        return hits * self.block_size

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
            table.extend(self._pop_blocks(missing))
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
        return index if table[index] in self._extra_owners else None

    def _copy_on_write(self, seq_id: int, table: list[int], index: int) -> None:
        """Give `seq_id` its own copy of the shared block at `index` before it writes there."""
        held_in_block = self._num_tokens[seq_id] - index * self.block_size
        source = table[index]
        table[index] = self._pop_block()
        self._drop_extra_owner(source)
        self._shared_slots -= held_in_block
        self._copies.append((source, table[index], held_in_block))

    def fork(self, parent: Sequence, child: Sequence) -> bool:
        """`child` shares every block of `parent` by reference (parallel sampling, beam
        search); the partly filled last block is copied when either first writes to it."""
        table = self.block_tables[parent.seq_id]
        self.block_tables[child.seq_id] = list(table)
        extra = self._extra_owners
        for block in table:
            extra[block] = extra.get(block, 0) + 1
        held = self._num_tokens.get(parent.seq_id, 0)
        self._num_tokens[child.seq_id] = held
        self._filled_slots += held
        self._shared_slots += held
        if self.caching:
            self._hashes[child.seq_id] = list(self._hashes.get(parent.seq_id, []))
            self._num_registered[child.seq_id] = self._num_registered.get(parent.seq_id, 0)
        return True

    def take_copies(self) -> list[tuple[int, int, int]]:
        """Block copies made since the last call, as (source, destination, tokens)."""
        copies, self._copies = self._copies, []
        return copies

    def _admit(self, seq: Sequence, num_tokens: int, num_cached_tokens: int) -> bool:
        hit_blocks = num_cached_tokens // self.block_size
        hashes = self._block_hashes(seq, num_cached_tokens) if self.caching else []
        cached = [self._hash_to_block[h] for h in hashes[:hit_blocks]]
        reclaimed = sum(1 for b in cached if b in self._cached_free)
        new_blocks = self.blocks_for(num_tokens) - hit_blocks
        if new_blocks + reclaimed > self.num_free_blocks - self._watermark_blocks:
            return False
        for block in cached:
            if block in self._cached_free:  # reclaimed: its queue entry goes stale
                self._cached_free.remove(block)
                self._stale[block] = self._stale.get(block, 0) + 1
                self._num_stale += 1
                if self._num_stale > max(COMPACT_AT_STALE, len(self._free) // 2):
                    self._compact_free_queue()
            else:
                self._extra_owners[block] = self._extra_owners.get(block, 0) + 1
                self._shared_slots += self.block_size
        table = cached + self._pop_blocks(new_blocks)
        self.block_tables[seq.seq_id] = table
        if self.caching:
            self.hit_tokens += num_cached_tokens
            self.query_tokens += seq.num_known_tokens
            self.hit_blocks += hit_blocks
            self.query_blocks += seq.num_known_tokens // self.block_size
            self._num_registered[seq.seq_id] = hit_blocks
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
        hashes = self._block_hashes(seq, num_full * self.block_size)
        for i in range(done, num_full):
            block = table[i]
            if block in self._block_hash or hashes[i] in self._hash_to_block:
                continue  # already cached, or the same content lives in another block
            self._block_hash[block] = hashes[i]
            self._hash_to_block[hashes[i]] = block
        self._num_registered[seq.seq_id] = num_full

    def grow_in_lockstep(self, seqs: list[Sequence], num_steps: int) -> LockstepUsage | None:
        """Do at once what `num_steps` rounds of `allocate_slots(seq, seq.num_known_tokens +
        round)` over `seqs`, in order, would do (every sequence decoding one token a step,
        the simulator's decode fast-forward), and return the usage after each round. None,
        with nothing changed, when a round could not be served or would copy a shared block.

        Only the rounds where something happens cost work: a sequence takes a new block when
        its tokens cross a block boundary and, with prefix caching, registers a block when it
        fills one; those events run in the order the rounds would run them, so block ids,
        hashes and evictions come out exactly as step by step.
        """
        if self._copies:
            return None  # pending copies belong to the next step's plan
        size = self.block_size
        held_tokens, tables, extra_owners = self._num_tokens, self.block_tables, self._extra_owners
        shared = self._shared_slots > 0  # else no block has a second owner
        events: list[tuple[int, int, int]] = []  # (round, sequence order, 0 new block / 1 register)
        for order, seq in enumerate(seqs):
            held = held_tokens.get(seq.seq_id, -1)
            if held != seq.request.prompt_tokens + seq.num_output_tokens - 1:
                return None  # holds no blocks, or not exactly its known tokens but the last
            # Round r asks for held + 1 + r tokens: a new block when held + r is a multiple
            # of the block size, a full block to register when held + 1 + r is.
            first_new = -held % size
            if first_new and shared and tables[seq.seq_id][held // size] in extra_owners:
                return None  # round 0 would copy a shared partial block first
            if first_new < num_steps:
                events.append((first_new, order, 0))  # usually the only one (steps < size)
                if first_new + size < num_steps:
                    events.extend(zip(range(first_new + size, num_steps, size), repeat(order), repeat(0)))
            if self.caching:
                first_full = (-held - 1) % size
                if first_full < num_steps:
                    events.extend(zip(range(first_full, num_steps, size), repeat(order), repeat(1)))
        new_blocks = [0] * num_steps
        for round_, _, kind in events:
            new_blocks[round_] += 1 - kind
        if sum(new_blocks) > self.num_free_blocks:
            return None
        events.sort()
        evictions = [0] * num_steps
        for round_, order, kind in events:
            seq = seqs[order]
            table = tables[seq.seq_id]
            if kind == 0:
                before = self.evictions
                table.append(self._pop_block())
                evictions[round_] += self.evictions - before
            else:
                self._register_full_blocks(seq, table, (seq.num_known_tokens + round_) // size)
        for seq in seqs:
            held_tokens[seq.seq_id] += num_steps
        first_filled = self._filled_slots - self._shared_slots + len(seqs)
        self._filled_slots += len(seqs) * num_steps
        used_before = (self.num_blocks - self.num_free_blocks) * size - sum(new_blocks) * size
        cached_before = (len(self._cached_free) + sum(evictions)) * size
        return LockstepUsage(
            [used_before + size * n for n in accumulate(new_blocks)],
            list(range(first_filled, first_filled + len(seqs) * num_steps, len(seqs))),
            [cached_before - size * n for n in accumulate(evictions)],
        )

    def _pop_blocks(self, count: int) -> list[int]:
        """`count` blocks from the free queue's head, as `_pop_block` takes them."""
        fresh = min(count, self.num_blocks - self._next_fresh)
        blocks = list(range(self._next_fresh, self._next_fresh + fresh))
        self._next_fresh += fresh
        if count > fresh:
            if self._num_stale:
                reused = [self._pop_freed() for _ in range(count - fresh)]
            else:
                reused = list(map(deque.popleft, repeat(self._free, count - fresh)))
            if self._block_hash:
                consume(map(self._evict, reused))
            blocks += reused
        return blocks

    def _pop_block(self) -> int:
        """The free queue's head (never-used ids first) with one owner; a cached-free block
        loses its hash (it is evicted)."""
        if self._next_fresh < self.num_blocks:
            block = self._next_fresh
            self._next_fresh += 1
        else:
            block = self._pop_freed()
            if self._block_hash:
                self._evict(block)
        return block

    def _compact_free_queue(self) -> None:
        """Drop the stale entries (once they are half the queue, so the cost is amortized):
        hits that keep reclaiming cached blocks while allocation seldom reaches the queue's
        head would otherwise grow it without bound."""
        self._free = deque(self.free_queue())
        self._stale.clear()
        self._num_stale = 0

    def _pop_freed(self) -> int:
        """The oldest freed block still free, skipping entries a prefix hit took back."""
        free_queue, stale = self._free, self._stale
        while True:
            block = free_queue.popleft()
            left = stale.get(block)
            if not left:
                return block
            self._num_stale -= 1
            if left == 1:
                del stale[block]
            else:
                stale[block] = left - 1

    def _evict(self, block: int) -> None:
        """A cached-free block taken for new content loses its hash."""
        evicted = self._block_hash.pop(block, None)
        if evicted is not None:
            del self._hash_to_block[evicted]
            self._cached_free.remove(block)
            self.evictions += 1

    def _set_filled(self, seq_id: int, num_tokens: int) -> None:
        previous = self._num_tokens.get(seq_id, 0)
        if num_tokens > previous:
            self._num_tokens[seq_id] = num_tokens
            self._filled_slots += num_tokens - previous

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        """Give back the blocks past `num_tokens` (they held only rejected drafts, which were
        never hashed: `_register_hashes` stops at the known tokens), tail first as in `free`."""
        table = self.block_tables.get(seq.seq_id)
        previous = self._num_tokens.get(seq.seq_id, 0)
        if table is None or num_tokens >= previous:
            return
        self._num_tokens[seq.seq_id] = num_tokens
        self._filled_slots -= previous - num_tokens
        keep = self.blocks_for(num_tokens)
        self._release_tail(table, previous, keep)
        del table[keep:]

    def free(self, seq: Sequence) -> None:
        table = self.block_tables.pop(seq.seq_id, None)
        if table is None:
            return
        held = self._num_tokens.pop(seq.seq_id, 0)
        self._release_tail(table, held, 0)  # tail first: evicted before the shared head
        self._filled_slots -= held
        self._hashes.pop(seq.seq_id, None)
        self._num_registered.pop(seq.seq_id, None)

    def _tokens_in_block(self, num_tokens: int, index: int) -> int:
        """Tokens of a `num_tokens`-token sequence in its block `index`."""
        return max(0, min(self.block_size, num_tokens - index * self.block_size))

    def _release_tail(self, table: list[int], num_tokens: int, keep: int) -> None:
        """Drop one owner of each block of `table` (a `num_tokens`-token sequence's) from the
        last down to index `keep`; a block left with none joins the free queue's tail (still
        cached if it carries a hash)."""
        free_queue, hashed = self._free, self._block_hash
        if not self._shared_slots:  # every block has one owner: release them in bulk
            tail = table[keep:] if keep else table
            free_queue.extend(reversed(tail))
            if hashed:
                self._cached_free.update(block for block in tail if block in hashed)
            return
        extra_owners = self._extra_owners
        for index in range(len(table) - 1, keep - 1, -1):
            block = table[index]
            if block in extra_owners:
                self._drop_extra_owner(block)
                self._shared_slots -= self._tokens_in_block(num_tokens, index)
            else:
                free_queue.append(block)
                if block in hashed:
                    self._cached_free.add(block)

    def _drop_extra_owner(self, block: int) -> None:
        owners = self._extra_owners[block]
        if owners == 1:
            del self._extra_owners[block]
        else:
            self._extra_owners[block] = owners - 1

    def owners(self, block: int) -> int:
        """How many sequences hold `block` (0: free or never used); for tests and
        inspection, as it walks the free queue."""
        if block >= self._next_fresh or block in self.free_queue():
            return 0
        return 1 + self._extra_owners.get(block, 0)

    # ---- accounting ---------------------------------------------------------------------
    def usage(self) -> KVUsage:
        used_blocks = self.num_blocks - self.num_free_blocks
        return KVUsage(
            total_slots=self.num_blocks * self.block_size,
            reserved_slots=used_blocks * self.block_size,
            filled_slots=self._filled_slots - self._shared_slots,
            cached_free_slots=len(self._cached_free) * self.block_size,
        )

    def stats(self) -> dict[str, int]:
        return {
            "prefix_hit_tokens": self.hit_tokens,
            "prefix_query_tokens": self.query_tokens,
            "prefix_hit_blocks": self.hit_blocks,
            "prefix_query_blocks": self.query_blocks,
            "evictions": self.evictions,
        }
