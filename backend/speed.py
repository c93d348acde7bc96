"""A speed meter for shared machines: a short fixed workload timed during a run, so the
machine's speed state at each moment is known alongside the steps it slowed down.

Why: a shared CPU switches between speed states for about a second at a time (on the 2-core
development VM the same decode step takes 1.5 ms, then 2.7 ms, with nothing else running
in the VM), and that shows in thread CPU time too. A reading before and after a 15 s run
cannot see a state that lasted two of those seconds; a reading before every step can.
`sim.machine_speed` turns them into a speed trace the simulator replays, the way it replays
a real run's measured speculative acceptance, and normalizes the profile the cost model is
fitted to by the same readings.

Two probes, because a slow state does not slow all work alike. The dispatch probe is a chain
of tiny torch ops, whose time is the cost of dispatching them: what a small model's per-step
overheads mostly are (on the development VM it explained most of the decode steps' drift:
their log-time residual fell from 10% to 4%). The compute probe is a chain of 128x128
matmuls: prefills, which are mostly arithmetic, follow it and not the dispatch probe (their
log time moved with the dispatch probe's at a slope of only 0.54-0.67). The simulator scales
a step's overhead terms by the first and its roofline terms by the second. Both are read
before every step and their time is taken out of the run's clock
(`run_wall_clock(between_steps=...)`), so the run is timed as if no probe ran.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

DISPATCH_ROUNDS = 15
"""Rounds of three tiny ops each: about 0.2 ms on the development VM."""
COMPUTE_ROUNDS = 6
"""128x128 matmul + tanh rounds: about 0.15 ms on the development VM."""
INTERVAL_S = 0.0
"""Run-clock time between readings. 0: before every step, as the profile reads them. The
probes are not scale-free: read every 50 ms, after a stretch of engine work, the dispatch
probe took 1.5x as long as the same machine state gave it right between steps (its code and
data come back cold). So the run reads them as often as the profile does."""


class Reading(NamedTuple):
    at_s: float
    dispatch_s: float
    compute_s: float


class SpeedMeter:
    """Times the probes on `timer` (the run's clock: wall or thread CPU time) and keeps every
    reading."""

    def __init__(self, timer: Callable[[], float], interval_s: float = INTERVAL_S) -> None:
        if interval_s < 0:
            raise ValueError(f"speed meter interval must be >= 0, got {interval_s}")
        self.timer = timer
        self.interval_s = interval_s
        self.readings: list[Reading] = []
        self._x = torch.linspace(-1.0, 1.0, 64).reshape(1, 64)
        # Standard-normal entries: tanh saturates at +-1 from the first round on, so the
        # values never drift toward the (slow) subnormal range.
        self._a = torch.randn(128, 128, generator=torch.Generator().manual_seed(0))

    def probe(self) -> tuple[float, float]:
        """(dispatch, compute) probe durations on the meter's clock."""
        x, a = self._x, self._a
        start_s = self.timer()
        for _ in range(DISPATCH_ROUNDS):
            x = torch.nn.functional.silu(x * 1.01 + 0.1)
        middle_s = self.timer()
        for _ in range(COMPUTE_ROUNDS):
            a = torch.tanh(a @ self._a)
        return middle_s - start_s, self.timer() - middle_s

    def read(self, at_s: float) -> float:
        """Take a reading stamped `at_s` (run time); returns the seconds it took to take, so
        the run loop can leave them out of its clock."""
        start_s = self.timer()
        self.readings.append(Reading(at_s, *self.probe()))
        return self.timer() - start_s

    def read_if_due(self, at_s: float) -> float:
        """`read(at_s)` if `interval_s` has passed since the last reading, else nothing (0 s)."""
        if self.interval_s and self.readings and at_s - self.readings[-1].at_s < self.interval_s:
            return 0.0
        return self.read(at_s)
