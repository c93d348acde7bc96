"""Closed-loop sending: a request goes out when an earlier one finishes.

inference-perf's `concurrent` load runs stages of `num_requests` requests each, with at most
`concurrency_level` of a stage's requests in flight, the next sent as soon as one finishes; a
stage starts once every request of the stage before it has finished (inference-perf waits for
a stage's requests before starting the next). A closed-loop request has no arrival time until
it is sent: its arrival time is its send time.

`ClosedLoop` keeps that bookkeeping and no clock, so the simulator's harness (`sim.cluster`,
on SimPy events) and the real backend's wall-clock loop (`backend.runner`) send the same
requests in the same order: each asks `due()` which requests go out now and calls `finished()`
when one completes (finished or rejected).

    time ->
    slot 1:  r0 ======= r3 ====                  r4 === r5 ==
    slot 2:  r1 ==== r2 ============
             stage 0: concurrency 2              stage 1: concurrency 1, once r2 and r3 are done
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.types import Request


@dataclass(frozen=True, slots=True)
class ClosedLoopStage:
    num_requests: int
    concurrency: int
    """Most requests of the stage in flight at once."""

    def __post_init__(self) -> None:
        if self.num_requests < 1 or self.concurrency < 1:
            raise ValueError(f"a closed-loop stage needs num_requests >= 1 and concurrency >= 1, "
                             f"got {self.num_requests} and {self.concurrency}")


class ClosedLoop:
    """Which of `requests` (in sending order, stage by stage) may be sent now.

    Invariants: at most the current stage's `concurrency` requests are in flight; a stage's
    first request is sent only when none of the previous stage's is in flight; requests go
    out in order, each once.
    """

    def __init__(self, requests: Sequence[Request], stages: Sequence[ClosedLoopStage]) -> None:
        num_staged = sum(stage.num_requests for stage in stages)
        if num_staged != len(requests):
            raise ValueError(f"closed-loop stages hold {num_staged} requests, the trace "
                             f"{len(requests)}")
        self._requests = requests
        self._stages = stages
        self._next = 0
        self._stage = 0
        self._stage_end = stages[0].num_requests if stages else 0
        self.num_in_flight = 0

    @property
    def all_sent(self) -> bool:
        return self._next == len(self._requests)

    def due(self) -> list[Request]:
        """The requests to send now, in order; they count as in flight from here."""
        sent = []
        while self._next < len(self._requests):
            if self._next == self._stage_end:
                if self.num_in_flight:
                    break  # the stage's last requests are still running
                self._stage += 1
                self._stage_end += self._stages[self._stage].num_requests
                continue
            if self.num_in_flight == self._stages[self._stage].concurrency:
                break
            sent.append(self._requests[self._next])
            self._next += 1
            self.num_in_flight += 1
        return sent

    def finished(self) -> None:
        """One request in flight completed (finished or rejected): its slot is free."""
        if self.num_in_flight == 0:
            raise RuntimeError("a closed-loop completion with no request in flight")
        self.num_in_flight -= 1
