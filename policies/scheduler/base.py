"""The scheduler contract: plain objects that decide, per iteration, who computes how much.

A scheduler owns its waiting and running queues and the KV allocator's use; the engine owns
the sequences' progress and tells the scheduler when one finishes. Schedulers never read a
clock: `schedule(now_s)` gets the engine's time only so that time-based rules (a static
batch's max wait) can be stated, and answers with a `Plan`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from policies.fast_forward import GrowsInLockstep
from policies.knobs import check_knobs, knob
from policies.kv.base import ForksSequences, KVAllocator, PrefixCache
from policies.types import Plan, Sequence, SeqStatus


@dataclass(frozen=True, slots=True)
class BatchCapParams:
    """The sequence cap every scheduler has (a static batch's size)."""

    max_num_seqs: int = knob(256, min=1, help="max sequences per iteration (static: batch size)")

    def __post_init__(self) -> None:
        check_knobs(self)

    def step_token_limit(self, engine_limit: int) -> int:
        """The most tokens one step of this scheduler computes, given the engine's resolved
        `--max-num-batched-tokens`: what the memory profile runs a dummy batch of (vLLM's
        `profile_run`) and what speculative drafts must fit in beside the plan. A scheduler
        with a budget of its own (chunked's `token_budget`) says so by overriding this."""
        return engine_limit


class Scheduler(Protocol):
    allocator: KVAllocator

    def add(self, seq: Sequence) -> None:
        """Queue a newly arrived sequence."""

    def schedule(self, now_s: float) -> Plan: ...

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Take a new sample of a running request (parallel sampling, beam search)."""

    def on_finished(self, seq: Sequence) -> None:
        """`seq` sampled its last token this step."""

    @property
    def num_waiting(self) -> int: ...

    @property
    def num_running(self) -> int: ...


@runtime_checkable
class TakesTransfers(Protocol):
    """A scheduler that can run a disaggregated decode replica (`--disaggregate P:D`): it
    takes sequences prefilled elsewhere (`Engine.submit_transferred`), gives each memory for
    its whole context, and runs it once its KV has arrived. A scheduler declares the ability
    by having this method; one without it (static batching) is refused for decode pools."""

    def add_transfer(self, seq: Sequence, transfer_s: float) -> None:
        """Queue `seq`, whose prompt and first token were computed elsewhere and whose KV
        takes `transfer_s` to arrive once this replica has given it memory."""
        raise NotImplementedError


class WrappedScheduler:
    """A scheduler around another one (speculation, block diffusion): everything is the
    inner scheduler's except `schedule`, which a subclass rewrites from the inner plan."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner

    @property
    def allocator(self) -> KVAllocator:
        return self.inner.allocator

    @property
    def num_waiting(self) -> int:
        return self.inner.num_waiting

    @property
    def num_running(self) -> int:
        return self.inner.num_running

    def add(self, seq: Sequence) -> None:
        self.inner.add(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        self.inner.fork(parent, child)

    def add_transfer(self, seq: Sequence, transfer_s: float) -> None:
        self.inner.add_transfer(seq, transfer_s)

    def on_finished(self, seq: Sequence) -> None:
        self.inner.on_finished(seq)

    def schedule(self, now_s: float) -> Plan:
        return self.inner.schedule(now_s)


def start_sample(forks: ForksSequences | None, parent: Sequence, child: Sequence) -> bool:
    """Give `child`, a new sample of running `parent`, its KV: True when it runs now; False
    when the pool has no room and it must wait to compute its prompt and first token again.
    `forks` is the scheduler's allocator if it forks (runs that fork refuse others when built)."""
    if forks is None:
        raise RuntimeError(f"sequence {parent.seq_id} forked, but the allocator cannot fork")
    if forks.fork(parent, child):
        child.status = SeqStatus.RUNNING
        return True
    child.num_computed_tokens = 0
    return False


def decodes_grower(allocator: KVAllocator) -> GrowsInLockstep | None:
    """The allocator, when one lockstep round (`grow_in_lockstep(decodes, 1)`) may grow a
    step's decodes in place of their `allocate_slots` calls: a prefix cache only if that
    round registers what `allocate_slots` would (`GrowsInLockstep.registers_verified_blocks`:
    full blocks a speculative verify's accepted tokens left unregistered, which a
    step-by-step decode run never leaves)."""
    if not isinstance(allocator, GrowsInLockstep):
        return None
    if isinstance(allocator, PrefixCache) and not allocator.registers_verified_blocks:
        return None
    return allocator


def admit(seq: Sequence, num_cached_tokens: int) -> None:
    """Mark `seq` running with its prefix-cache hit already computed. A sequence coming back
    after a recompute preemption counts the tokens it computes again as recomputed."""
    if seq.num_preemptions and seq.num_computed_tokens == 0:
        seq.num_recomputed_tokens += seq.num_known_tokens - num_cached_tokens
    seq.num_computed_tokens = num_cached_tokens
    seq.status = SeqStatus.RUNNING


def preempt_by_recompute(
    seq: Sequence, allocator: KVAllocator, waiting: deque[Sequence], plan: Plan
) -> None:
    """Drop `seq`'s KV and put it at the head of the queue; its outputs so far are kept, and
    its next prefill recomputes prompt + outputs (vLLM's recompute preemption)."""
    allocator.free(seq)
    seq.num_computed_tokens = 0
    seq.num_preemptions += 1
    seq.status = SeqStatus.WAITING
    waiting.appendleft(seq)
    plan.preempted.append(seq)
