"""The decode fast-forward: a run of decode-only iterations of one batch, done in one go.

Between two events that can change a replica's work (an arrival, a finish), the iterations
of a continuous-batching engine often repeat: the same batch, each sequence one more token.
Instead of one schedule/execute/commit per iteration, the engine asks three parties at once:

    scheduler  RepeatsDecodeBatch   which batch every later `schedule()` would decode
    allocator  GrowsInLockstep      KV growth of that batch over num_steps rounds
    executor   LockstepPricing      each of those iterations' durations

and writes the log rows, token times and completions the step-by-step loop would have
written: results do not change (bit for bit), only their cost. Each ability is an optional
protocol a class declares by subclassing it (a scheduler, allocator or executor that does not
is simply stepped one iteration at a time); the subclass supplies every method.

Speculative decoding repeats too, but not in lockstep: each step a sequence emits its
accepted drafts plus one, so contexts drift apart and k may change. Its runs go one step at
a time without the event loop, the scheduler's search or a plan (`VerifyFastForward`): a step
is each sequence's k and new tokens, as plain ints:

    scheduler  RepeatsVerifyBatch   the repeated batch, and each one's k and new tokens
    allocator  GrowsForVerifies     a run's KV: each step's growth (decode and draft slots)
    executor   PricesVerifies       a step's price from those sizes, then its acceptance draws

each step priced, grown, drawn and committed through the engine's own record and commit of
verify steps, so a run leaves exactly what stepping leaves.

A step that is not a run (a prompt's chunk rides along) still decodes most of its batch one
token each. A scheduler and executor that declare `PlansDecodesApart` and `PricesDecodesApart`
hand those decodes as sequences, not chunks: the engine prices, logs and commits them as
one lockstep row, the plan holding only the step's other chunks (same results, bit for bit).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Collection
from itertools import accumulate
from operator import add, attrgetter
from typing import Callable, ClassVar, Protocol, runtime_checkable

from policies.kv.base import KVUsage, LockstepUsage
from policies.logs import IterationLog, SpeculationLog
from policies.token_times import TokenTimeline
from policies.types import Plan, Sequence, StepResult

_computed_tokens = attrgetter("num_computed_tokens")

FIRST_CHUNK_STEPS = 16
"""Iterations priced in the first batch of a run with no deadline (then doubling)."""


@runtime_checkable
class RepeatsDecodeBatch(Protocol):
    """A scheduler that can say which batch its next `schedule()` calls would decode."""

    def repeated_batch(self, plan: Plan,
                       decodes: Collection[Sequence] = ()) -> list[Sequence] | None:
        """The batch every later `schedule()` would decode, after `plan` is committed, until
        a request arrives, a sequence finishes or the KV pool cannot grow the batch: each
        sequence one token, in this order. None when `plan` does not start such a run.
        `decodes`: the plan's leading one-token decodes, when they came apart from it
        (`PlansDecodesApart`)."""
        raise NotImplementedError

    def drained_batch(self) -> list[Sequence] | None:
        """When nothing waits to join the running batch: that batch (which then repeats as
        `repeated_batch` says, if all of it is decoding); None otherwise."""
        raise NotImplementedError

    def nothing_can_join(self) -> bool:
        """Whether no waiting or swapped-out work could join the running batch however much
        memory frees up (nothing waits, or every seat is taken). A speculative run needs it:
        rejected drafts give slots back, so its pool does not only fill."""
        raise NotImplementedError

    def padding_contexts(self) -> list[int]:
        """Cached tokens of each row that every step of the batch's run also computes
        without growing (a static batch's finished members, as padding), in plan order;
        empty for a scheduler without padding."""
        raise NotImplementedError


@runtime_checkable
class GrowsInLockstep(Protocol):
    """A KV allocator that grows a decoding batch by many tokens at once."""

    registers_verified_blocks: ClassVar[bool] = False
    """Whether, as a prefix cache, its lockstep growth also registers the full blocks a
    speculative verify's accepted tokens left unregistered (as `allocate_slots` does) or
    declines: only then may it grow a mixed step's decodes in place of `allocate_slots`."""

    def grow_in_lockstep(self, seqs: list[Sequence], num_steps: int) -> LockstepUsage | None:
        """Do what `num_steps` rounds of `allocate_slots(seq, seq.num_known_tokens + round)`
        over `seqs`, in order, would do, and return the usage after each round; or nothing
        and None when a round could not be served (a preemption is due) or would do more
        than grow (a copy)."""
        raise NotImplementedError


@runtime_checkable
class LockstepPricing(Protocol):
    """An executor that prices a run of decode-only iterations of one batch in one go."""

    def lockstep_decode_times(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0,
                              padding_contexts: Collection[int] = ()) -> list[float] | None:
        """What `execute` would return for each of `num_steps` iterations in which sequence
        i decodes on `context_tokens[i] + j` cached tokens at step j (from `first_step`),
        beside padding rows that compute one token on `padding_contexts[p]` each step,
        without side effects; None when it cannot say (the engine then steps one by one)."""
        raise NotImplementedError

    def ran_lockstep_decodes(self, context_tokens: list[int], num_steps: int,
                             padding_contexts: Collection[int] = ()) -> None:
        """The engine ran the first `num_steps` of those iterations (for counters and
        observers; pricing them had no side effects)."""
        raise NotImplementedError


@runtime_checkable
class PlansDecodesApart(Protocol):
    """A scheduler whose steps often decode most of the batch one token each, next to a
    prompt's chunk (chunked prefill), and that can plan those decodes apart."""

    def schedule_decodes_apart(self, now_s: float) -> tuple[list[Sequence], Plan]:
        """What `schedule(now_s)` does, its plan's leading one-token decodes (sequences with
        exactly one token to compute, whose KV it grew) given as their sequences and left
        out of the plan; none apart when the plan would hold nothing else."""
        raise NotImplementedError


@runtime_checkable
class PricesDecodesApart(Protocol):
    """An executor that runs a plan with its leading one-token decodes given apart."""

    def execute_decodes_apart(self, decode_contexts: list[int], plan: Plan) -> StepResult:
        """`execute` of `plan` with one-token decodes on `decode_contexts` cached tokens
        (in order) before its chunks: the same result and side effects."""
        raise NotImplementedError


@runtime_checkable
class RepeatsVerifyBatch(RepeatsDecodeBatch, Protocol):
    """A speculative scheduler whose repeated batch (`RepeatsDecodeBatch`, each sequence's
    one token widened by its drafts) it can plan without its search."""

    def verify_sizes(self, batch: list[Sequence]) -> tuple[list[int], list[int], int]:
        """(k, new tokens) of each chunk the next `schedule()` would plan for the repeated
        `batch`, in order (verifies; k = 0 and one new token for a plain decode where no
        draft fits), if every draft's slots are given; and for how many steps of the batch
        in a row they hold whatever each step accepts (at least 1); no side effects."""
        raise NotImplementedError


@runtime_checkable
class GrowsForVerifies(Protocol):
    """A KV allocator that serves a speculative run's steps: each step's growth at once, or
    refused whole, and its commit's give-back (`VerifyRunKV`)."""

    def verify_run(self, seqs: list[Sequence]) -> VerifyRunKV:
        """The KV of one speculative run of batch `seqs` (nothing else touches the batch or
        the pool between its steps)."""
        raise NotImplementedError


class VerifyRunKV(Protocol):
    """A speculative run's KV: each step grown (`grow`), then committed, which gives back
    its rejected drafts (`shrink_to_computed`) row by row up to a finish, then the rest.
    Between two steps only that commit touches the batch (each sequence advanced by what
    its verify emitted) or the pool, so a step may take what the one before left as given."""

    def grow(self, num_tokens: list[int]) -> bool:
        """Do what `allocate_slots(seq, seq.num_known_tokens)` over the batch, then
        `allocate_slots(seq, n)` over the batch and `num_tokens`, in order, would do, and
        return True; or nothing and False when one of those calls would fail or copy a
        block."""
        raise NotImplementedError

    def shrink_to_computed(self, seqs: list[Sequence]) -> None:
        """`shrink_slots(seq, seq.num_computed_tokens)` of each of `seqs`, in order, after the
        step just grown: `seqs` is the batch, or a stretch of it (the rows up to a finish,
        then the rest), each shrunk once a step."""
        raise NotImplementedError

    def computed_tokens(self) -> list[int] | None:
        """Each row's computed tokens (the tokens it holds) since the last step's commit,
        when known here without asking the sequences; else None."""
        raise NotImplementedError

    def usage(self) -> KVUsage:
        """The allocator's `usage()` after the step just grown (its log row)."""
        raise NotImplementedError

    def end(self) -> None:
        """The run is over (the allocator may have been told less till then)."""
        raise NotImplementedError


@runtime_checkable
class PricesAhead(Protocol):
    """An executor whose `execute(plan)` is `run_priced(plan, price(plan))`: a price with no
    side effects, then what running it does (acceptance draws, counters)."""

    def price(self, plan: Plan) -> PricedStep:
        """What `plan` takes, without side effects."""
        raise NotImplementedError

    def run_priced(self, plan: Plan, priced: PricedStep) -> StepResult:
        """Run `plan`, priced as `priced`: `execute(plan)`'s result and side effects."""
        raise NotImplementedError


class PricedStep(Protocol):
    duration_s: float


@runtime_checkable
class PricesRows(Protocol):
    """A cost model that prices a step from its rows' sizes, without a plan."""

    def price_rows(self, new_tokens: list[int], context_tokens: list[int],
                   num_sampling: int) -> PricedStep:
        """`price` of a plan without swaps or copies whose rows compute `new_tokens[i]` on
        `context_tokens[i]` cached tokens, `num_sampling` positions computing logits."""
        raise NotImplementedError

    def ran_rows(self, priced: PricedStep) -> None:
        """What `run_priced` does besides returning the price (counters)."""
        raise NotImplementedError

    @property
    def prices_by_context_sum(self) -> bool:
        """Whether `price_rows` of rows that all compute the same new tokens depends on
        their cached tokens only through their sum (a step's price can then be remembered
        by that sum)."""
        raise NotImplementedError


class PricedVerifies(PricedStep, Protocol):
    draft_s: float
    """The drafting part of `duration_s`."""


@runtime_checkable
class PricesVerifies(Protocol):
    """A speculative executor that prices and runs a step of decoding sequences' verifies
    from their sizes (`RepeatsVerifyBatch.verify_sizes`), without a plan."""

    def price_verifies(self, context_tokens: list[int], new_tokens: list[int],
                       spec_tokens: list[int]) -> PricedVerifies | None:
        """`price` of the plan whose chunk i computes `new_tokens[i]` on `context_tokens[i]`
        verifying `spec_tokens[i]` drafts (a plain decode: 0), without side effects; None
        when it cannot say (the engine then steps one at a time)."""
        raise NotImplementedError

    def run_verifies(self, seqs: list[Sequence], spec_tokens: list[int],
                     priced: PricedVerifies) -> list[int]:
        """`run_priced` of that plan of `seqs`' chunks: its side effects, and each chunk's
        accepted drafts (0 for a plain decode). A run hands the same `seqs` list, which
        nothing changes, at each of its steps."""
        raise NotImplementedError


class RunFastForward:
    """Runs the iterations of an unchanged batch that follow a step, for one engine; a
    subclass says how one run of a batch goes (`_run_batch`)."""

    def __init__(self, scheduler: RepeatsDecodeBatch) -> None:
        self._scheduler = scheduler
        self._resumable: list[Sequence] | None = None
        """The batch of the last run, when only its deadline stopped it."""
        self._last_step_s = 0.0
        self._decode_step_s: float | None = None
        """The last decode iteration's duration, the pace at which a run's first pricing
        call guesses how many steps fit before its deadline (the step before a run is
        usually a prefill, far slower: guessing from it, a quarter of the runs needed a
        second call). A guess only sizes the calls: the steps run are the same."""

    def run(self, plan: Plan, now_s: float, end_s: float, until_s: float, step_s: float,
            grace: int, decodes: Collection[Sequence] = ()) -> float | None:
        """Run the decode-only iterations that follow `plan` (a step from `now_s` to `end_s`,
        which took `step_s`; `decodes` its decodes planned apart) while their batch stays
        the same and they start before `until_s` (plus `grace` iterations); return when the
        last one ends (None if none ran). When sequences finish, the rest of the batch goes
        on if nothing waits to join it."""
        scheduler = self._scheduler
        batch = scheduler.repeated_batch(plan, decodes) or scheduler.drained_batch()
        pace_s = step_s if self._decode_step_s is None else self._decode_step_s
        return self._runs_from(batch, now_s, end_s, until_s, pace_s, grace)

    def resume(self, now_s: float, until_s: float, grace: int) -> float | None:
        """Go on with the last run's batch from `now_s`, when only its deadline (`until_s`
        then: an arrival, which went to another replica) stopped it and nothing reached this
        engine since (`forget`): the plan of the step at `now_s` would be the same repeated
        batch, so it runs as part of the run. None when there is no such batch."""
        batch, self._resumable = self._resumable, None
        if batch is None or len(batch) != self._scheduler.num_running:
            return None
        return self._runs_from(batch, now_s, now_s, until_s, self._last_step_s, grace)

    def forget(self) -> None:
        """Work reached the engine (or it planned a step): the last run cannot resume."""
        self._resumable = None

    def _runs_from(self, batch: list[Sequence] | None, now_s: float, end_s: float,
                   until_s: float, step_s: float, grace: int) -> float | None:
        """Runs of `batch` from `end_s`, then of the batch left when sequences
        finish and nothing waits; when the last one ends (None if none ran)."""
        self._resumable = None
        span_end_s = None
        while batch:
            ran = self._run_batch(batch, now_s, end_s, until_s, step_s, grace)
            if ran is None:
                break
            end_s, finished, step_s = ran
            self._decode_step_s = step_s
            span_end_s = end_s
            if not finished:
                self._resumable, self._last_step_s = batch, step_s
                break
            if end_s >= until_s:
                break
            batch = self._scheduler.drained_batch()
        return span_end_s

    def _run_batch(self, seqs: list[Sequence], now_s: float, end_s: float, until_s: float,
                   step_s: float, grace: int) -> tuple[float, bool, float] | None:
        """Run the iterations of batch `seqs` from `end_s` while they start before `until_s`
        (plus `grace`) and return (when the last ends, whether sequences finished in it, the
        last one's duration); None if none ran."""
        raise NotImplementedError


class DecodeFastForward(RunFastForward):
    """Runs the decode-only iterations that follow a step, for one engine."""

    def __init__(self, scheduler: RepeatsDecodeBatch, allocator: GrowsInLockstep,
                 executor: LockstepPricing, log: IterationLog, timeline: TokenTimeline,
                 num_waiting: Callable[[], int],
                 finish: Callable[[Sequence, float], None]) -> None:
        super().__init__(scheduler)
        self._allocator = allocator
        self._executor = executor
        self._log = log
        self._timeline = timeline
        self._num_waiting = num_waiting
        self._finish = finish

    @classmethod
    def of(cls, scheduler: object, allocator: object, executor: object, log: IterationLog,
           timeline: TokenTimeline, num_waiting: Callable[[], int],
           finish: Callable[[Sequence, float], None]) -> DecodeFastForward | None:
        """The fast-forward of an engine whose three parties all declare their part; None
        (step by step) when one does not."""
        if (isinstance(scheduler, RepeatsDecodeBatch) and isinstance(allocator, GrowsInLockstep)
                and isinstance(executor, LockstepPricing)):
            return cls(scheduler, allocator, executor, log, timeline, num_waiting, finish)
        return None

    def _run_batch(self, seqs: list[Sequence], now_s: float, end_s: float, until_s: float,
                   step_s: float, grace: int) -> tuple[float, bool, float] | None:
        """Run in one go the iterations in which batch `seqs` decodes one token each, from
        `end_s`, and return (when the last ends, whether sequences finished in it, the last
        one's duration); None if none ran. `step_s`, the duration of the step before, sizes
        the first batch of steps priced (as many as fit before `until_s` at that pace).

        They stop at the first iteration in which a sequence finishes (it ends the batch),
        before an iteration that would start at or after `until_s` (`grace` of them may), and
        where the pool cannot grow the batch (a preemption is due). Each iteration's end is
        accumulated exactly as the caller's clock would (`start + duration`), the caller's
        `now_s + (end - now_s)` must land on the same float, and every log row, token time,
        block, hash and completion comes out as one step at a time would leave them.
        """
        padding = self._scheduler.padding_contexts()
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
        chunk = FIRST_CHUNK_STEPS
        if step_s > 0 and until_s < math.inf:
            # as many as fit at the last pace, and a little more: steps lengthen as the
            # batch reads more KV, and a second pricing call costs more than a spare step
            chunk = max(1, math.ceil((until_s - end_s) / step_s) + 2)
        while len(ends) < max_steps and (t < until_s or grace):
            more = self._executor.lockstep_decode_times(
                contexts, min(chunk, max_steps - len(ends)), len(ends), padding)
            if more is None:
                return None
            starts = array("d", accumulate(more, initial=t))  # each step's start, then the last end
            # the steps that start before `until_s` run, then up to `grace` more
            num_run = bisect_left(starts, until_s, 0, len(more))
            num_grace = min(grace, len(more) - num_run)
            grace -= num_grace
            num_run += num_grace
            durations.extend(more[:num_run])
            ends.extend(starts[1:num_run + 1])
            t = starts[num_run]
            if num_run < len(more):
                break
            chunk *= 2
        while ends and now_s + (ends[-1] - now_s) != ends[-1]:
            ends.pop()
        num_steps = len(ends)
        usages = self._allocator.grow_in_lockstep(seqs, num_steps) if num_steps else None
        if usages is None:
            return None
        self._log.record_decode_run(len(seqs) + len(padding), end_s, ends,
                                    durations[:num_steps], self._num_waiting(), usages)
        last_s = ends[-1]
        timeline = self._timeline
        first = timeline.extend(ends)
        for seq in seqs:
            seq.num_computed_tokens += num_steps
            seq.num_output_tokens += num_steps
            seq.token_times_s.add_run(timeline, first, num_steps)
        finished = num_steps == max_steps
        if finished:
            for seq, left in zip(seqs, remaining):
                if left == num_steps:
                    self._finish(seq, last_s)
        self._executor.ran_lockstep_decodes(contexts, num_steps, padding)
        return last_s, finished, durations[num_steps - 1]


VerifyCommit = Callable[[list[Sequence], VerifyRunKV, list[int], list[int], float, float, float],
                        None]
"""The engine's commit of a verify step: (sequences, their run's KV, k of each, accepted
drafts of each, start, end, drafting seconds)."""


class VerifyFastForward(RunFastForward):
    """Runs the speculative steps that follow a step, for one engine: each is sized by the
    scheduler's rule for its repeated batch (no search), priced, grown, drawn, recorded and
    committed (the engine's record and commit of verify steps) without the event loop."""

    def __init__(self, scheduler: RepeatsVerifyBatch, allocator: GrowsForVerifies,
                 executor: PricesVerifies, log: IterationLog, spec_log: SpeculationLog,
                 num_waiting: Callable[[], int], commit: VerifyCommit) -> None:
        super().__init__(scheduler)
        self._verifier = scheduler
        self._allocator = allocator
        self._executor = executor
        self._log = log
        self._spec_log = spec_log
        self._num_waiting = num_waiting
        self._commit = commit
        """(sequences, their KV, k of each, accepted drafts of each, start, end, drafting
        seconds); it does not count the verifies in `spec_log` (the run counts its own as
        it ends)."""

    @classmethod
    def of(cls, scheduler: object, allocator: object, executor: object, log: IterationLog,
           spec_log: SpeculationLog, num_waiting: Callable[[], int],
           commit: VerifyCommit) -> VerifyFastForward | None:
        """The fast-forward of a speculative engine whose three parties declare their part;
        None (step by step) when one does not."""
        if (isinstance(scheduler, RepeatsVerifyBatch) and isinstance(allocator, GrowsForVerifies)
                and isinstance(executor, PricesVerifies)):
            return cls(scheduler, allocator, executor, log, spec_log, num_waiting, commit)
        return None

    def _run_batch(self, seqs: list[Sequence], now_s: float, end_s: float, until_s: float,
                   step_s: float, grace: int) -> tuple[float, bool, float] | None:
        """Run the steps of batch `seqs` from `end_s`, one at a time, while they start
        before `until_s` (plus `grace`), up to and including the first in which a sequence
        finishes. No waiting work may be able to join (memory a verify gave back could
        admit it; nothing arrives, leaves or finishes before the run's last step, so what
        holds for its first step holds for all). Before anything of a step happens, the step
        must fit the pool (else a preemption or a narrower verify is due: the engine steps
        it) and its end must be one the caller's clock reproduces as `now_s + (end - now_s)`
        (else the run stops short: only a step the caller can land on may end it), so no
        step is ever undone. The steps' log rows and verify counts are written as the run
        ends (nothing reads them before), their waiting count read once (nothing arrives,
        joins or is preempted in a run)."""
        for seq in seqs:  # each must be decoding: outputs sampled, KV for all but the last
            if (not seq.num_output_tokens or seq.num_uncomputed_tokens != 1
                    or seq.first_scheduled_s is None):
                return None
        scheduler, allocator, executor = self._verifier, self._allocator, self._executor
        commit = self._commit
        num_waiting = self._num_waiting()
        starts_s: list[float] = []  # the log rows' columns
        durations_s: list[float] = []
        new_tokens_each: list[int] = []
        usages: list[KVUsage] = []
        spec_tokens_each: list[list[int]] = []  # the verify counts' columns
        accepted_each: list[list[int]] = []
        num_seqs = len(seqs)
        t = end_s
        duration_s = None
        finished = False
        steady_steps = 0  # steps the sizes in hand still hold for (not asked again till 0)
        if not scheduler.nothing_can_join():
            return None
        kv = allocator.verify_run(seqs)
        while t < until_s or grace:
            if not steady_steps:
                spec_tokens, new_tokens, steady_steps = scheduler.verify_sizes(seqs)
                num_new_tokens = sum(new_tokens)
            steady_steps -= 1
            contexts = kv.computed_tokens() or list(map(_computed_tokens, seqs))
            priced = executor.price_verifies(contexts, new_tokens, spec_tokens)
            if priced is None:
                break
            step_end_s = t + priced.duration_s
            if now_s + (step_end_s - now_s) != step_end_s:
                break
            if not kv.grow(list(map(add, contexts, new_tokens))):
                break
            if t >= until_s:
                grace -= 1
            accepted = executor.run_verifies(seqs, spec_tokens, priced)
            duration_s = priced.duration_s
            starts_s.append(t)
            durations_s.append(duration_s)
            new_tokens_each.append(num_new_tokens)
            usages.append(kv.usage())
            spec_tokens_each.append(spec_tokens)
            accepted_each.append(accepted)
            commit(seqs, kv, spec_tokens, accepted, t, step_end_s, priced.draft_s)
            t = step_end_s
            if scheduler.num_running != num_seqs:
                finished = True
                break
        kv.end()
        if duration_s is None:
            return None
        self._log.record_verify_run(num_seqs, starts_s, durations_s, new_tokens_each,
                                    num_waiting, usages)
        self._spec_log.record_steps(spec_tokens_each, accepted_each)
        return t, finished, duration_s
