"""Routers: decisions pinned on fake replicas, then cluster-level effects on real workloads."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from policies.registry import ROUTERS
from policies.router.prefix_affinity import PrefixAffinityParams, PrefixAffinityRouter
from policies.router.simple import LeastOutstandingParams, LeastOutstandingRouter
from policies.types import Request
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from tests.helpers import SHARED

AZURE_CODE = SHARED / "traces/azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv"


@dataclass
class FakeReplica:
    outstanding_requests: int = 0
    outstanding_tokens: int = 0
    cached: dict[int, int] = field(default_factory=dict)

    def cached_prefix_tokens(self, request: Request) -> int:
        return self.cached.get(request.request_id, 0)


REQUEST = Request(7, 0.0, 1000, 10)


def test_round_robin_cycles():
    router = ROUTERS["round-robin"].policy(ROUTERS["round-robin"].make_params({}))
    replicas = [FakeReplica() for _ in range(3)]
    assert [router.route(REQUEST, replicas) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_least_outstanding_by_requests_or_tokens():
    replicas = [FakeReplica(3, 100), FakeReplica(1, 5000), FakeReplica(1, 900)]
    assert LeastOutstandingRouter(LeastOutstandingParams("requests")).route(REQUEST, replicas) == 1
    assert LeastOutstandingRouter(LeastOutstandingParams("tokens")).route(REQUEST, replicas) == 0


def test_prefix_affinity_prefers_the_cache_until_load_is_unbalanced():
    router = PrefixAffinityRouter(PrefixAffinityParams(affinity_threshold=0.5, balance_abs=4))
    replicas = [FakeReplica(2), FakeReplica(5, cached={7: 800}), FakeReplica(1, cached={7: 300})]
    assert router.route(REQUEST, replicas) == 1  # 80% of the prompt cached there
    replicas[1].outstanding_requests = 9  # 9 - 1 > 4 and 9 > 1.5 x 1: balance wins
    assert router.route(REQUEST, replicas) == 2
    replicas[1].cached = {7: 400}  # below the threshold: least loaded
    replicas[1].outstanding_requests = 3
    assert router.route(REQUEST, replicas) == 2


def test_cluster_accounts_for_every_request_and_spreads_them():
    options = ReplayOptions(max_requests=400, replicas=3, router="round-robin")
    results = simulate(resolve(options))
    s = results.summary
    assert s["requests_total"] == s["requests_finished"] == 400 and s["replicas"] == 3
    assert [row["requests"] for row in results.replica_rows()] == [134, 133, 133]


def test_prefix_affinity_raises_the_cluster_hit_rate_over_round_robin(capsys):
    trace = ("sessions:n=200,turns=4,system=256,user=lognormal:300:0.5,"
             "answer=lognormal:150:0.5,arrivals=poisson:6,think=8")
    rows = {}
    for router in ("round-robin", "prefix-affinity"):
        options = ReplayOptions(trace=trace, replicas=4, router=router, allocator="paged-prefix",
                                num_gpu_blocks=4000)
        rows[router] = simulate(resolve(options)).summary
    with capsys.disabled():
        print("\n  router            prefix hit rate   TTFT p50 (ms)   TTFT p99 (ms)")
        for router, s in rows.items():
            print(f"  {router:<17} {s['prefix_hit_rate']:>15.3f} {s['ttft_p50_s'] * 1e3:>15.1f}"
                  f" {s['ttft_p99_s'] * 1e3:>15.1f}")
    assert rows["prefix-affinity"]["prefix_hit_rate"] > rows["round-robin"]["prefix_hit_rate"] + 0.2


@pytest.mark.skipif(not AZURE_CODE.exists(), reason=f"shared trace not found at {AZURE_CODE}")
def test_least_outstanding_beats_round_robin_on_bursty_arrivals(capsys):
    """Azure's code trace (inter-arrival CV 13), first 15 minutes at 2x, 4 replicas. Counting
    outstanding tokens sees the long prompts that counting requests misses."""
    rows = {}
    for router, load in (("round-robin", "requests"), ("least-outstanding", "requests"),
                         ("least-outstanding", "tokens")):
        options = ReplayOptions(trace=str(AZURE_CODE), window_end_s=900.0, replicas=4,
                                router=router, router_load=load, rate_scale=2.0)
        rows[(router, load)] = simulate(resolve(options)).summary
    with capsys.disabled():
        print("\n  router / load                   TTFT p50 (s)   TTFT p99 (s)   E2E p99 (s)")
        for (router, load), s in rows.items():
            print(f"  {router + ' / ' + load:<30} {s['ttft_p50_s']:>12.3f} {s['ttft_p99_s']:>14.3f}"
                  f" {s['e2e_p99_s']:>13.3f}")
    round_robin = rows[("round-robin", "requests")]
    assert rows[("least-outstanding", "tokens")]["ttft_p99_s"] < 0.85 * round_robin["ttft_p99_s"]
    assert rows[("least-outstanding", "requests")]["ttft_p99_s"] < round_robin["ttft_p99_s"]
