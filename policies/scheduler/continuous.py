"""Iteration-level (continuous) batching as in Orca and vLLM's first scheduler.

Every iteration, waiting prompts are admitted first-come-first-served while they fit the token
budget, the sequence cap and the KV pool; if any prompt was admitted the iteration runs those
prefills alone (whole prompts, never chunked), otherwise it runs one decode token for every
running sequence. A prompt longer than the whole token budget is admitted on its own. When a
decode cannot get a KV slot, the newest running sequence is preempted until it can (possibly
the sequence itself): by recompute (drop its KV, requeue it with its outputs), or by swap (copy
its KV to the host swap space, keeping its progress; recompute when the swap space is full).
Swapped sequences come back before any new prompt is admitted, oldest first, as vLLM v0 does.

On the decode side of a disaggregated cluster, sequences arrive already prefilled
(`add_transfer`): each first gets KV blocks for its whole context (FCFS, with the watermark),
then waits `transfer_s` for its KV to arrive over the link before it may decode. A sequence
waiting for memory or for its transfer is never scheduled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from policies.fast_forward import RepeatsDecodeBatch
from policies.knobs import knob
from policies.kv.base import ForksSequences, KVAllocator, PrefixCache
from policies.kv.swap import PREEMPTION_MODES, SwapSpace
from policies.scheduler.queue_order import QUEUE_POLICIES, victim_index, waiting_key
from policies.scheduler.base import BatchCapParams, admit, preempt_by_recompute, start_sample
from policies.types import Plan, ScheduledChunk, Sequence, SeqStatus


@dataclass(frozen=True, slots=True)
class QueueingParams(BatchCapParams):
    """The knobs every scheduler built on `ContinuousScheduler` shares: the sequence cap,
    what preemption costs, the host swap space, and the queue policy. The swap space and the
    TTFT SLO (edf's deadlines) are the engine's: `--swap-space-gb` and `--slo-ttft-s`."""

    preemption: str = knob("recompute", choices=PREEMPTION_MODES, help=(
        "what a preempted sequence loses: recompute (its KV) or swap (KV to host memory)"))
    num_cpu_blocks: int = 0
    queue_policy: str = knob("fcfs", choices=QUEUE_POLICIES, help=(
        "waiting order and preemption victims: fcfs|priority|spf|srpt|edf"))
    slo_ttft_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ContinuousParams(QueueingParams):
    max_num_batched_tokens: int = 2048

    """`max_num_batched_tokens` is the engine's budget (`--max-num-batched-tokens`, whose
    default depends on the model's context), filled by the simulator."""

    def __post_init__(self) -> None:
        QueueingParams.__post_init__(self)
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")


class QueueingScheduler:
    """The queues and moves every iteration-level scheduler here shares (admission, swap,
    preemption, forks, transfers); a subclass decides each iteration's plan in `schedule`."""

    def __init__(self, params: QueueingParams, allocator: KVAllocator) -> None:
        self.params = params
        self.allocator = allocator
        self.prefix_cache = allocator if isinstance(allocator, PrefixCache) else None
        self._forks = allocator if isinstance(allocator, ForksSequences) else None
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.swapped: deque[Sequence] = deque()
        self.swap_space = SwapSpace(params.num_cpu_blocks, allocator.blocks_for)
        self.incoming: deque[tuple[Sequence, float]] = deque()
        self.transferring: list[tuple[float, Sequence]] = []
        self._waiting_key = waiting_key(params.queue_policy, params.slo_ttft_s)

    def _order_waiting(self) -> None:
        if self._waiting_key is not None and len(self.waiting) > 1:
            self.waiting = deque(sorted(self.waiting, key=self._waiting_key))

    def _pop_victim(self, start: int) -> Sequence:
        """Remove and return the preemption victim among `running[start:]` (those not yet
        scheduled this iteration)."""
        return self.running.pop(start + victim_index(self.params.queue_policy, self.running[start:]))

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self.swapped) + len(self.incoming) + len(self.transferring)

    def add_transfer(self, seq: Sequence, transfer_s: float) -> None:
        """Queue a sequence prefilled elsewhere whose KV takes `transfer_s` to arrive."""
        self.incoming.append((seq, transfer_s))

    def _receive_transfers(self, now_s: float) -> None:
        """Give arriving sequences memory (their transfer starts then), and let those whose
        KV has arrived join the running batch."""
        if not (self.incoming or self.transferring):  # most replicas, every step
            return
        while self.incoming and len(self.running) + len(self.transferring) < self.params.max_num_seqs:
            seq, transfer_s = self.incoming[0]
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens):
                break
            self.incoming.popleft()
            seq.status = SeqStatus.TRANSFERRING
            self.transferring.append((now_s + transfer_s, seq))
        arrived = [seq for ready_s, seq in self.transferring if ready_s <= now_s]
        self.transferring = [(r, s) for r, s in self.transferring if r > now_s]
        for seq in arrived:
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)

    def _wake_for_transfers(self, plan: Plan) -> Plan:
        if plan.is_empty and self.transferring:
            plan.wake_at_s = min(ready_s for ready_s, _ in self.transferring)
        return plan

    @property
    def num_running(self) -> int:
        return len(self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """A new sample of `parent` joins the running batch sharing its KV, or, when the
        allocator has no room for it, waits to recompute its prompt and first token."""
        (self.running if start_sample(self._forks, parent, child) else self.waiting).append(child)

    def on_finished(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.allocator.free(seq)

    def _open_plan(self, now_s: float) -> tuple[Plan, bool]:
        """Every iteration's opening: sequences transferred in join, the queue is put in
        policy order, and swapped-out sequences come back (before any new prompt, oldest
        first) while they fit. Returns the plan so far and whether any were swapped out."""
        plan = Plan()
        self._receive_transfers(now_s)
        self._order_waiting()
        swapping = bool(self.swapped)
        if swapping:
            self._swap_in(plan)
        return plan, swapping

    def _start(self, seq: Sequence, num_cached: int, plan: Plan) -> None:
        """Move the head of the queue, `seq`, into the running batch with `num_cached` tokens
        already in the prefix cache."""
        admit(seq, num_cached)
        self.running.append(seq)
        plan.num_admitted += 1

    def _swap_in(self, plan: Plan) -> None:
        while self.swapped and len(self.running) < self.params.max_num_seqs:
            seq = self.swapped[0]
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens):
                break
            self.swapped.popleft()
            self.swap_space.release(seq)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            plan.swap_in_slots += seq.num_computed_tokens

    def _preempt(self, victim: Sequence, plan: Plan) -> None:
        if self.params.preemption == "swap" and self.swap_space.try_hold(victim):
            self.allocator.free(victim)
            victim.status = SeqStatus.SWAPPED
            victim.num_preemptions += 1
            victim.num_swaps += 1
            self.swapped.appendleft(victim)
            plan.preempted.append(victim)
            plan.swap_out_slots += victim.num_computed_tokens
        else:
            preempt_by_recompute(victim, self.allocator, self.waiting, plan)


class QueuedDecodeRuns(QueueingScheduler, RepeatsDecodeBatch):
    """The decode fast-forward's scheduler side for a `QueueingScheduler` whose `schedule()`,
    once every running sequence decodes and nothing is admitted, swapped, preempted or
    transferred, plans exactly one token for each running sequence in `running` order, and
    admits waiting work only when a seat, budget or memory frees up: what a subclass
    declares by inheriting this (continuous, chunked and Orca each do, with a test each)."""

    def repeated_batch(self, plan: Plan,
                       decodes: Collection[Sequence] = ()) -> list[Sequence] | None:
        """The running batch, in order (the engine checks that each is decoding); None unless `plan` decoded every running sequence and admitted, preempted, swapped
        and copied nothing, with no transfer pending. Then whatever kept the waiting and
        swapped work out (the sequence cap, a pool that decode growth only fills further, a
        budget the same batch uses up) keeps it out, unless a sequence finished in `plan`
        and freed a seat or memory while work waits. `decodes` (one token each) came before
        the plan's chunks, planned apart."""
        if (plan.num_admitted or plan.preempted or plan.padding or plan.swap_in_slots
                or plan.swap_out_slots or plan.block_copies or self.incoming or self.transferring):
            return None
        batch = [c.seq for c in plan.chunks if c.seq.status is not SeqStatus.FINISHED]
        num_planned = len(plan.chunks)
        if decodes:
            batch[:0] = [seq for seq in decodes if seq.status is not SeqStatus.FINISHED]
            num_planned += len(decodes)
        if len(batch) < num_planned and (self.waiting or self.swapped):
            return None
        # Each chunk decodes its sequence's one token, or verifies drafts on top of it (the
        # speculative wrapper widens decodes; what this scheduler decides stays the same).
        if len(batch) != len(self.running) or not all(
                c.num_new_tokens == 1 or c.num_spec_tokens for c in plan.chunks):
            return None
        return batch

    def drained_batch(self) -> list[Sequence] | None:
        """The running batch when nothing waits to join it (after a step that admitted the
        last waiting prompts, or one in which sequences finished)."""
        if self.waiting or self.swapped or self.incoming or self.transferring or not self.running:
            return None
        return list(self.running)

    def nothing_can_join(self) -> bool:
        return not (self.waiting or self.swapped) or len(self.running) >= self.params.max_num_seqs

    def padding_contexts(self) -> list[int]:
        return []


class ContinuousScheduler(QueuedDecodeRuns):
    def schedule(self, now_s: float) -> Plan:
        plan, swapping = self._open_plan(now_s)
        if not swapping:
            self._admit_prefills(plan)
        if not plan.chunks:
            self._schedule_decodes(plan)
        return self._wake_for_transfers(plan)

    def _admit_prefills(self, plan: Plan) -> None:
        budget = self.params.max_num_batched_tokens
        while self.waiting and len(self.running) < self.params.max_num_seqs:
            seq = self.waiting[0]
            num_cached = self.prefix_cache.match_prefix(seq) if self.prefix_cache is not None else 0
            num_new = seq.num_known_tokens - num_cached
            oversized_alone = not plan.chunks and num_new > self.params.max_num_batched_tokens
            if num_new > budget and not oversized_alone:
                break
            if not self.allocator.allocate_slots(seq, seq.num_known_tokens, num_cached):
                if self._preempt_lower_class_for(seq, plan):
                    continue
                break
            self.waiting.popleft()
            self._start(seq, num_cached, plan)
            plan.chunks.append(ScheduledChunk(seq, num_new, num_cached))
            budget -= num_new
            if oversized_alone:
                break

    def _schedule_decodes(self, plan: Plan) -> None:
        budget = self.params.max_num_batched_tokens
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            num_known = seq.num_known_tokens
            if self.allocator.allocate_slots(seq, num_known):
                num_new = num_known - seq.num_computed_tokens
                plan.chunks.append(ScheduledChunk(seq, num_new, seq.num_computed_tokens))
                budget -= num_new
                index += 1
                continue
            # The newest (lowest-class) sequence not yet scheduled yields its KV; if that is
            # `seq` itself the loop ends.
            self._preempt(self._pop_victim(index), plan)

    def _preempt_lower_class_for(self, seq: Sequence, plan: Plan) -> bool:
        """Under the priority policy, make room for `seq` by preempting a running sequence of
        a lower class (larger number); False when there is none."""
        if self.params.queue_policy != "priority" or not self.running:
            return False
        index = victim_index("priority", self.running)
        if self.running[index].request.priority <= seq.request.priority:
            return False
        victim = self.running.pop(index)
        self._preempt(victim, plan)
        if self.waiting and self.waiting[0] is victim:
            # Keep `seq` at the head; the next iteration's sort puts the victim in its place.
            self.waiting.popleft()
            self.waiting.append(victim)
        return True
