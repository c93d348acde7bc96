"""The clockless replica step, written once for the simulator and the real backend.

    plan = scheduler.schedule(now)      # who computes how many tokens
    result = executor.execute(plan)     # a cost model, or a real model on tensors
    commit(plan, end = now + result.duration_s)

The caller owns the clock: the SimPy harness advances simulated time by the duration, a real
engine loop reads the wall clock. Every submitted request ends up in `sequences` as finished,
rejected (with a reason) or, if the caller stops early, still waiting/running.

A speculative verify chunk (`num_spec_tokens = k > 0`) emits the executor's accepted count
plus one token, all stamped at the step's end (so ITL shows speculation's bursts), and the
slots of its rejected drafts are given back through the allocator's `shrink_slots`
(`ShrinksSlots`; speculation is refused when it is built over an allocator without it).
With a `decoding` policy (block diffusion) that policy commits every chunk instead and says
how many tokens it emits (a finished block's, all stamped at the step's end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Collection
from typing import Callable, Protocol

from policies.beam import BeamReparenter, reparent_beams
from policies.decoding.block_diffusion import BlockDiffusion
from policies.fast_forward import (DecodeFastForward, PlansDecodesApart, PricesDecodesApart,
                                   VerifyFastForward, VerifyRunKV)
from policies.kv.base import ForksSequences, PrefixCache, ShrinksSlots
from policies.logs import IterationLog, SpeculationLog
from policies.samples import SampleForks, forks_after
from policies.scheduler.base import Scheduler
from policies.token_times import TokenTimeline, TokenTimes
from policies.types import Plan, Request, Sequence, SeqStatus, StepResult


class Executor(Protocol):
    """Runs plans. A simulated executor may also price runs of decode-only steps in one go
    (`policies.fast_forward.LockstepPricing`)."""

    def execute(self, plan: Plan) -> StepResult: ...


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
        self.timeline = TokenTimeline()
        """The times this engine stamped tokens with; each sequence's `token_times_s` holds
        runs of it (`policies.token_times`)."""
        allocator = scheduler.allocator
        self.kv_total_slots = allocator.usage().total_slots
        self.prefix_cache = allocator if isinstance(allocator, PrefixCache) else None
        """The allocator, when it caches prefixes (its hit counters, cache-aware routing)."""
        self._forks = allocator if isinstance(allocator, ForksSequences) else None
        self._drafts = allocator if isinstance(allocator, ShrinksSlots) else None
        if beams is not None and self._forks is None:
            raise ValueError(f"beam search forks sequences, which a {type(allocator).__name__} "
                             "cannot do")
        self.outstanding_tokens = 0
        self._samples = SampleForks()
        self._beams = beams
        self._on_done = on_done
        self._fast_forward = (
            VerifyFastForward.of(scheduler, scheduler.allocator, executor, self.log,
                                 self.spec_log, lambda: self.scheduler.num_waiting,
                                 self._commit_verifies)
            or DecodeFastForward.of(scheduler, scheduler.allocator, executor, self.log,
                                    self.timeline, lambda: self.scheduler.num_waiting,
                                    self._finish)
        ) if fast_forward else None
        """Decode (or speculative) runs jumped in one step, when the scheduler, allocator and
        executor all declare their part (`policies.fast_forward`)."""
        self._apart = (scheduler, executor) if (
            fast_forward and beams is None and decoding is None
            and isinstance(scheduler, PlansDecodesApart)
            and isinstance(executor, PricesDecodesApart)) else None
        """With the fast-forward, a step's one-token decodes planned, priced, logged and
        committed as one lockstep row, apart from its chunks, when the scheduler and the
        executor declare their part (`PlansDecodesApart`, `PricesDecodesApart`)."""
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
        seq = Sequence(request, token_times_s=TokenTimes(self.timeline))
        self.sequences[request.request_id] = seq
        if self._fast_forward is not None:
            self._fast_forward.forget()
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
        if seq.token_times_s.timeline is not self.timeline:
            seq.token_times_s = seq.token_times_s.restamped(self.timeline)
        reason = self._never_fits_reason(seq.request)
        if reason is not None:  # the prefill side ran the prompt and one token only
            seq.status = SeqStatus.REJECTED
            seq.reason = f"decode pool: {reason}"
            seq.finish_s = now_s
            if self._on_done:
                self._on_done(seq)
            return
        if self._fast_forward is not None:
            self._fast_forward.forget()
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
        """For cache-aware routers, which are only built over replicas with a prefix cache."""
        if self.prefix_cache is None:
            raise RuntimeError(f"a router asked for cached prefixes, but this replica's "
                               f"{type(self.scheduler.allocator).__name__} caches none")
        return self.prefix_cache.cached_prefix_tokens(request)

    def step(self, now_s: float, until_s: float = math.inf,
             stop_s: float = math.inf) -> StepOutcome:
        """Run one iteration from `now_s`. With `fast_forward`, the decode-only iterations of
        the same batch that would follow it and start before `until_s` (when the caller may
        next change this engine's work: an arrival) run as part of this step too; with async
        scheduling and `arrivals_unobserved`, one more (an arrival changes nothing before the
        step after next), but none that starts at or after `stop_s` (the caller's end)."""
        grace = int(self.async_scheduling and self.arrivals_unobserved and until_s < stop_s)
        fast_forward = self._fast_forward
        if fast_forward is not None and not self._held and self._beams is None:
            span_end_s = (fast_forward.resume(now_s, until_s, grace)
                          if now_s < stop_s and (now_s < until_s or grace) else None)
            if span_end_s is not None:
                self._last_end_s = span_end_s
                return StepOutcome(span_end_s - now_s)
            fast_forward.forget()
        if self._held:
            self._admit_held(self._plan_cutoff_s(now_s))
        decodes, plan = self._schedule(now_s)
        if plan.is_empty and self._held:  # nothing planned ahead: the held ones go now
            self._admit_held(now_s)
            decodes, plan = self._schedule(now_s)
        if plan.is_empty:
            return StepOutcome(None, plan.wake_at_s)
        if self._forks is not None:
            plan.block_copies.extend(self._forks.take_copies())
        if decodes:
            result = self._apart[1].execute_decodes_apart(
                [seq.num_computed_tokens for seq in decodes], plan)
        else:
            result = self.executor.execute(plan)
        end_s = now_s + result.duration_s
        self._record(plan, now_s, result.duration_s, len(decodes))
        self._commit(plan, result, now_s, end_s, decodes)
        self._last_end_s = end_s
        if (fast_forward is not None and (end_s < until_s or grace) and end_s < stop_s
                and self._beams is None and not self._held):
            span_end_s = fast_forward.run(plan, now_s, end_s, until_s, result.duration_s, grace,
                                          decodes)
            if span_end_s is not None:
                self._last_end_s = span_end_s
                return StepOutcome(span_end_s - now_s)
        return StepOutcome(result.duration_s)

    def _schedule(self, now_s: float) -> tuple[list[Sequence], Plan]:
        """The step's plan, and its one-token decodes planned apart (`_apart`) if any."""
        if self._apart is not None:
            return self._apart[0].schedule_decodes_apart(now_s)
        return [], self.scheduler.schedule(now_s)

    def _commit(self, plan: Plan, result: StepResult, start_s: float, end_s: float,
                decodes: Collection[Sequence] = ()) -> None:
        speculated = False
        timeline = self.timeline
        end_index = timeline.stamp(end_s)
        decoding = self.decoding
        # Decodes planned apart (`_apart`): one token each, on all but their last. Each sampled
        # before (a decode's outputs are its computed tokens past the prompt, plus one), so
        # none forks its samples here.
        for seq in decodes:
            if seq.first_scheduled_s is None:
                seq.first_scheduled_s = start_s
            seq.num_computed_tokens += 1
            seq.num_output_tokens += 1
            seq.token_times_s.add_at(timeline, end_index, 1)
            if seq.num_output_tokens >= seq.request.output_tokens:
                self._finish(seq, end_s)
        for chunk in plan.chunks:
            seq = chunk.seq
            request = seq.request
            if seq.first_scheduled_s is None:
                seq.first_scheduled_s = start_s
            if decoding is not None:
                num_emitted = decoding.commit(chunk, result.committed_tokens)
                if not num_emitted:
                    continue
            elif chunk.num_spec_tokens:
                accepted = self._commit_verify(seq, chunk.num_spec_tokens,
                                               result.accepted_tokens.get(seq.seq_id))
                self.spec_log.record(chunk.num_spec_tokens, accepted)
                num_emitted = 1 + accepted
                speculated = True
            else:
                seq.num_computed_tokens += chunk.num_new_tokens
                # `num_known_tokens` and, below, `is_done_generating` spelled out: every row
                # of every step asks them
                if (seq.num_computed_tokens
                        < request.prompt_tokens + seq.num_output_tokens + seq.num_block_tokens):
                    continue  # a partial prefill chunk samples nothing
                num_emitted = 1
            seq.num_output_tokens += num_emitted
            seq.token_times_s.add_at(timeline, end_index, num_emitted)
            if request.n > 1 and forks_after(seq, num_emitted):
                self._fork_samples(seq, end_s)
            if seq.num_output_tokens >= request.output_tokens:
                self._finish(seq, end_s)
        if self._beams is not None:
            reparent_beams(self._beams, plan, self.sequences, self._forks)
        self._count_step_times(speculated, start_s, end_s, result.draft_s)

    def _commit_verifies(self, seqs: list[Sequence], kv: VerifyRunKV, spec_tokens: list[int],
                         accepted: list[int], start_s: float, end_s: float,
                         draft_s: float) -> None:
        """`_commit` of a step whose chunk i is a verify of `spec_tokens[i]` drafts by
        decoding sequence `seqs[i]` (a plain decode when 0), `accepted[i]` of them accepted,
        its KV grown by `kv`: the speculative fast-forward's steps, which have no plan (no
        beams, no decoding policy: that engine does not fast-forward), whose sequences
        were all scheduled before, and whose verifies it counts in `spec_log` as their run
        ends (`SpeculationLog.record_steps`)."""
        if self._drafts is None:
            raise RuntimeError("a verify step ran, but the allocator cannot give back "
                               "rejected drafts' slots")
        timeline = self.timeline
        end_index = timeline.stamp(end_s)
        # `_commit_verify` of each verify, inline (a call per verify costs ~0.2 s over the
        # Azure conv trace), its rejected drafts given back in one call for the rows up to
        # a finish (which frees blocks: the pool's order stays that of a row at a time)
        # and for the rest at the end (a plain decode's row holds just its computed tokens).
        shrunk = 0
        for seq, k, num_accepted in zip(seqs, spec_tokens, accepted):
            output_tokens = seq.request.output_tokens
            num_outputs = seq.num_output_tokens
            if k:
                if (num_accepted is None or not 0 <= num_accepted <= k
                        or num_accepted >= output_tokens - num_outputs):
                    self._commit_verify(seq, k, num_accepted)  # raises: says what is wrong
                num_emitted = 1 + num_accepted
                seq.num_computed_tokens += num_emitted
                seq.num_draft_tokens_reached += num_emitted if num_accepted < k else k
                seq.num_draft_tokens_accepted += num_accepted
            else:
                num_emitted = 1
                seq.num_computed_tokens += 1
            # as `_commit` emits, less the fork: a decoding sequence sampled its first before
            num_outputs += num_emitted
            seq.num_output_tokens = num_outputs
            seq.token_times_s.add_at(timeline, end_index, num_emitted)
            if num_outputs >= output_tokens:
                done = seqs.index(seq, shrunk) + 1
                kv.shrink_to_computed(seqs[shrunk:done])
                shrunk = done
                self._finish(seq, end_s)
        if shrunk < len(seqs):
            kv.shrink_to_computed(seqs[shrunk:] if shrunk else seqs)
        self._count_step_times(any(spec_tokens), start_s, end_s, draft_s)

    def _count_step_times(self, speculated: bool, start_s: float, end_s: float,
                          draft_s: float) -> None:
        """A step's drafting time, and its verifying time when it verified drafts."""
        self.spec_log.draft_s += draft_s
        if speculated:
            self.spec_log.verify_s += end_s - start_s - draft_s

    def _fork_samples(self, parent: Sequence, end_s: float) -> None:
        for child in self._samples.fork(parent, end_s):
            self.sequences[child.seq_id] = child
            self.outstanding_tokens += parent.request.output_tokens
            if child.is_done_generating:
                self._finish(child, end_s, scheduled=False)
            else:
                self.scheduler.fork(parent, child)

    def _finish(self, seq: Sequence, end_s: float, scheduled: bool = True) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_s = end_s
        request = seq.request
        self.outstanding_tokens -= request.total_tokens if seq.sample_index == 0 else request.output_tokens
        if scheduled:
            self.scheduler.on_finished(seq)
        if self._samples.close(request) and self._on_done:
            self._on_done(self.sequences[request.request_id])

    def _commit_verify(self, seq: Sequence, k: int, accepted: int | None) -> int:
        """Advance `seq`, which verified `k` drafts, past its `accepted` ones (the executor's
        count for it), give back the rejected drafts' slots, and return how many drafts were
        accepted (the caller counts the verify in `spec_log`)."""
        if (accepted is None or not 0 <= accepted <= k
                or accepted >= seq.request.output_tokens - seq.num_output_tokens):
            raise RuntimeError(
                f"executor reported {accepted!r} accepted drafts for request {seq.seq_id}, "
                f"which verified {k} with {seq.num_remaining_outputs} outputs left"
            )
        seq.num_computed_tokens += 1 + accepted
        # Drafts after the first rejected one were never judged: they say nothing of alpha.
        seq.num_draft_tokens_reached += accepted + 1 if accepted < k else k
        seq.num_draft_tokens_accepted += accepted
        if self._drafts is None:
            raise RuntimeError("a verify step ran, but the allocator cannot give back "
                               "rejected drafts' slots")
        self._drafts.shrink_slots(seq, seq.num_computed_tokens)
        return accepted

    def _record(self, plan: Plan, start_s: float, duration_s: float,
                num_decodes_apart: int = 0) -> None:
        self.log.record(plan, start_s, duration_s, self.scheduler.num_waiting,
                        self.scheduler.allocator.usage(), num_decodes_apart)
