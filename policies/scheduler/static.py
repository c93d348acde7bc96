"""Static batching, the FasterTransformer baseline.

When the replica is idle it forms a batch of up to `max_num_seqs` waiting requests (FCFS, as
many as the KV pool admits), waiting at most `max_wait_s` after the oldest one arrived for the
batch to fill. The batch prefills together, then decodes until its longest member finishes:
members that finish early stay in the batch as padding (computed, their output discarded) and
their KV is released only when the whole batch ends. Nothing joins a running batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from policies.fast_forward import RepeatsDecodeBatch
from policies.knobs import knob
from policies.kv.base import ForksSequences, KVAllocator, PrefixCache
from policies.scheduler.base import (BatchCapParams, admit, decodes_grower,
                                     preempt_by_recompute, start_sample)
from policies.types import Plan, ScheduledChunk, Sequence, SeqStatus


@dataclass(frozen=True, slots=True)
class StaticParams(BatchCapParams):
    max_wait_s: float = knob(0.0, flag="--static-max-wait-s", min=0, help=(
        "static batching: max wait for a batch to fill"))


class StaticScheduler(RepeatsDecodeBatch):
    def __init__(self, params: StaticParams, allocator: KVAllocator) -> None:
        self.params = params
        self.allocator = allocator
        self.prefix_cache = allocator if isinstance(allocator, PrefixCache) else None
        self._forks = allocator if isinstance(allocator, ForksSequences) else None
        self._lockstep = decodes_grower(allocator)
        """The allocator, when it can grow a decode step's members at once
        (`_decode_at_once`)."""
        self.waiting: deque[Sequence] = deque()
        self.batch: list[Sequence] = []

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.batch)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Samples of a batch member join its batch (the batch runs until its longest ends)."""
        (self.batch if start_sample(self._forks, parent, child) else self.waiting).append(child)

    def on_finished(self, seq: Sequence) -> None:
        self._release_if_done()

    def _release_if_done(self) -> None:
        """End the batch once no member is still generating (finished or preempted)."""
        if all(member.status is SeqStatus.FINISHED for member in self.batch):
            for member in self.batch:
                self.allocator.free(member)
            self.batch.clear()

    def schedule(self, now_s: float) -> Plan:
        plan = Plan()
        while True:
            if not self.batch:
                if not self.waiting:
                    return plan
                deadline = self.waiting[0].request.arrival_time_s + self.params.max_wait_s
                if len(self.waiting) < self.params.max_num_seqs and now_s < deadline:
                    plan.wake_at_s = deadline
                    return plan
                self._form_batch()
            if self._decode_at_once(plan):
                return plan
            for seq in list(self.batch):
                if seq.status is SeqStatus.FINISHED:
                    plan.padding.append(ScheduledChunk(seq, 1, seq.num_computed_tokens))
                elif seq.status is SeqStatus.RUNNING:
                    self._schedule_member(seq, plan)
            if plan.chunks:
                return plan
            # Every unfinished member was preempted: end this batch and form the next one
            # (its head fits, since the pool is then empty).
            plan.padding.clear()
            self._release_if_done()

    # ---- the decode fast-forward (`RepeatsDecodeBatch`) ---------------------------------
    def repeated_batch(self, plan: Plan,
                       decodes: Collection[Sequence] = ()) -> list[Sequence] | None:
        """The running members, in batch order, when `plan` decoded one token of each and
        preempted and copied nothing: every later step decodes them again (nothing joins a
        running batch), the finished ones beside them as padding, until one finishes or the
        pool cannot grow them."""
        if decodes or plan.preempted or plan.block_copies:
            return None
        if not all(chunk.num_new_tokens == 1 and not chunk.num_spec_tokens
                   for chunk in plan.chunks):
            return None
        batch = [chunk.seq for chunk in plan.chunks if chunk.seq.status is not SeqStatus.FINISHED]
        if len(batch) != sum(member.status is SeqStatus.RUNNING for member in self.batch):
            return None  # a member joined in the commit (a forked sample)
        return batch

    def drained_batch(self) -> list[Sequence] | None:
        """The running members after some finished (the batch ends when none is left)."""
        return [member for member in self.batch if member.status is SeqStatus.RUNNING] or None

    def nothing_can_join(self) -> bool:
        """False, though nothing ever joins a running batch: a speculative run would neither
        price the finished members as padding nor see one finish (they stay in the batch),
        so a static batch's verify steps go one at a time."""
        return False

    def padding_contexts(self) -> list[int]:
        """The finished members' cached tokens, in batch order: each step computes them again."""
        return [member.num_computed_tokens for member in self.batch
                if member.status is SeqStatus.FINISHED]

    def _decode_at_once(self, plan: Plan) -> bool:
        """Plan the batch's decode step with one lockstep round growing its running members
        (what their `_schedule_member` calls do when none is preempted), when each decodes
        one token and the pool serves them all; False, with nothing done, otherwise (a
        prefill, or a preemption is due: they then go one by one)."""
        if self._lockstep is None:
            return False
        running = [member for member in self.batch if member.status is SeqStatus.RUNNING]
        if (not running or any(member.num_uncomputed_tokens != 1 for member in running)
                or self._lockstep.grow_in_lockstep(running, 1) is None):
            return False
        for member in self.batch:
            if member.status is SeqStatus.FINISHED:
                plan.padding.append(ScheduledChunk(member, 1, member.num_computed_tokens))
            elif member.status is SeqStatus.RUNNING:
                plan.chunks.append(ScheduledChunk(member, 1, member.num_computed_tokens))
        return True

    def _form_batch(self) -> None:
        while self.waiting and len(self.batch) < self.params.max_num_seqs:
            seq = self.waiting[0]
            num_cached = self.prefix_cache.match_prefix(seq) if self.prefix_cache is not None else 0
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens, num_cached):
                break
            self.waiting.popleft()
            admit(seq, num_cached)
            self.batch.append(seq)

    def _schedule_member(self, seq: Sequence, plan: Plan) -> None:
        while not self.allocator.allocate_slots(seq, seq.num_known_tokens):
            # Out of KV mid-batch: the newest member not yet scheduled this step goes back to
            # the queue (members are visited oldest first, so that is `seq` or a later one).
            later = self.batch[self.batch.index(seq) + 1 :]
            victim = next(
                (m for m in reversed(later) if m.status is SeqStatus.RUNNING), seq
            )
            self.batch.remove(victim)
            preempt_by_recompute(victim, self.allocator, self.waiting, plan)
            if victim is seq:
                return
        plan.chunks.append(ScheduledChunk(seq, seq.num_uncomputed_tokens, seq.num_computed_tokens))
