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
exactly the tokens of unreferenced nodes, and eviction can free all of it.

Eviction takes unreferenced leaves least recently used first (a logical clock stamps a path
when a sequence locks or releases it; a parent whose last child goes becomes a leaf in its
turn) and frees exactly what the allocation needs, trimming the last leaf from its tail.
SGLang frees whole leaves; under memory pressure that throws away a preempted sequence's whole
prompt to make room for one decode token (its leaf is often the only evictable one), while a
trim keeps its head for its own hit on readmission, as `paged-prefix`'s tail-first free does.

Committed tokens are inserted as they are allocated, not only on finish: SGLang inserts a
request's prefill when its chunk is done and its outputs when it finishes, and the simulator
computes a step's KV within the step, so a request admitted a step later hits what a running
one computed (as with `paged-prefix`). Output tokens have keys private to their request, which
it hits again after a recompute preemption. Slots beyond the known tokens (speculative ones)
stay private to the sequence and are never cached. When an inserted run turns out to be in the
tree already, the sequence adopts the tree's slots and frees its own copies, as SGLang does.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Hashable, Iterator

from policies.kv.base import KVUsage, PoolParams, kv_tokens_needed
from policies.kv.slot_pool import SlotPool, append_extent, pop_tail_extents, split_extents
from policies.kv.token_keys import (KeyRun, append_run, common_length, drop_tail_runs, split_runs,
                                    token_key_runs)
from policies.types import Request, Sequence


@dataclass(frozen=True, slots=True)
class RadixParams(PoolParams):
    def __post_init__(self) -> None:
        PoolParams.__post_init__(self)
        if not self.layout.is_plain:
            raise ValueError(
                "radix caches full-attention KV only; this model's layers keep sliding-window "
                "or recurrent state (use --allocator paged)"
            )


@dataclass(slots=True, eq=False)
class RadixNode:
    """The KV of `num_tokens` consecutive tokens: their keys (`runs`) and slots (`slots`), both
    in token order. `parent` is None for the root and for evicted nodes."""

    runs: list[KeyRun]
    slots: list[range]
    num_tokens: int
    parent: RadixNode | None
    node_id: int
    ref_count: int = 0
    last_access: int = 0
    children: dict[Hashable, RadixNode] = field(default_factory=dict)


@dataclass(slots=True)
class _SeqSlots:
    """A live sequence: positions below `num_cached_tokens` are the tree path ending at `node`;
    positions up to `num_held_tokens` sit in `private` slots."""

    node: RadixNode
    num_cached_tokens: int
    num_held_tokens: int
    private: list[range] = field(default_factory=list)


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


class RadixAllocator:
    def __init__(self, params: RadixParams) -> None:
        self.block_size = params.block_size
        self.num_blocks = params.num_blocks
        self.layout = params.layout
        self.pool = SlotPool(params.num_blocks * params.block_size)
        self._watermark_slots = int(params.watermark * params.num_blocks) * params.block_size
        self.root = RadixNode([], [], 0, None, 0)
        self._num_nodes_made = 1
        self._clock = 0
        self._evictable_tokens = 0
        self._leaves: list[tuple[int, int, RadixNode]] = []  # heap, stale entries skipped
        self._seqs: dict[int, _SeqSlots] = {}
        self._copies: list[tuple[int, int, int]] = []
        self.hit_tokens = 0
        self.query_tokens = 0
        self.hit_blocks = 0
        self.query_blocks = 0
        self.evicted_tokens = 0

    # ---- queries ------------------------------------------------------------------------
    @property
    def evictable_tokens(self) -> int:
        """Tokens of unreferenced nodes: all of them can be evicted, leaves first."""
        return self._evictable_tokens

    def blocks_for(self, num_tokens: int) -> int:
        return self.layout.blocks_for(num_tokens, self.block_size)

    def never_fits_reason(self, request: Request) -> str | None:
        need = kv_tokens_needed(request)
        if need > self.pool.num_slots - self._watermark_slots:
            return (
                f"needs {need} KV slots but the whole pool has {self.pool.num_slots}"
                + (f" ({self._watermark_slots} kept free as watermark)" if self._watermark_slots else "")
            )
        return None

    def match_prefix(self, seq: Sequence) -> int:
        """Leading committed tokens of `seq` in the tree, to the token, without side effects;
        the last known token is always left to compute, since its logits are needed."""
        limit = seq.num_known_tokens - 1
        if limit <= 0:
            return 0
        return self._walk(token_key_runs(seq.request, 0, limit, seq.sample_index))[1]

    def cached_prefix_tokens(self, request: Request) -> int:
        """Leading prompt tokens of a request not on this replica that the tree holds (what a
        cache-aware router asks every replica)."""
        return self._walk(token_key_runs(request, 0, request.prompt_tokens))[1]

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

    def slot_table(self, seq: Sequence) -> list[int]:
        """The slot of each of `seq`'s held tokens, in position order (what attention reads)."""
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
        missing = num_tokens - state.num_held_tokens
        if missing > 0:
            if missing > self.pool.num_free + self._evictable_tokens:
                return False
            self._take_private(state, missing)
            state.num_held_tokens = num_tokens
        self._insert(seq, state, min(num_tokens, seq.num_known_tokens))
        return True

    def _admit(self, seq: Sequence, num_tokens: int, num_cached_tokens: int) -> bool:
        steps, matched = [], 0
        if num_cached_tokens:
            steps, matched = self._walk(token_key_runs(seq.request, 0, num_cached_tokens, seq.sample_index))
        if matched != num_cached_tokens:
            raise ValueError(f"{num_cached_tokens} cached tokens claimed for request "
                             f"{seq.seq_id}, but the tree holds {matched} of its prefix")
        reclaimed = sum(same for node, same in steps if node.ref_count == 0)
        new_tokens = max(0, num_tokens - num_cached_tokens)
        room = self.pool.num_free + self._evictable_tokens - self._watermark_slots
        if new_tokens + reclaimed > room:
            return False
        self._clock += 1
        node = self.root
        for child, same in steps:
            if same < child.num_tokens:
                child = self._split(child, same)
            self._lock(child)
            node = child
        state = _SeqSlots(node, num_cached_tokens, num_cached_tokens)
        self._seqs[seq.seq_id] = state
        self._take_private(state, new_tokens)
        state.num_held_tokens += new_tokens
        self.hit_tokens += num_cached_tokens
        self.query_tokens += seq.num_known_tokens
        self.hit_blocks += num_cached_tokens // self.block_size
        self.query_blocks += seq.num_known_tokens // self.block_size
        self._insert(seq, state, min(num_tokens, seq.num_known_tokens))
        return True

    def _take_private(self, state: _SeqSlots, num_tokens: int) -> None:
        shortfall = num_tokens - self.pool.num_free
        if shortfall > 0:
            self._evict(shortfall)
        for extent in self.pool.take(num_tokens):
            append_extent(state.private, extent)

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
            duplicates, state.private = split_extents(state.private, same)
            self.pool.give(duplicates)
            node, pos = child, pos + same
        if pos < num_committed:
            runs = [query[qi].sliced(q_skip, len(query[qi]))] + query[qi + 1:]
            slots, state.private = split_extents(state.private, num_committed - pos)
            if node is not self.root and node.ref_count == 1 and not node.children:
                for run in runs:  # only this sequence reads `node`: grow it in place
                    append_run(node.runs, run)
                for extent in slots:
                    append_extent(node.slots, extent)
                node.num_tokens += num_committed - pos
                node.last_access = self._clock
            else:
                leaf = RadixNode(runs, slots, num_committed - pos, node, self._new_node_id(),
                                 ref_count=1, last_access=self._clock)
                node.children[runs[0].first_key()] = leaf
                node = leaf
        state.node, state.num_cached_tokens = node, num_committed

    def shrink_slots(self, seq: Sequence, num_tokens: int) -> None:
        """Give back the private slots past `num_tokens` (rejected drafts, never inserted:
        insertion stops at the known tokens). Tokens already in the tree stay held."""
        state = self._seqs.get(seq.seq_id)
        if state is None or num_tokens >= state.num_held_tokens:
            return
        keep = max(num_tokens, state.num_cached_tokens)
        self.pool.give(pop_tail_extents(state.private, state.num_held_tokens - keep))
        state.num_held_tokens = keep

    def fork(self, parent: Sequence, child: Sequence) -> bool:
        """`child` shares `parent`'s tree path by reference; `parent`'s private slots (tokens
        not in the tree yet) are copied into fresh ones. False, with nothing taken, when the
        pool has no room for the copies."""
        source = self._seqs[parent.seq_id]
        num_private = source.num_held_tokens - source.num_cached_tokens
        if num_private > self.pool.num_free + self._evictable_tokens:
            return False
        self._clock += 1
        node = source.node
        while node is not self.root:
            self._lock(node)
            node = node.parent
        state = _SeqSlots(source.node, source.num_cached_tokens, source.num_held_tokens)
        self._seqs[child.seq_id] = state
        self._take_private(state, num_private)
        src = [slot for extent in source.private for slot in extent]
        dst = [slot for extent in state.private for slot in extent]
        self._copies.extend((s, d, 1) for s, d in zip(src, dst))
        return True

    def take_copies(self) -> list[tuple[int, int, int]]:
        """Slot copies made by `fork` since the last call, as (source, destination, tokens)."""
        copies, self._copies = self._copies, []
        return copies

    def free(self, seq: Sequence) -> None:
        state = self._seqs.pop(seq.seq_id, None)
        if state is None:
            return
        self.pool.give(state.private)
        self._clock += 1
        node = state.node
        while node is not self.root:
            node.ref_count -= 1
            node.last_access = self._clock
            if node.ref_count == 0:
                self._evictable_tokens += node.num_tokens
                if not node.children:
                    heapq.heappush(self._leaves, (node.last_access, node.node_id, node))
            node = node.parent

    # ---- the tree -----------------------------------------------------------------------
    def _new_node_id(self) -> int:
        self._num_nodes_made += 1
        return self._num_nodes_made - 1

    def _lock(self, node: RadixNode) -> None:
        if node.ref_count == 0:
            self._evictable_tokens -= node.num_tokens
        node.ref_count += 1
        node.last_access = self._clock

    def _split(self, node: RadixNode, num_tokens: int) -> RadixNode:
        """Cut `node`'s first `num_tokens` tokens into a new parent and return it; `node` keeps
        the rest (and its identity, so sequences ending at it still do)."""
        head_runs, tail_runs = split_runs(node.runs, num_tokens)
        head_slots, tail_slots = split_extents(node.slots, num_tokens)
        parent = node.parent
        head = RadixNode(head_runs, head_slots, num_tokens, parent, self._new_node_id(),
                         ref_count=node.ref_count, last_access=node.last_access)
        parent.children[head_runs[0].first_key()] = head
        head.children[tail_runs[0].first_key()] = node
        node.runs, node.slots, node.parent = tail_runs, tail_slots, head
        node.num_tokens -= num_tokens
        return head

    def _evict(self, num_tokens: int) -> None:
        """Free exactly `num_tokens` cached-free slots (the caller checked there are that
        many): least recently used leaves first, the last one trimmed from its tail."""
        while num_tokens > 0:
            last_access, _, leaf = heapq.heappop(self._leaves)
            stale = (leaf.parent is None or leaf.children or leaf.ref_count
                     or leaf.last_access != last_access)
            if stale:
                continue
            if leaf.num_tokens > num_tokens:
                self._trim_leaf(leaf, num_tokens)
                return
            num_tokens -= leaf.num_tokens
            self._remove_leaf(leaf)

    def _trim_leaf(self, leaf: RadixNode, num_tokens: int) -> None:
        """Evict the last `num_tokens` tokens of `leaf`, which holds more; it stays a leaf."""
        drop_tail_runs(leaf.runs, num_tokens)
        self.pool.give(pop_tail_extents(leaf.slots, num_tokens))
        leaf.num_tokens -= num_tokens
        self._evictable_tokens -= num_tokens
        self.evicted_tokens += num_tokens
        heapq.heappush(self._leaves, (leaf.last_access, leaf.node_id, leaf))

    def _remove_leaf(self, leaf: RadixNode) -> None:
        parent = leaf.parent
        del parent.children[leaf.runs[0].first_key()]
        leaf.parent = None
        self.pool.give(leaf.slots)
        self._evictable_tokens -= leaf.num_tokens
        self.evicted_tokens += leaf.num_tokens
        if parent is not self.root and not parent.children and parent.ref_count == 0:
            heapq.heappush(self._leaves, (parent.last_access, parent.node_id, parent))

    # ---- accounting ---------------------------------------------------------------------
    def usage(self) -> KVUsage:
        """Token-granular: every held slot holds KV, so nothing is held but empty."""
        held = self.pool.num_slots - self.pool.num_free - self._evictable_tokens
        return KVUsage(
            total_slots=self.pool.num_slots,
            reserved_slots=held,
            filled_slots=held,
            cached_free_slots=self._evictable_tokens,
        )

    def stats(self) -> dict[str, int]:
        """Block counts are whole `block_size` runs of hit and queried tokens, comparable with
        `paged-prefix`; `evictions` counts evicted tokens."""
        return {
            "prefix_hit_tokens": self.hit_tokens,
            "prefix_query_tokens": self.query_tokens,
            "prefix_hit_blocks": self.hit_blocks,
            "prefix_query_blocks": self.query_blocks,
            "evictions": self.evicted_tokens,
        }
