"""A speed meter for shared machines: a short fixed workload timed during a run, so the
machine's speed state at each moment is known alongside the steps it slowed down.

Why: a shared CPU switches between speed states for about a second at a time (on the 2-core
development VM the same decode step takes 1.5 ms, then 2.7 ms, with nothing else running
in the VM), and that shows in thread CPU time too. A reading before and after a 15 s run
cannot see a state that lasted two of those seconds; a reading before every step can.
`sim.machine_speed` turns them into a speed trace the simulator replays, the way it replays
a real run's measured speculative acceptance, and normalizes the profile the cost model is
fitted to by the same readings.

The probe is a chain of tiny torch ops, so its time is the cost of dispatching them: an
engine step of a small model is mostly that (and Python), and on the development VM the
probe's time explained most of the steps' drift (their log-time residual fell from 10% to 4%
against a matmul probe's 5% and a pure-Python one's 5%). Its time is taken out of the run's
clock (`run_wall_clock(meter=...)`), so the run is timed as if no probe ran.
"""

from __future__ import annotations

from typing import Callable

import torch

PROBE_ROUNDS = 15
"""Rounds of three small ops each: about 0.2 ms on the development VM."""
INTERVAL_S = 0.0
"""Run-clock time between readings. 0: before every step, as the profile reads it. The probe
is not scale-free: read every 50 ms, after a stretch of engine work, it took 1.5x as long as
the same machine state gave it right between steps (its code and data come back cold), and
the run's factors were then 1.5x where its steps ran 1.15x slower than the profile's. So
the run reads it as often as the profile does."""


class SpeedMeter:
    """Times the probe on `timer` (the run's clock: wall or thread CPU time) and keeps every
    reading as (run time, probe seconds)."""

    def __init__(self, timer: Callable[[], float], interval_s: float = INTERVAL_S) -> None:
        if interval_s < 0:
            raise ValueError(f"speed meter interval must be >= 0, got {interval_s}")
        self.timer = timer
        self.interval_s = interval_s
        self.readings: list[tuple[float, float]] = []
        self._x = torch.linspace(-1.0, 1.0, 64).reshape(1, 64)

    def probe_s(self) -> float:
        """One probe's duration on the meter's clock."""
        x = self._x
        start_s = self.timer()
        for _ in range(PROBE_ROUNDS):
            x = torch.nn.functional.silu(x * 1.01 + 0.1)
        return self.timer() - start_s

    def read(self, at_s: float) -> float:
        """Take a reading stamped `at_s` (run time); returns the seconds it took to take, so
        the run loop can leave them out of its clock."""
        start_s = self.timer()
        self.readings.append((at_s, self.probe_s()))
        return self.timer() - start_s

    def read_if_due(self, at_s: float) -> float:
        """`read(at_s)` if `interval_s` has passed since the last reading, else nothing (0 s)."""
        if self.interval_s and self.readings and at_s - self.readings[-1][0] < self.interval_s:
            return 0.0
        return self.read(at_s)
