"""The clockless replica step, written once for the simulator and the real backend.

    plan = scheduler.schedule(now)      # who computes how many tokens
    result = executor.execute(plan)     # a cost model, or a real model on tensors
    commit(plan, end = now + result.duration_s)

The caller owns the clock: the SimPy harness advances simulated time by the duration, a real
engine loop reads the wall clock. Every submitted request ends up in `sequences` as finished,
rejected (with a reason) or, if the caller stops early, still waiting/running.

A speculative verify chunk (`num_spec_tokens = k > 0`) emits the executor's accepted count
plus one token, all stamped at the step's end (so ITL shows speculation's bursts), and the
slots of its rejected drafts are given back through the allocator's `shrink_slots`.
With a `decoding` policy (block diffusion) that policy commits every chunk instead and says
how many tokens it emits (a finished block's, all stamped at the step's end).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Callable, Protocol

from policies.beam import BeamReparenter
from policies.decoding.block_diffusion import BlockDiffusion
from policies.kv.base import LockstepUsage
from policies.scheduler.base import Scheduler
from policies.types import (Plan, Request, ScheduledChunk, Sequence, SeqStatus, StepResult,
                            sample_seq_id)


class Executor(Protocol):
    """Runs plans. A simulated executor may also offer the decode fast-forward's two methods:
    `lockstep_decode_times(context_tokens, num_steps, first_step) -> list[float] | None`
    (what `execute` would return for each of those decode-only steps of one batch, without
    side effects) and `ran_lockstep_decodes(context_tokens, num_steps)` (they ran)."""

    def execute(self, plan: Plan) -> StepResult: ...


@dataclass(slots=True)
class IterationLog:
    """One row per executed iteration, in compact columns (no per-iteration objects; counts
    as 4-byte ints, which overflow loudly, so a million-request trace's log stays small)."""

    start_s: array = field(default_factory=lambda: array("d"))
    duration_s: array = field(default_factory=lambda: array("d"))
    batch_size: array = field(default_factory=lambda: array("i"))
    new_tokens: array = field(default_factory=lambda: array("i"))
    prefill_tokens: array = field(default_factory=lambda: array("i"))
    num_waiting: array = field(default_factory=lambda: array("i"))
    kv_reserved_slots: array = field(default_factory=lambda: array("i"))
    kv_filled_slots: array = field(default_factory=lambda: array("i"))
    kv_cached_free_slots: array = field(default_factory=lambda: array("i"))

    def __len__(self) -> int:
        return len(self.start_s)


@dataclass(slots=True)
class SpeculationLog:
    """Counters over every verify of every sequence; all zero when nothing speculates.

    `emitted_histogram[n]` counts verifies that emitted n tokens (accepted drafts + 1).
    `reached_by_position[i]` counts verifies whose draft at position i + 1 was looked at (it
    was proposed and every draft before it was accepted), `accepted_by_position[i]` those that
    accepted it: their ratio is the conditional acceptance rate engines log per position.
    """

    num_verifies: int = 0
    num_proposed: int = 0
    emitted_histogram: list[int] = field(default_factory=list)
    reached_by_position: list[int] = field(default_factory=list)
    accepted_by_position: list[int] = field(default_factory=list)
    draft_s: float = 0.0
    """Drafting time over every step (a draft model also ingests prefills in plain steps)."""
    verify_s: float = 0.0
    """Target time of the steps that verified drafts (their duration less their drafting)."""

    def record(self, num_spec_tokens: int, num_accepted: int) -> None:
        self.num_verifies += 1
        self.num_proposed += num_spec_tokens
        _bump(self.emitted_histogram, num_accepted + 1)
        for position in range(min(num_accepted + 1, num_spec_tokens)):
            _bump(self.reached_by_position, position)
            if position < num_accepted:
                _bump(self.accepted_by_position, position)


def _bump(counts: list[int], index: int) -> None:
    if index >= len(counts):
        counts.extend([0] * (index + 1 - len(counts)))
    counts[index] += 1


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """`duration_s` is None when nothing ran; then `wake_at_s` may ask for a timed wake-up."""

    duration_s: float | None
    wake_at_s: float | None = None


class Engine:
    def __init__(
        self,
        scheduler: Scheduler,
        executor: Executor,
        *,
        max_model_len: int,
        on_done: Callable[[Sequence], None] | None = None,
        beams: BeamReparenter | None = None,
        fast_forward: bool = False,
        async_scheduling: bool = False,
        decoding: BlockDiffusion | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.max_model_len = max_model_len
        self.sequences: dict[int, Sequence] = {}
        self.log = IterationLog()
        self.spec_log = SpeculationLog()
        self.kv_total_slots = scheduler.allocator.usage().total_slots
        self.outstanding_tokens = 0
        self._open_samples: dict[int, int] = {}
        self._beams = beams
        self._on_done = on_done
        self.fast_forward = fast_forward
        self.async_scheduling = async_scheduling
        """Plan each step while the one before runs (vLLM's async scheduling): a request that
        arrives during a step first runs in the step after next (`_plan_cutoff_s`)."""
        self.arrivals_unobserved = False
        """Nothing reads this engine's state when a request arrives (one replica, no router),
        so with async scheduling a decode run may go one iteration past an arrival."""
        self._held: list[tuple[float, Sequence]] = []
        self._last_end_s = -math.inf
        self.decoding = decoding

    def submit(self, request: Request, now_s: float) -> Sequence:
        """Queue `request`, or reject it now if it could never run on this replica."""
        reason = self._never_fits_reason(request)
        if reason is not None:
            return self.reject(request, reason, now_s)
        seq = Sequence(request)
        self.sequences[request.request_id] = seq
        if self.async_scheduling:
            self._held.append((now_s, seq))
        else:
            self.scheduler.add(seq)
        self.outstanding_tokens += request.total_tokens
        return seq

    def reject(self, request: Request, reason: str, now_s: float) -> Sequence:
        """Record `request` as rejected with `reason`; it never runs. Callers that know more
        than the allocator (the real backend checks prompt token ids) reject through here."""
        seq = Sequence(request, status=SeqStatus.REJECTED, reason=reason, finish_s=now_s)
        self.sequences[request.request_id] = seq
        if self._on_done:
            self._on_done(seq)
        return seq

    def submit_transferred(self, seq: Sequence, transfer_s: float, now_s: float) -> None:
        """Take over `seq`, prefilled on another replica (prefill/decode disaggregation); its KV
        arrives `transfer_s` after this replica gives it memory."""
        self.sequences[seq.seq_id] = seq
        reason = self.scheduler.allocator.never_fits_reason(seq.request)
        if reason is not None:
            seq.status = SeqStatus.REJECTED
            seq.reason = f"decode pool: {reason}"
            seq.finish_s = now_s
            if self._on_done:
                self._on_done(seq)
            return
        self.scheduler.add_transfer(seq, transfer_s)
        self.outstanding_tokens += seq.request.total_tokens

    def _never_fits_reason(self, request: Request) -> str | None:
        if request.total_tokens > self.max_model_len:
            return (
                f"prompt + output = {request.total_tokens} tokens exceeds "
                f"max_model_len {self.max_model_len}"
            )
        if self.decoding is not None:
            request = self.decoding.kv_request(request)
        return self.scheduler.allocator.never_fits_reason(request)

    @property
    def outstanding_requests(self) -> int:
        return self.scheduler.num_waiting + self.scheduler.num_running + len(self._held)

    def _plan_cutoff_s(self, now_s: float) -> float:
        """The latest arrival the plan of the step starting at `now_s` can see: run back to
        back, that plan was made when the step before started; after an idle gap, `now_s`."""
        return self.log.start_s[-1] if now_s == self._last_end_s and self.log.start_s else now_s

    def _admit_held(self, cutoff_s: float) -> None:
        """Hand the scheduler the held arrivals submitted by `cutoff_s`."""
        kept = []
        for submitted_s, seq in self._held:
            if submitted_s <= cutoff_s:
                self.scheduler.add(seq)
            else:
                kept.append((submitted_s, seq))
        self._held = kept

    def cached_prefix_tokens(self, request: Request) -> int:
        return self.scheduler.allocator.cached_prefix_tokens(request)

    def step(self, now_s: float, until_s: float = math.inf,
             stop_s: float = math.inf) -> StepOutcome:
        """Run one iteration from `now_s`. With `fast_forward`, the decode-only iterations of
        the same batch that would follow it and start before `until_s` (when the caller may
        next change this engine's work: an arrival) run as part of this step too; with async
        scheduling and `arrivals_unobserved`, one more (an arrival changes nothing before the
        step after next), but none that starts at or after `stop_s` (the caller's end)."""
        if self._held:
            self._admit_held(self._plan_cutoff_s(now_s))
        plan = self.scheduler.schedule(now_s)
        if plan.is_empty and self._held:  # nothing planned ahead: the held ones go now
            self._admit_held(now_s)
            plan = self.scheduler.schedule(now_s)
        if plan.is_empty:
            return StepOutcome(None, plan.wake_at_s)
        plan.block_copies.extend(self.scheduler.allocator.take_copies())
        result = self.executor.execute(plan)
        end_s = now_s + result.duration_s
        self._record(plan, now_s, result.duration_s)
        self._commit(plan, result, now_s, end_s)
        self._last_end_s = end_s
        grace = int(self.async_scheduling and self.arrivals_unobserved and until_s < stop_s)
        if (self.fast_forward and (end_s < until_s or grace) and end_s < stop_s
                and self._beams is None and not self._held):
            span_end_s = self._fast_forward(plan, now_s, end_s, until_s, result.duration_s,
                                            grace)
            if span_end_s is not None:
                self._last_end_s = span_end_s
                return StepOutcome(span_end_s - now_s)
        return StepOutcome(result.duration_s)

    def _fast_forward(self, plan: Plan, now_s: float, end_s: float, until_s: float,
                      step_s: float, grace: int) -> float | None:
        """Run the decode-only iterations that follow `plan` (a step from `now_s` to `end_s`,
        which took `step_s`) while their batch stays the same (the scheduler's
        `repeated_batch`, or its `drained_batch` when nothing waits) and they start before
        `until_s` (plus `grace` iterations); return when the last one ends (None if none
        ran). When sequences finish, the rest of the batch goes on if nothing waits to join
        it."""
        repeated = getattr(self.scheduler, "repeated_batch", None)
        if repeated is None:
            return None
        batch = repeated(plan) or self.scheduler.drained_batch()
        span_end_s = None
        while batch:
            lockstep = self._run_lockstep(batch, now_s, end_s, until_s, step_s, grace)
            if lockstep is None:
                break
            end_s, finished, step_s = lockstep
            span_end_s = end_s
            if not finished or end_s >= until_s:
                break
            batch = self.scheduler.drained_batch()
        return span_end_s

    def _run_lockstep(self, seqs: list[Sequence], now_s: float, end_s: float, until_s: float,
                      step_s: float, grace: int = 0) -> tuple[float, bool, float] | None:
        """Run in one go the iterations in which batch `seqs` decodes one token each, from
        `end_s`, and return (when the last ends, whether sequences finished in it, the last
        one's duration); None if none ran. `step_s`, the duration of the step before, sizes
        the first batch of steps priced (as many as fit before `until_s` at that pace).

        They stop at the first iteration in which a sequence finishes (it ends the batch),
        before an iteration that would start at or after `until_s` (`grace` of them may), and
        where the pool cannot grow the batch (a preemption is due). Each iteration's end is accumulated exactly as
        the caller's clock would (`start + duration`), the caller's `now_s + (end - now_s)`
        must land on the same float, and every log row, token time, block, hash and
        completion comes out as one step at a time would leave them: results do not change,
        only their cost.
        """
        plan_times = getattr(self.executor, "lockstep_decode_times", None)
        grow = getattr(self.scheduler.allocator, "grow_in_lockstep", None)
        if plan_times is None or grow is None:
            return None
        contexts, remaining = [], []
        for seq in seqs:  # each must be decoding: outputs sampled, KV for all but the last
            request, computed, outputs = seq.request, seq.num_computed_tokens, seq.num_output_tokens
            if not outputs or request.prompt_tokens + outputs - computed != 1:
                return None
            contexts.append(computed)
            remaining.append(request.output_tokens - outputs)
        max_steps = min(remaining)
        durations: list[float] = []
        ends = array("d")
        t = end_s
        chunk = 16
        if step_s > 0 and until_s < math.inf:
            chunk = max(1, math.ceil((until_s - end_s) / step_s))
        while len(ends) < max_steps and (t < until_s or grace):
            more = plan_times(contexts, min(chunk, max_steps - len(ends)), len(ends))
            if more is None:
                return None
            for duration in more:
                if t >= until_s:
                    if not grace:
                        break
                    grace -= 1
                t += duration
                durations.append(duration)
                ends.append(t)
            chunk *= 2
        while ends and now_s + (ends[-1] - now_s) != ends[-1]:
            ends.pop()
        num_steps = len(ends)
        usages = grow(seqs, num_steps) if num_steps else None
        if usages is None:
            return None
        self._log_lockstep(len(seqs), end_s, ends, durations[:num_steps], usages)
        last_s = ends[-1]
        for seq in seqs:
            seq.num_computed_tokens += num_steps
            seq.num_output_tokens += num_steps
            seq.token_times_s.extend(ends)
        finished = num_steps == max_steps
        if finished:
            for seq, left in zip(seqs, remaining):
                if left == num_steps:
                    self._finish(seq, last_s)
        ran = getattr(self.executor, "ran_lockstep_decodes", None)
        if ran is not None:
            ran(contexts, num_steps)
        return last_s, finished, durations[num_steps - 1]

    def _log_lockstep(self, batch_size: int, first_start_s: float, ends: array,
                      durations: list[float], usage: LockstepUsage) -> None:
        """The log rows `_record` would write for each of those iterations."""
        log = self.log
        num_steps = len(ends)
        log.start_s.append(first_start_s)
        log.start_s.extend(ends[:-1])
        log.duration_s.extend(durations)
        sizes = array("i", [batch_size]) * num_steps
        log.batch_size.extend(sizes)
        log.new_tokens.extend(sizes)
        log.prefill_tokens.extend(array("i", [0]) * num_steps)
        log.num_waiting.extend(array("i", [self.scheduler.num_waiting]) * num_steps)
        log.kv_reserved_slots.extend(usage.reserved_slots)
        log.kv_filled_slots.extend(usage.filled_slots)
        log.kv_cached_free_slots.extend(usage.cached_free_slots)

    def _commit(self, plan: Plan, result: StepResult, start_s: float, end_s: float) -> None:
        speculated = False
        for chunk in plan.chunks:
            seq = chunk.seq
            if seq.first_scheduled_s is None:
                seq.first_scheduled_s = start_s
            if self.decoding is not None:
                num_emitted = self.decoding.commit(chunk, result.committed_tokens)
                if not num_emitted:
                    continue
            elif chunk.num_spec_tokens:
                num_emitted = 1 + self._commit_verify(chunk, result)
                speculated = True
            else:
                seq.num_computed_tokens += chunk.num_new_tokens
                if seq.num_computed_tokens < seq.num_known_tokens:
                    continue  # a partial prefill chunk samples nothing
                num_emitted = 1
            seq.num_output_tokens += num_emitted
            for _ in range(num_emitted):
                seq.token_times_s.append(end_s)
            if seq.sample_index == 0 and seq.request.n > 1 and seq.num_output_tokens == num_emitted:
                self._fork_samples(seq, end_s)
            if seq.is_done_generating:
                self._finish(seq, end_s)
        if self._beams is not None:
            self._reparent_beams(plan)

        self.spec_log.draft_s += result.draft_s
        if speculated:
            self.spec_log.verify_s += end_s - start_s - result.draft_s

    def _fork_samples(self, parent: Sequence, end_s: float) -> None:
        """The prefill sampled n first tokens: samples 1..n-1 start from `parent`'s KV."""
        self._open_samples[parent.seq_id] = parent.request.n
        for index in range(1, parent.request.n):
            child = Sequence(parent.request, num_computed_tokens=parent.num_computed_tokens,
                             num_output_tokens=1, first_scheduled_s=parent.first_scheduled_s,
                             sample_index=index)
            child.token_times_s.append(end_s)
            self.sequences[child.seq_id] = child
            self.outstanding_tokens += parent.request.output_tokens
            if child.is_done_generating:
                self._finish(child, end_s, scheduled=False)
            else:
                self.scheduler.fork(parent, child)

    def _reparent_beams(self, plan: Plan) -> None:
        """After a step, let the beam policy replace losing beams by copies of others; only
        beams that are in lockstep (running, at the same length) are compared."""
        for request_id in {c.seq.request.request_id for c in plan.chunks if c.seq.request.beam}:
            request = self.sequences[request_id].request
            beams = [self.sequences.get(sample_seq_id(request, k)) for k in range(request.n)]
            if any(b is None or b.status is not SeqStatus.RUNNING for b in beams):
                continue
            if len({b.num_computed_tokens for b in beams}) != 1:
                continue
            allocator = self.scheduler.allocator
            for loser, donor in self._beams.reparent(beams):
                allocator.free(loser)
                allocator.fork(donor, loser)

    def _finish(self, seq: Sequence, end_s: float, scheduled: bool = True) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_s = end_s
        request = seq.request
        self.outstanding_tokens -= request.total_tokens if seq.sample_index == 0 else request.output_tokens
        if scheduled:
            self.scheduler.on_finished(seq)
        # The request is done when its last sample is.
        remaining = self._open_samples.get(request.request_id, 1) - 1
        if remaining:
            self._open_samples[request.request_id] = remaining
            return
        self._open_samples.pop(request.request_id, None)
        if self._on_done:
            self._on_done(self.sequences[request.request_id])

    def _commit_verify(self, chunk: ScheduledChunk, result: StepResult) -> int:
        """Advance `chunk.seq` past its accepted drafts, give back the rejected drafts' slots,
        and return how many drafts were accepted."""
        seq, k = chunk.seq, chunk.num_spec_tokens
        accepted = result.accepted_tokens.get(seq.seq_id)
        if accepted is None or not 0 <= accepted <= k or accepted >= seq.num_remaining_outputs:
            raise RuntimeError(
                f"executor reported {accepted!r} accepted drafts for request {seq.seq_id}, "
                f"which verified {k} with {seq.num_remaining_outputs} outputs left"
            )
        seq.num_computed_tokens += 1 + accepted
        # Drafts after the first rejected one were never judged: they say nothing of alpha.
        seq.num_draft_tokens_reached += min(accepted + 1, k)
        seq.num_draft_tokens_accepted += accepted
        self.spec_log.record(k, accepted)
        self.scheduler.allocator.shrink_slots(seq, seq.num_computed_tokens)
        return accepted

    def _record(self, plan: Plan, start_s: float, duration_s: float) -> None:
        log = self.log
        usage = self.scheduler.allocator.usage()
        log.start_s.append(start_s)
        log.duration_s.append(duration_s)
        log.batch_size.append(len(plan.chunks) + len(plan.padding))
        log.new_tokens.append(plan.num_new_tokens)
        log.prefill_tokens.append(
            sum(c.num_new_tokens for c in plan.chunks if not c.num_spec_tokens
                and (c.num_new_tokens > 1 or c.num_context_tokens < c.seq.request.prompt_tokens))
        )
        log.num_waiting.append(self.scheduler.num_waiting)
        log.kv_reserved_slots.append(usage.reserved_slots)
        log.kv_filled_slots.append(usage.filled_slots)
        log.kv_cached_free_slots.append(usage.cached_free_slots)
