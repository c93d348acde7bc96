"""The SimPy process around one replica's clockless engine.

One SimPy event per engine iteration (a timeout of the iteration's duration), never one per
token; with the engine's decode fast-forward, one event per run of decode-only iterations
between arrivals and completions. An idle replica waits on an Event that the next arrival triggers, or on a timeout when
the scheduler asked to be woken at a given time (a static batch's max wait).
"""

from __future__ import annotations

import math
from typing import Callable, Generator

import simpy

from policies.engine import Engine
from policies.types import Request, Sequence


class SimReplica:
    def __init__(self, env: simpy.Environment, engine: Engine,
                 horizon: Callable[[], float] = lambda: math.inf,
                 stop_s: float = math.inf) -> None:
        """`horizon()` is the earliest time anything outside may change this replica's work
        (its next arrival): decode iterations the engine fast-forwards start before it (one
        after it at most, `Engine.step`), and none at or after `stop_s` (the run's end)."""
        self.env = env
        self.engine = engine
        self._horizon = horizon
        self._stop_s = stop_s
        self._wakeup = env.event()
        self.busy_until_s = -math.inf
        """When the step (or decode run) under way ends; in the past when idle."""
        self.process = env.process(self._run())

    def submit(self, request: Request) -> None:
        self.engine.submit(request, self.env.now)
        self._wake()

    def submit_transferred(self, seq: Sequence, transfer_s: float) -> None:
        self.engine.submit_transferred(seq, transfer_s, self.env.now)
        self._wake()

    def _wake(self) -> None:
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def _run(self) -> Generator[simpy.Event, None, None]:
        env = self.env
        while True:
            outcome = self.engine.step(env.now, self._horizon(), self._stop_s)
            if outcome.duration_s is not None:
                self.busy_until_s = env.now + outcome.duration_s
                yield env.timeout(outcome.duration_s)
                continue
            self._wakeup = env.event()
            if outcome.wake_at_s is not None:
                yield self._wakeup | env.timeout(max(0.0, outcome.wake_at_s - env.now))
            else:
                yield self._wakeup
