"""The clocks a real run's steps are timed by (`--clock`), and the executor wrapper that
times them.

- `wall`: `time.perf_counter`, what a user of the server sees. On a shared machine it also
  counts the time the OS gave to other processes while a step ran.
- `cpu`: this thread's CPU time (`time.thread_time`; torch runs on the calling thread with
  one intra-op thread), which leaves out time spent descheduled. Idle waits for arrivals are
  skipped rather than slept (`CpuClock`): the loop's clock jumps to the next arrival. On a
  dedicated CPU the two agree; on a contended one `cpu` measures the backend and `wall` the
  machine. CPU only: on CUDA the host thread waits for the device, which CPU time misses.
"""

from __future__ import annotations

import dataclasses

import time
from typing import Callable

import torch

from backend.runner import RealExecutor
from policies.types import Plan, StepResult

Shape = tuple[tuple[int, ...], tuple[int, ...]]
CLOCKS = ("wall", "cpu")


def timer_for(clock: str, device: torch.device) -> Callable[[], float]:
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; choose one of: {', '.join(CLOCKS)}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu measures host CPU time, which misses GPU work: use "
                         "--clock wall on CUDA")
    return time.perf_counter if clock == "wall" else time.thread_time


class CpuClock:
    """The run loop's clock for `--clock cpu`: CPU time while busy, plus every wait the loop
    asked for, which it gets at once instead of sleeping."""

    def __init__(self) -> None:
        self.waited_s = 0.0

    def now(self) -> float:
        return time.thread_time() + self.waited_s

    def sleep(self, seconds: float) -> None:
        self.waited_s += max(0.0, seconds)


class TimedExecutor:
    """Passes plans to the real executor, remembers the shape of the last one, and reports
    its duration on the chosen clock (the real executor times itself by the wall clock)."""

    def __init__(self, inner: RealExecutor, timer: Callable[[], float]) -> None:
        self.inner = inner
        self.timer = timer
        self._step_began_s: float | None = None
        self.last_shape: Shape | None = None

    def step_began(self) -> None:
        """The run loop starts a step: durations run from here (see `RealExecutor`)."""
        if self.timer is time.perf_counter:
            self.inner.step_began()
        else:
            self._step_began_s = self.timer()

    def execute(self, plan: Plan) -> StepResult:
        chunks = plan.chunks + plan.padding
        self.last_shape = (tuple(c.num_new_tokens for c in chunks),
                           tuple(c.num_context_tokens for c in chunks))
        if self.timer is time.perf_counter:
            return self.inner.execute(plan)
        execute_start_s = self.timer()
        began_s = execute_start_s if self._step_began_s is None else self._step_began_s
        self._step_began_s = None
        result = self.inner.execute(plan)
        end_s = self.timer()
        # The drafting's share of the forward pass, on this clock.
        share = (end_s - execute_start_s) / result.duration_s if result.duration_s > 0 else 1.0
        return dataclasses.replace(result, duration_s=end_s - began_s,
                                   draft_s=result.draft_s * share)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
