"""The speed meter (`backend.speed`) on real torch ops: readings of both probes are stamped,
spaced by its interval, and report the time they took so the run loop can leave it out."""

from __future__ import annotations

import time

import pytest

from backend.speed import SpeedMeter


def test_readings_are_positive_probe_times_stamped_with_the_run_time():
    meter = SpeedMeter(time.thread_time)
    spent_s = meter.read(0.5)
    (at_s, dispatch_s, compute_s), = meter.readings
    assert at_s == 0.5
    assert dispatch_s > 0 and compute_s > 0 and dispatch_s + compute_s <= spent_s < 1.0


def test_an_interval_spaces_readings_and_zero_reads_every_time():
    spaced = SpeedMeter(time.perf_counter, interval_s=0.05)
    spent = [spaced.read_if_due(t) for t in (0.0, 0.01, 0.049, 0.05, 0.2)]
    assert [reading.at_s for reading in spaced.readings] == [0.0, 0.05, 0.2]
    assert [s > 0 for s in spent] == [True, False, False, True, True]
    every = SpeedMeter(time.perf_counter)
    for t in (0.0, 0.0, 0.001):
        every.read_if_due(t)
    assert len(every.readings) == 3


def test_a_negative_interval_is_refused():
    with pytest.raises(ValueError, match="interval"):
        SpeedMeter(time.perf_counter, interval_s=-1.0)
