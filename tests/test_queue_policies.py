"""Queue policies: priority classes with preemption, shortest-first, deadlines."""

from __future__ import annotations

import numpy as np
import pytest

from policies.engine import Engine
from policies.kv.paged import PagedAllocator, PagedParams
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.types import Request
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from tests.helpers import FixedCostExecutor


def test_a_higher_class_preempts_a_lower_one_to_get_in():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=4, watermark=0.0))
    params = ContinuousParams(max_num_seqs=8, max_num_batched_tokens=64, queue_policy="priority")
    ex = FixedCostExecutor()
    engine = Engine(ContinuousScheduler(params, alloc), ex, max_model_len=100)
    engine.submit(Request(0, 0.0, 12, 4, priority=1), 0.0)
    engine.step(0.0)
    engine.submit(Request(1, 0.0, 8, 2, priority=0), 1.0)
    engine.step(1.0)
    # Request 1 (class 0) needs 3 blocks; request 0 (class 1) holds 4 and yields them.
    assert ex.plans == [[(0, 12)], [(1, 8)]]
    assert engine.sequences[0].num_preemptions == 1


def _class_ttft(queue_policy: str) -> tuple[dict, dict[int, float]]:
    options = ReplayOptions(rate_scale=4.0, num_gpu_blocks=2500, max_requests=1000,
                            queue_policy=queue_policy, priority_mix="0.2,0.8", slo_ttft_s=2.0)
    results = simulate(resolve(options))
    ttft: dict[int, list[float]] = {0: [], 1: []}
    for seq in results.sequences.values():
        ttft[seq.request.priority].append(seq.token_times_s[0] - seq.request.arrival_time_s)
    return results.summary, {c: float(np.mean(v)) for c, v in ttft.items()}


def test_priority_classes_and_shortest_first_on_an_overloaded_replica(capsys):
    rows = {policy: _class_ttft(policy) for policy in ("fcfs", "priority", "spf", "edf")}
    with capsys.disabled():
        print("\n  policy     TTFT mean (s)  TTFT p99 (s)  class 0 mean  class 1 mean")
        for policy, (s, by_class) in rows.items():
            print(f"  {policy:<9} {s['ttft_mean_s']:>13.2f} {s['ttft_p99_s']:>13.2f}"
                  f" {by_class[0]:>13.2f} {by_class[1]:>13.2f}")
    fcfs, priority, spf = rows["fcfs"], rows["priority"], rows["spf"]
    assert priority[1][0] < 0.1 * priority[1][1]
    assert fcfs[1][0] == pytest.approx(fcfs[1][1], rel=0.2)
    assert spf[0]["ttft_mean_s"] < fcfs[0]["ttft_mean_s"]
    assert rows["edf"][1][0] < rows["edf"][1][1]
    for s, _ in rows.values():
        assert s["requests_finished"] == 1000
