"""A radix-tree prefix cache over single-token KV slots (`radix`, SGLang's RadixAttention).

The pool is `num_blocks x block_size` token slots handed out one token at a time (SGLang's
page size 1): `block_size` only sets the unit the pool and the swap space are counted in, so
`radix` and `paged-prefix` compare at the same bytes. Every committed token's KV lives in a
tree whose edges are runs of token keys (`token_keys.py`); the path from the root to a node
is the prefix its KV was computed for, so a lookup hits to the exact token, not to a block.

    root
     +- [sys prompt: 0..511]  ref 2        <- shared by two running requests
     |    +- [user A: 512..700]  ref 1
     |    +- [user B: 512..640]  ref 1
     +- [other: 0..99]  ref 0, leaf        <- cached-free: evictable, LRU first

A node's `ref_count` is the number of live sequences whose path runs through it. A node with
no references has no referenced descendant either (a path through a child runs through its
parent), so every unreferenced node can be evicted, leaves first: the cached-free count is
exactly the slots of unreferenced nodes (plus the window KV below), and eviction can free all
of it.

Eviction takes candidates least recently used first (a logical clock stamps a path when a
sequence locks or releases it; a parent whose last child goes becomes a leaf in its turn) and
frees what the allocation needs, trimming the last leaf from its tail. SGLang frees whole
leaves; under memory pressure that throws away a preempted sequence's whole prompt to make
room for one decode token (its leaf is often the only evictable one), while a trim keeps its
head for its own hit on readmission, as `paged-prefix`'s tail-first free does.

Committed tokens are inserted as they are allocated, not only on finish: SGLang inserts a
request's prefill when its chunk is done and its outputs when it finishes, and the simulator
computes a step's KV within the step, so a request admitted a step later hits what a running
one computed (as with `paged-prefix`). Output tokens have keys private to their request, which
it hits again after a recompute preemption. Slots beyond the known tokens (speculative ones)
stay private to the sequence and are never cached. When an inserted run turns out to be in the
tree already, the sequence adopts the tree's slots and frees its own copies, as SGLang does.

Hybrid layouts (`layout.py`), as SGLang's SWARadixCache does for sliding-window models: a
token takes `full_units` slots for the full-attention layers and, while a window still reads
it, `window_units` slots for the window layers. A node keeps its window KV for a suffix of its
tokens (`window_from` on); a live sequence pins, on each node its window reaches, the first
token it reads (windows slide by committed tokens, as in `hybrid_paged.py`), and window KV no
pin covers is evictable, from the node's front, even while the node's full KV is in use:

    node [0 ............................ 2047]   full KV: every token
             window KV:      [1224 ....... 2047]   pinned from 1500 by a sequence;
                             ^ window_from         1224..1499 evictable

A hit of L tokens needs the full KV of the path and the window KV of the tokens the window
reads when token L is computed (`window_start_token(L + 1)` to L - 1), so hits stop where
evicted window KV would be read. A prefill's tokens that leave the window within the step keep
their window KV in the tree where the pool has room (the newest first), as vLLM caches the
blocks it computes before they slide out. SSM state is not cached: layouts with fixed blocks
are refused.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Hashable, Iterator

from policies.fast_forward import GrowsInLockstep
from policies.kv.base import (ForksSequences, KVUsage, LockstepUsage, PoolParams, PrefixCache,
                               ShrinksSlots, kv_tokens_needed)
from policies.kv.prefix_stats import PrefixHitCounts
from policies.kv.slot_pool import (SlotCounter, SlotPool, append_extent, extend_extents,
                                   pop_head_extents, pop_tail_extents, split_extents)
from policies.kv.token_keys import (KeyRun, append_run, common_length, drop_tail_runs,
                                    extend_key_runs, split_runs, token_key_runs)
from policies.types import Request, Sequence

COMPACT_HEAP_AT = 1024
"""Heap entries tolerated beyond twice the live nodes before stale ones are dropped."""


@dataclass(frozen=True, slots=True)
class RadixParams(PoolParams):
    track_slot_ids: bool = False
    """Whether the pool records which slot holds each token's KV (`slot_table`, the slot ids
    of fork copies), as an executor that reads KV needs. The simulator reads counts only,
    so by default the pool counts (`SlotCounter`): the same counts, tree and evictions,
    without moving millions of fragment extents."""

    def __post_init__(self) -> None:
        PoolParams.__post_init__(self)
        if self.layout.fixed_blocks:
            raise ValueError(
                "radix caches attention KV only; this model's SSM layers keep a recurrent "
                "state a prefix hit cannot restore (use --allocator paged)"
            )


@dataclass(slots=True, eq=False)
class RadixNode:
    """The KV of `num_tokens` consecutive tokens: their keys (`runs`), full-attention slots
    (`slots`, full_units per token) and window slots (`window_slots`, window_units per token,
    for the tokens from `window_from` on), all in token order. `parent` is None for the root
    and for evicted nodes. `pins` maps each live sequence whose window reaches this node to
    the first of its tokens that window reads, `min_pin` is the smallest (when there are
    any); `evictable_slots` is what eviction could free here, `queued_access` the stamp of
    its newest eviction candidate entry."""

    runs: list[KeyRun]
    slots: list[range]
    num_tokens: int
    parent: RadixNode | None
    node_id: int
    ref_count: int = 0
    last_access: int = 0
    children: dict[Hashable, RadixNode] = field(default_factory=dict)
    window_slots: list[range] = field(default_factory=list)
    window_from: int = 0
    pins: dict[int, int] = field(default_factory=dict)
    min_pin: int = 0
    evictable_slots: int = 0
    queued_access: int = -1


@dataclass(slots=True)
class _SeqSlots:
    """A live sequence: positions below `num_cached_tokens` are the tree path ending at `node`;
    positions up to `num_held_tokens` sit in `private` slots, and from `private_window_from` on
    in `private_window` slots too. Its window reads positions from `window_start` on."""

    node: RadixNode
    num_cached_tokens: int
    num_held_tokens: int
    private: list[range] = field(default_factory=list)
    private_window: list[range] = field(default_factory=list)
    private_window_from: int = 0
    window_start: int = 0


def _match_edge(edge: list[KeyRun], query: list[KeyRun], qi: int, q_skip: int) -> tuple[int, int, int]:
    """Keys `edge` shares with `query` from run `qi`, token `q_skip` on, and where the query
    cursor ends: (matched tokens, qi, q_skip)."""
    matched = ei = e_skip = 0
    while ei < len(edge) and qi < len(query):
        room = min(len(edge[ei]) - e_skip, len(query[qi]) - q_skip)
        same = common_length(edge[ei], e_skip, query[qi], q_skip)
        matched += same
        if same < room:
            break
        e_skip += same
        q_skip += same
        if e_skip == len(edge[ei]):
            ei, e_skip = ei + 1, 0
        if q_skip == len(query[qi]):
            qi, q_skip = qi + 1, 0
    return matched, qi, q_skip


class RadixAllocator(GrowsInLockstep, PrefixCache, ForksSequences, ShrinksSlots):
    registers_verified_blocks = True
    """`grow_in_lockstep` declines unless every token a sequence holds is in the tree (a
    verify's accepted tokens that `allocate_slots` would insert first are not), so it may grow
    a chunked step's decodes in place of `allocate_slots`."""

    def __init__(self, params: RadixParams) -> None:
        self.block_size = params.block_size
        self.num_blocks = params.num_blocks
        self.layout = params.layout
        self._full = params.layout.full_units
        self._window = params.layout.window_units
        num_slots = params.num_blocks * params.block_size
        self.pool = SlotPool(num_slots) if params.track_slot_ids else SlotCounter(num_slots)
        self._watermark_slots = int(params.watermark * params.num_blocks) * params.block_size
        self.root = RadixNode([], [], 0, None, 0)
        self._num_nodes_made = 1
        self._num_live_nodes = 0
        self._clock = 0
        self._evictable_slots = 0
        self._candidates: list[tuple[int, int, RadixNode]] = []  # heap, stale entries skipped
        self._seqs: dict[int, _SeqSlots] = {}
        self._copies: list[tuple[int, int, int]] = []
        self.prefix_counts = PrefixHitCounts()
        self.evicted_slots = 0

    # ---- queries ------------------------------------------------------------------------
    @property
    def evictable_slots(self) -> int:
        """Slots eviction can free: those of unreferenced nodes (leaves first) and the window
        KV no live window reads."""
        return self._evictable_slots

    def blocks_for(self, num_tokens: int) -> int:
        return self.layout.blocks_for(num_tokens, self.block_size)

    def never_fits_reason(self, request: Request) -> str | None:
        tokens = kv_tokens_needed(request)
        need = self._full * tokens + self._window * min(tokens, self.layout.window_tokens)
        if need > self.pool.num_slots - self._watermark_slots:
            return (
                f"needs {need} KV slots but the whole pool has {self.pool.num_slots}"
                + (f" ({self._watermark_slots} kept free as watermark)" if self._watermark_slots else "")
            )
        return None

    def match_prefix(self, seq: Sequence) -> int:
        """Leading committed tokens of `seq` in the tree, to the token, without side effects;
        the last known token is always left to compute, since its logits are needed."""
        limit = seq.num_final_tokens - 1
        if limit <= 0:
            return 0
        return self._window_hit(*self._walk(token_key_runs(seq.request, 0, limit, seq.sample_index)))

    def cached_prefix_tokens(self, request: Request) -> int:
        """Leading prompt tokens of a request not on this replica that the tree holds (what a
        cache-aware router asks every replica)."""
        return self._window_hit(*self._walk(token_key_runs(request, 0, request.prompt_tokens)))

    def _walk(self, query: list[KeyRun]) -> tuple[list[tuple[RadixNode, int]], int]:
        """The nodes along the longest cached prefix of `query` with the tokens matched in
        each (only the last may match partly), and the total matched."""
        steps: list[tuple[RadixNode, int]] = []
        node, matched, qi, q_skip = self.root, 0, 0, 0
        while qi < len(query):
            child = node.children.get(query[qi].first_key(q_skip))
            if child is None:
                break
            same, qi, q_skip = _match_edge(child.runs, query, qi, q_skip)
            steps.append((child, same))
            matched += same
            if same < child.num_tokens:
                break
            node = child
        return steps, matched

    def _window_hit(self, steps: list[tuple[RadixNode, int]], matched: int) -> int:
        """The longest prefix of the `matched` path tokens whose window KV the window layers
        read, for the next token, is all there: each node lacks it for its first
        `window_from` tokens (a gap), and a hit stops before a gap the window reaches."""
        if not self._window:
            return matched
        gaps, start = [], 0
        for node, same in steps:
            if node.window_from:
                gaps.append((start, start + min(node.window_from, same)))
            start += same
        hit, chunk = matched, self.layout.window_tokens
        for gap_start, gap_end in reversed(gaps):
            if min(gap_end, hit) <= self.layout.window_start_token(hit + 1):
                return hit  # the window starts after this gap, so after every earlier one
            if self.layout.chunked and hit // chunk * chunk > gap_start:
                return hit // chunk * chunk  # a chunk starts here: its window reads nothing
            hit = gap_start
        return hit

    def slot_table(self, seq: Sequence) -> list[int]:
        """The slot of each of `seq`'s held tokens, in position order (what attention reads;
        full-attention slots, so for the plain layout only); only with `track_slot_ids`."""
        if not isinstance(self.pool, SlotPool):
            raise ValueError("radix tracks no slot ids unless RadixParams(track_slot_ids=True)")
        state = self._seqs[seq.seq_id]
        path = []
        node = state.node
        while node is not self.root:
            path.append(node)
            node = node.parent
        extents = [e for n in reversed(path) for e in n.slots] + state.private
        return [slot for extent in extents for slot in extent]

    def nodes(self) -> Iterator[RadixNode]:
        """Every node of the tree but the root, parents before children."""
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    # ---- allocation ---------------------------------------------------------------------
    def allocate_slots(self, seq: Sequence, num_tokens: int, num_cached_tokens: int = 0) -> bool:
        """Room for `num_tokens` tokens of `seq`; all-or-nothing. A sequence holding nothing is
        being admitted: its first `num_cached_tokens` (a `match_prefix` answer) reuse the tree's
        KV, and it must leave the watermark free."""
        state = self._seqs.get(seq.seq_id)
        if state is None:
            return self._admit(seq, num_tokens, num_cached_tokens)
        window_start = self._window_start(state, min(num_tokens, seq.num_known_tokens))
        need = self._private_need(state.num_held_tokens, num_tokens, window_start)
        gain = self._slide_gain(seq.seq_id, state, window_start)
        if need > self.pool.num_free + self._evictable_slots + gain:
            return False
        self._slide(seq.seq_id, state, window_start)
        self._extend(seq, state, num_tokens)
        return True

    def grow_in_lockstep(self, seqs: list[Sequence], num_steps: int) -> LockstepUsage | None:
        """Do at once what `num_steps` rounds of `allocate_slots(seq, seq.num_known_tokens +
        round)` over `seqs`, in order, would do, and return the usage after each round; None,
        with nothing changed, when a round could not be served, the layout has window layers,
        or a sequence's tokens would not simply extend its own leaf.

        Each sequence then only takes slots and extends its leaf, which no other sequence
        reads and eviction never picks: so what the rounds would evict can be evicted first,
        in one go (in the same order: the least recently used candidates are the same
        throughout), the batch's slots taken at once and cut into one piece a sequence, and
        each sequence's tokens appended to its leaf at once, stamped with the clock its last
        round would give it. Counts, the tree, stamps and evictions come out as round by
        round; only which free slot ids each sequence holds may differ, which nothing in a
        simulation reads.
        """
        if self._window or self._copies or not num_steps:
            return None
        states = []
        for seq in seqs:
            state = self._seqs.get(seq.seq_id)
            held = seq.num_known_tokens - 1
            if (state is None or state.num_held_tokens != held or state.num_cached_tokens != held
                    or state.private):
                return None
            node = state.node
            if node is self.root or node.ref_count != 1 or node.children:
                return None  # the first round would start a new leaf: step it
            states.append(state)
        per_round = self._full * len(seqs)
        free, evictable = self.pool.num_free, self._evictable_slots
        if per_round * num_steps > free + evictable:
            return None
        shortfall = per_round * num_steps - free
        if shortfall > 0:
            self._evict(shortfall)  # what the rounds' takes would evict, in one go
        stamp = self._clock + (num_steps - 1) * len(seqs)  # the last round's, before its first
        pieces = split_extents(self.pool.take(per_round * num_steps), self._full * num_steps)
        for seq, state, slots in zip(seqs, states, pieces):
            # what `_insert` does for tokens that extend the sequence's own referenced leaf:
            # no walk (it has no children), its evictable count stays 0, nothing to queue
            stamp += 1
            node, held = state.node, state.num_held_tokens
            extend_key_runs(node.runs, seq.request, held, held + num_steps, seq.sample_index)
            extend_extents(node.slots, slots)
            node.num_tokens += num_steps
            node.last_access = stamp
            held += num_steps
            state.num_held_tokens = state.num_cached_tokens = state.private_window_from = held
        self._clock = stamp
        # after round r the batch holds per_round * r more slots, taken from the free ones
        # while they last (the first `unevicted` rounds), then from the cached-free ones
        held_slots = self.pool.num_slots - free - evictable
        reserved = list(range(held_slots + per_round, held_slots + per_round * num_steps + 1,
                              per_round))
        unevicted = min(num_steps, free // per_round)
        cached_free = [evictable] * unevicted + list(range(
            evictable + free - per_round * (unevicted + 1),
            evictable + free - per_round * num_steps - 1, -per_round))
        return LockstepUsage(reserved_slots=reserved, filled_slots=list(reserved),
                             cached_free_slots=cached_free)

    def _window_start(self, state: _SeqSlots, num_committed: int) -> int:
        if not self._window:
            return 0
        return max(state.window_start, self.layout.window_start_token(num_committed))

    def _private_need(self, num_held: int, num_tokens: int, window_start: int) -> int:
        """Slots growing from `num_held` to `num_tokens` tokens takes: full units for each new
        token, window units for those the window reads."""
        if num_tokens <= num_held:
            return 0
        return (self._full * (num_tokens - num_held)
                + self._window * (num_tokens - max(num_held, window_start)))

    def _admit(self, seq: Sequence, num_tokens: int, num_cached_tokens: int) -> bool:
        steps, matched = [], 0
        if num_cached_tokens:
            query = token_key_runs(seq.request, 0, num_cached_tokens, seq.sample_index)
            steps, matched = self._walk(query)
        if matched != num_cached_tokens or self._window_hit(steps, matched) != matched:
            window = " with the window KV a hit needs" if matched == num_cached_tokens else ""
            raise ValueError(f"{num_cached_tokens} cached tokens claimed for request "
                             f"{seq.seq_id}, but the tree holds {matched} of its prefix{window}")
        committed = min(num_tokens, seq.num_final_tokens)
        window_start = self.layout.window_start_token(committed) if self._window else 0
        reclaimed = self._reclaimed(steps, window_start)
        need = self._private_need(num_cached_tokens, num_tokens, window_start)
        room = self.pool.num_free + self._evictable_slots - self._watermark_slots
        if need + reclaimed > room:
            return False
        self._clock += 1
        node = self.root
        for child, same in steps:
            if same < child.num_tokens:
                child = self._split(child, same)
            self._lock(child)
            node = child
        state = _SeqSlots(node, num_cached_tokens, num_cached_tokens,
                          private_window_from=num_cached_tokens, window_start=window_start)
        self._seqs[seq.seq_id] = state
        self._pin(seq.seq_id, state, 0)
        self.prefix_counts.record(num_cached_tokens, seq.num_known_tokens, self.block_size)
        self._extend(seq, state, num_tokens)
        return True

    def _reclaimed(self, steps: list[tuple[RadixNode, int]], window_start: int) -> int:
        """Evictable slots that locking the matched path, and pinning it from `window_start`,
        takes out of the cache."""
        reclaimed, start = 0, 0
        for node, same in steps:
            needed = self._window_read_from(node)
            before = self._evictable_in(node, same, node.ref_count > 0, needed)
            if start + same > window_start:
                needed = min(needed, max(0, window_start - start))
            reclaimed += before - self._evictable_in(node, same, True, needed)
            start += same
        return reclaimed

    def _evictable_in(self, node: RadixNode, num_tokens: int, referenced: bool, needed_from: int) -> int:
        """Evictable slots among `node`'s first `num_tokens` tokens, referenced or not, when
        live windows read its window KV from token `needed_from` on."""
        full = 0 if referenced else self._full * num_tokens
        return full + self._window * max(0, min(needed_from, num_tokens) - node.window_from)

    def _extend(self, seq: Sequence, state: _SeqSlots, num_tokens: int) -> None:
        """Take private slots for tokens up to `num_tokens` (the caller checked the room) and
        move the committed ones into the tree, pinning what the window reads."""
        held = state.num_held_tokens
        if num_tokens > held:
            extend_extents(state.private, self._take(self._full * (num_tokens - held)))
            if self._window:
                self._take_private_window(state, num_tokens)
            state.num_held_tokens = num_tokens
        cached_before = state.num_cached_tokens
        self._insert(seq, state, min(num_tokens, seq.num_final_tokens))
        if self._window and state.num_cached_tokens > cached_before:
            self._pin(seq.seq_id, state, cached_before)

    def _take(self, num_slots: int) -> list[range]:
        shortfall = num_slots - self.pool.num_free
        if shortfall > 0:
            self._evict(shortfall)
        return self.pool.take(num_slots)

    def _take_private_window(self, state: _SeqSlots, num_tokens: int) -> None:
        """Window slots for the new tokens the window reads, and, where the pool has room, for
        the ones a long prefill computes past the window (the newest first: they stay in the
        tree, cached, as vLLM caches blocks it computed before they slide out)."""
        held, window_from = state.num_held_tokens, max(state.num_held_tokens, state.window_start)
        new = self._take(self._window * (num_tokens - window_from))
        passing = window_from - held
        if passing:
            room = (self.pool.num_free + self._evictable_slots) // self._window
            kept = min(passing, room)
            if kept < passing:  # older private window KV would not join the new: drop it
                self.pool.give(state.private_window)
                state.private_window = []
                state.private_window_from = window_from - kept
            extend_extents(state.private_window, self._take(self._window * kept))
        extend_extents(state.private_window, new)

    def _insert(self, seq: Sequence, state: _SeqSlots, num_committed: int) -> None:
        """Move `seq`'s committed tokens from its private slots into the tree."""
        pos = state.num_cached_tokens
        if num_committed <= pos:
            return
        query = token_key_runs(seq.request, pos, num_committed, seq.sample_index)
        self._clock += 1
        node, qi, q_skip = state.node, 0, 0
        while qi < len(query):
            child = node.children.get(query[qi].first_key(q_skip))
            if child is None:
                break
            same, qi, q_skip = _match_edge(child.runs, query, qi, q_skip)
            if same < child.num_tokens:
                child = self._split(child, same)
            self._lock(child)
            duplicates = pop_head_extents(state.private, self._full * same)
            self.pool.give(duplicates)
            if self._window:
                self._adopt_window(state, child, pos)
            node, pos = child, pos + same
        if pos < num_committed:
            runs = [query[qi].sliced(q_skip, len(query[qi]))] + query[qi + 1:]
            count = num_committed - pos
            slots = self._pop_private(state, pos, count)
            window_from, window_slots = self._private_window_of(state, pos, num_committed)
            contiguous = not window_from or node.window_from == node.num_tokens
            if node is not self.root and node.ref_count == 1 and not node.children and contiguous:
                for run in runs:  # only this sequence reads `node`: grow it in place
                    append_run(node.runs, run)
                extend_extents(node.slots, slots)
                if node.window_from == node.num_tokens:
                    node.window_from += window_from
                extend_extents(node.window_slots, window_slots)
                node.num_tokens += count
                node.last_access = self._clock
                self._refresh(node)
            else:
                leaf = RadixNode(runs, slots, count, node, self._new_node_id(), ref_count=1,
                                 last_access=self._clock, window_slots=window_slots,
                                 window_from=window_from)
                node.children[runs[0].first_key()] = leaf
                node = leaf
        state.node, state.num_cached_tokens = node, num_committed

    def _pop_private(self, state: _SeqSlots, start: int, num_tokens: int) -> list[range]:
        """Take the full-attention slots of positions `start..start + num_tokens - 1` out of
        `state`, whose private slots begin at `start`: usually all of them, so the list itself
        changes hands."""
        if start + num_tokens == state.num_held_tokens:
            slots, state.private = state.private, []
            return slots
        return pop_head_extents(state.private, self._full * num_tokens)

    def _private_window_of(self, state: _SeqSlots, start: int, stop: int) -> tuple[int, list[range]]:
        """Take the private window slots of positions `start..stop-1` out of `state`: (offset
        from `start` of the first one covered, their slots)."""
        first = max(start, state.private_window_from)
        if first >= stop:
            return stop - start, []
        slots = pop_head_extents(state.private_window, self._window * (stop - first))
        state.private_window_from = stop
        return first - start, slots

    def _adopt_window(self, state: _SeqSlots, node: RadixNode, start: int) -> None:
        """The sequence adopts `node` (positions `start..`) in place of its own copy: its
        window KV fills the front of the node's where the node lacks it, the rest is freed."""
        first, slots = self._private_window_of(state, start, start + node.num_tokens)
        missing = node.window_from - first
        if missing > 0 and slots:
            fill = pop_head_extents(slots, self._window * missing)
            node.window_slots = fill + node.window_slots
            node.window_from = first
            self.pool.give(slots)
            self._refresh(node)
        else:
            self.pool.give(slots)

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        """Give back the private slots past `num_tokens` (rejected drafts, never inserted:
        insertion stops at the known tokens), and slide the window to the committed tokens.
        Tokens already in the tree stay held."""
        state = self._seqs.get(seq.seq_id)
        if state is None or num_tokens > state.num_held_tokens:
            return  # (when every draft was accepted the window still slides)
        keep = max(num_tokens, state.num_cached_tokens)
        dropped = state.num_held_tokens - keep
        self.pool.give(pop_tail_extents(state.private, self._full * dropped))
        state.num_held_tokens = keep
        if self._window:
            window_dropped = min(dropped, max(0, keep + dropped - state.private_window_from))
            self.pool.give(pop_tail_extents(state.private_window, self._window * window_dropped))
            state.private_window_from = min(state.private_window_from, keep)
            committed = min(num_tokens, seq.num_final_tokens)
            self._slide(seq.seq_id, state, self._window_start(state, committed))

    def refork(self, loser: Sequence, donor: Sequence) -> bool:
        """`free(loser)`, then `fork(donor, loser)`."""
        self.free(loser)
        return self.fork(donor, loser)

    def fork(self, parent: Sequence, child: Sequence) -> bool:
        """`child` shares `parent`'s tree path by reference; `parent`'s private slots (tokens
        not in the tree yet) are copied into fresh ones. False, with nothing taken, when the
        pool has no room for the copies."""
        source = self._seqs[parent.seq_id]
        num_private = source.num_held_tokens - source.num_cached_tokens
        num_private_window = source.num_held_tokens - source.private_window_from
        need = self._full * num_private + self._window * num_private_window
        if need > self.pool.num_free + self._evictable_slots:
            return False
        self._clock += 1
        node = source.node
        while node is not self.root:
            self._lock(node)
            node = node.parent
        state = _SeqSlots(source.node, source.num_cached_tokens, source.num_held_tokens,
                          private_window_from=source.private_window_from,
                          window_start=source.window_start)
        self._seqs[child.seq_id] = state
        if self._window:
            self._pin(child.seq_id, state, 0)
        state.private = self._copy(source.private, self._take(self._full * num_private))
        if self._window:
            state.private_window = self._copy(source.private_window,
                                              self._take(self._window * num_private_window))
        return True

    def _copy(self, source: list[range], destination: list[range]) -> list[range]:
        """Record slot-by-slot copies of `source` into `destination`; the merged extents."""
        src = [slot for extent in source for slot in extent]
        dst = [slot for extent in destination for slot in extent]
        self._copies.extend((s, d, 1) for s, d in zip(src, dst))
        merged: list[range] = []
        for extent in destination:
            append_extent(merged, extent)
        return merged

    def take_copies(self) -> list[tuple[int, int, int]]:
        """Slot copies made by `fork` since the last call, as (source, destination, tokens)
        (the ids are anonymous unless `track_slot_ids`: the simulator counts the tokens)."""
        copies, self._copies = self._copies, []
        return copies

    def free(self, seq: Sequence) -> None:
        state = self._seqs.pop(seq.seq_id, None)
        if state is None:
            return
        self.pool.give(state.private)
        self.pool.give(state.private_window)
        self._clock += 1
        node = state.node
        while node is not self.root:
            parent = node.parent
            node.ref_count -= 1
            node.last_access = self._clock
            self._drop_pin(node, seq.seq_id)
            self._refresh(node)
            self._drop_if_empty(node)
            node = parent

    # ---- windows ------------------------------------------------------------------------
    def _path_back(self, state: _SeqSlots, stop: int) -> Iterator[tuple[RadixNode, int]]:
        """The path's nodes ending after position `stop`, last first, with their start."""
        node, end = state.node, state.num_cached_tokens
        while node is not self.root and end > stop:
            end -= node.num_tokens
            yield node, end
            node = node.parent

    def _pin(self, seq_id: int, state: _SeqSlots, after: int) -> None:
        """Pin, on the path's nodes ending after position `after`, what the window reads."""
        for node, start in self._path_back(state, max(after, state.window_start)):
            self._set_pin(node, seq_id, max(0, state.window_start - start))

    def _slide(self, seq_id: int, state: _SeqSlots, window_start: int) -> None:
        """Move the window's start to `window_start`: the path's window KV before it is no
        longer read by this sequence (cached, evictable if no other window reads it)."""
        if window_start <= state.window_start:
            return
        for node, start in self._path_back(state, state.window_start):
            if start + node.num_tokens <= window_start:
                self._drop_pin(node, seq_id)
                self._refresh(node)
            else:
                self._set_pin(node, seq_id, max(0, window_start - start))
        state.window_start = window_start

    def _slide_gain(self, seq_id: int, state: _SeqSlots, window_start: int) -> int:
        """Slots `_slide(seq_id, state, window_start)` would make evictable."""
        gain = 0
        if window_start <= state.window_start:
            return gain
        for node, start in self._path_back(state, state.window_start):
            if node.pins[seq_id] != node.min_pin:
                continue  # another window reads from further back: nothing changes here
            others = min((o for s, o in node.pins.items() if s != seq_id), default=node.num_tokens)
            moved = node.num_tokens if start + node.num_tokens <= window_start else window_start - start
            needed = min(others, max(0, moved))
            gain += self._evictable_in(node, node.num_tokens, True, needed) - node.evictable_slots
        return gain

    def _window_read_from(self, node: RadixNode) -> int:
        """The first of `node`'s tokens a live window reads (its length when none does)."""
        return node.min_pin if node.pins else node.num_tokens

    def _set_pin(self, node: RadixNode, seq_id: int, offset: int) -> None:
        """Pin `node` for `seq_id`'s window from token `offset`, keeping `min_pin` current
        without a scan unless the smallest pin moves up."""
        previous = node.pins.get(seq_id)
        node.pins[seq_id] = offset
        if len(node.pins) == 1 or offset < node.min_pin:
            node.min_pin = offset
        elif previous == node.min_pin and offset > previous:
            node.min_pin = min(node.pins.values())
        else:
            return
        self._refresh(node)

    def _drop_pin(self, node: RadixNode, seq_id: int) -> None:
        previous = node.pins.pop(seq_id, None)
        if previous is not None and previous == node.min_pin and node.pins:
            node.min_pin = min(node.pins.values())

    # ---- the tree -----------------------------------------------------------------------
    def _new_node_id(self) -> int:
        self._num_nodes_made += 1
        self._num_live_nodes += 1
        return self._num_nodes_made - 1

    def _lock(self, node: RadixNode) -> None:
        node.ref_count += 1
        node.last_access = self._clock
        self._refresh(node)

    def _refresh(self, node: RadixNode) -> None:
        """Recount what eviction could free at `node` and queue it as a candidate if it can
        free something now (an unreferenced leaf, or window KV no window reads)."""
        evictable = self._evictable_in(node, node.num_tokens, node.ref_count > 0,
                                       self._window_read_from(node))
        self._evictable_slots += evictable - node.evictable_slots
        node.evictable_slots = evictable
        if self._can_evict_now(node) and node.queued_access != node.last_access:
            heapq.heappush(self._candidates, (node.last_access, node.node_id, node))
            node.queued_access = node.last_access
            if len(self._candidates) > 2 * self._num_live_nodes + COMPACT_HEAP_AT:
                self._compact_candidates()

    def _can_evict_now(self, node: RadixNode) -> bool:
        if not node.evictable_slots or node.parent is None:
            return False
        unreferenced = node.ref_count == 0
        return (unreferenced and not node.children) or (
            node.evictable_slots > (self._full * node.num_tokens if unreferenced else 0))

    def _compact_candidates(self) -> None:
        """Drop the entries whose node changed since (its stamp moved on or it was evicted)."""
        self._candidates = [entry for entry in self._candidates
                            if entry[2].parent is not None and entry[2].last_access == entry[0]]
        heapq.heapify(self._candidates)

    def _split(self, node: RadixNode, num_tokens: int) -> RadixNode:
        """Cut `node`'s first `num_tokens` tokens into a new parent and return it; `node` keeps
        the rest (and its identity, so sequences ending at it still do)."""
        head_runs, tail_runs = split_runs(node.runs, num_tokens)
        head_slots = pop_head_extents(node.slots, self._full * num_tokens)
        head_window = pop_head_extents(
            node.window_slots, self._window * max(0, num_tokens - node.window_from))
        parent = node.parent
        head = RadixNode(head_runs, head_slots, num_tokens, parent, self._new_node_id(),
                         ref_count=node.ref_count, last_access=node.last_access,
                         window_slots=head_window, window_from=min(node.window_from, num_tokens),
                         pins={s: o for s, o in node.pins.items() if o < num_tokens},
                         min_pin=node.min_pin)
        parent.children[head_runs[0].first_key()] = head
        head.children[tail_runs[0].first_key()] = node
        node.runs, node.parent = tail_runs, head  # its slots lists kept the tail
        node.window_from = max(0, node.window_from - num_tokens)
        node.pins = {s: max(0, o - num_tokens) for s, o in node.pins.items()}
        node.min_pin = max(0, node.min_pin - num_tokens)
        node.num_tokens -= num_tokens
        self._refresh(head)
        self._refresh(node)
        return head

    def _evict(self, num_slots: int) -> None:
        """Free at least `num_slots` cached-free slots (the caller checked there are that
        many; exactly that many with the plain layout): least recently used candidates first,
        the last leaf trimmed from its tail, window KV from a node's front."""
        while num_slots > 0:
            last_access, _, node = heapq.heappop(self._candidates)
            if node.parent is None or node.last_access != last_access:
                continue
            node.queued_access = -1
            if not self._can_evict_now(node):
                continue
            if node.ref_count == 0 and not node.children:
                num_slots -= self._evict_leaf(node, num_slots)
            else:
                num_slots -= self._evict_window_front(node, num_slots)

    def _evict_leaf(self, leaf: RadixNode, num_slots: int) -> int:
        """Free at least `num_slots` of unreferenced `leaf`'s slots, all of them if it has no
        more, else from its tail; return how many."""
        held = leaf.evictable_slots
        per_token = self._full + self._window
        window_tokens = leaf.num_tokens - leaf.window_from if self._window else 0
        if held <= num_slots:
            num_tokens = leaf.num_tokens
        elif num_slots <= per_token * window_tokens:  # the tail's tokens keep window KV too
            num_tokens = -(-num_slots // per_token)
        else:
            num_tokens = window_tokens + -(-(num_slots - per_token * window_tokens) // self._full)
        if num_tokens == leaf.num_tokens:
            self._remove_leaf(leaf)
            return held
        return self._trim_leaf(leaf, num_tokens)

    def _trim_leaf(self, leaf: RadixNode, num_tokens: int) -> int:
        """Evict the last `num_tokens` tokens of `leaf`, which holds more; it stays a leaf."""
        drop_tail_runs(leaf.runs, num_tokens)
        self.pool.give(pop_tail_extents(leaf.slots, self._full * num_tokens))
        window_tokens = min(num_tokens, leaf.num_tokens - leaf.window_from) if self._window else 0
        self.pool.give(pop_tail_extents(leaf.window_slots, self._window * window_tokens))
        leaf.num_tokens -= num_tokens
        leaf.window_from = min(leaf.window_from, leaf.num_tokens)
        freed = self._full * num_tokens + self._window * window_tokens
        self.evicted_slots += freed
        self._refresh(leaf)
        return freed

    def _evict_window_front(self, node: RadixNode, num_slots: int) -> int:
        """Free the window KV at the front of `node` that no window reads, at least
        `num_slots` of it if there is that much; return how many slots."""
        unread = self._window_read_from(node) - node.window_from
        num_tokens = min(unread, -(-num_slots // self._window))
        freed = pop_head_extents(node.window_slots, self._window * num_tokens)
        self.pool.give(freed)
        node.window_from += num_tokens
        self.evicted_slots += self._window * num_tokens
        self._refresh(node)
        return self._window * num_tokens

    def _remove_leaf(self, leaf: RadixNode) -> None:
        parent = leaf.parent
        del parent.children[leaf.runs[0].first_key()]
        leaf.parent = None
        self._num_live_nodes -= 1
        self.pool.give(leaf.slots)
        self.pool.give(leaf.window_slots)
        self._evictable_slots -= leaf.evictable_slots
        self.evicted_slots += leaf.evictable_slots
        leaf.evictable_slots = 0
        if parent is not self.root:
            self._refresh(parent)
            self._drop_if_empty(parent)

    def _drop_if_empty(self, node: RadixNode) -> None:
        """Without full-attention units a node whose window KV is all evicted holds no slot:
        once it is an unreferenced leaf, it goes (and its parent may follow)."""
        if (not self._full and node.parent is not None and not node.ref_count
                and not node.children and node.window_from >= node.num_tokens):
            self._remove_leaf(node)

    # ---- accounting ---------------------------------------------------------------------
    def usage(self) -> KVUsage:
        """Token-granular: every held slot holds KV, so nothing is held but empty."""
        held = self.pool.num_slots - self.pool.num_free - self._evictable_slots
        return KVUsage(
            total_slots=self.pool.num_slots,
            reserved_slots=held,
            filled_slots=held,
            cached_free_slots=self._evictable_slots,
        )

    def stats(self) -> dict[str, int]:
        """Block counts are whole `block_size` runs of hit and queried tokens, comparable with
        `paged-prefix`; `evictions` counts evicted slots (tokens, on the plain layout)."""
        return self.prefix_counts.stats(self.evicted_slots)
