"""The clockless replica step, written once for the simulator and the real backend.

    plan = scheduler.schedule(now)      # who computes how many tokens
    result = executor.execute(plan)     # a cost model, or a real model on tensors
    commit(plan, end = now + result.duration_s)

The caller owns the clock: the SimPy harness advances simulated time by the duration, a real
engine loop reads the wall clock. Every submitted request ends up in `sequences` as finished,
rejected (with a reason) or, if the caller stops early, still waiting/running.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Callable, Protocol

from policies.scheduler.base import Scheduler
from policies.types import Plan, Request, Sequence, SeqStatus, StepResult


class Executor(Protocol):
    def execute(self, plan: Plan) -> StepResult: ...


@dataclass(slots=True)
class IterationLog:
    """One row per executed iteration, in compact columns (no per-iteration objects)."""

    start_s: array = field(default_factory=lambda: array("d"))
    duration_s: array = field(default_factory=lambda: array("d"))
    batch_size: array = field(default_factory=lambda: array("l"))
    new_tokens: array = field(default_factory=lambda: array("l"))
    prefill_tokens: array = field(default_factory=lambda: array("l"))
    num_waiting: array = field(default_factory=lambda: array("l"))
    kv_reserved_slots: array = field(default_factory=lambda: array("l"))
    kv_filled_slots: array = field(default_factory=lambda: array("l"))

    def __len__(self) -> int:
        return len(self.start_s)


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
    ) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.max_model_len = max_model_len
        self.sequences: dict[int, Sequence] = {}
        self.log = IterationLog()
        self.kv_total_slots = scheduler.allocator.usage().total_slots
        self._on_done = on_done

    def submit(self, request: Request, now_s: float) -> Sequence:
        """Queue `request`, or reject it now if it could never run on this replica."""
        reason = self._never_fits_reason(request)
        if reason is not None:
            return self.reject(request, reason, now_s)
        seq = Sequence(request)
        self.sequences[request.request_id] = seq
        self.scheduler.add(seq)
        return seq

    def reject(self, request: Request, reason: str, now_s: float) -> Sequence:
        """Record `request` as rejected with `reason`; it never runs. Callers that know more
        than the allocator (the real backend checks prompt token ids) reject through here."""
        seq = Sequence(request, status=SeqStatus.REJECTED, reason=reason, finish_s=now_s)
        self.sequences[request.request_id] = seq
        if self._on_done:
            self._on_done(seq)
        return seq

    def _never_fits_reason(self, request: Request) -> str | None:
        if request.total_tokens > self.max_model_len:
            return (
                f"prompt + output = {request.total_tokens} tokens exceeds "
                f"max_model_len {self.max_model_len}"
            )
        return self.scheduler.allocator.never_fits_reason(request)

    @property
    def has_pending(self) -> bool:
        return bool(self.scheduler.num_waiting or self.scheduler.num_running)

    def step(self, now_s: float) -> StepOutcome:
        plan = self.scheduler.schedule(now_s)
        if plan.is_empty:
            return StepOutcome(None, plan.wake_at_s)
        result = self.executor.execute(plan)
        self._record(plan, now_s, result.duration_s)
        self._commit(plan, now_s, now_s + result.duration_s)
        return StepOutcome(result.duration_s)

    def _commit(self, plan: Plan, start_s: float, end_s: float) -> None:
        for chunk in plan.chunks:
            seq = chunk.seq
            if seq.first_scheduled_s is None:
                seq.first_scheduled_s = start_s
            seq.num_computed_tokens += chunk.num_new_tokens
            if seq.num_computed_tokens < seq.num_known_tokens:
                continue  # a partial prefill chunk samples nothing
            seq.num_output_tokens += 1
            seq.token_times_s.append(end_s)
            if seq.is_done_generating:
                seq.status = SeqStatus.FINISHED
                seq.finish_s = end_s
                self.scheduler.on_finished(seq)
                if self._on_done:
                    self._on_done(seq)

    def _record(self, plan: Plan, start_s: float, duration_s: float) -> None:
        log = self.log
        usage = self.scheduler.allocator.usage()
        log.start_s.append(start_s)
        log.duration_s.append(duration_s)
        log.batch_size.append(len(plan.chunks) + len(plan.padding))
        log.new_tokens.append(plan.num_new_tokens)
        log.prefill_tokens.append(
            sum(c.num_new_tokens for c in plan.chunks if c.num_new_tokens > 1
                or c.num_context_tokens < c.seq.request.prompt_tokens)
        )
        log.num_waiting.append(self.scheduler.num_waiting)
        log.kv_reserved_slots.append(usage.reserved_slots)
        log.kv_filled_slots.append(usage.filled_slots)
