"""Prefill/decode disaggregation: hand-computed transfer, decode memory gating, and when it
pays (long prompts under a tight TPOT SLO) and when it does not (short prompts)."""

from __future__ import annotations

import pytest

from policies.registry import SCHEDULERS
from policies.scheduler.base import TakesTransfers
from policies.speculative.planner import SpeculativeScheduler
from policies.types import Request
from sim.api import simulate
from sim.assembly import build_cost_model
from sim.config import ReplayOptions, resolve
from traces import Trace


def _trace(*requests: Request) -> Trace:
    return Trace(name="hand", requests=list(requests), invalid_rows=[], notes=[])


def test_kv_transfer_is_charged_before_the_first_decode_step():
    prompt, output = 1000, 5
    options = ReplayOptions(model="llama-3-8b", hardware="h100", disaggregate="1:1",
                            kv_link_bandwidth_gb_s=50.0, kv_link_latency_s=0.0002)
    config = resolve(options, _trace(Request(0, 0.0, prompt, output)))
    results = simulate(config)
    cost = build_cost_model(config)
    # Llama-3-8B keeps 32 layers x 2 x 8 heads x 128 x 2 bytes = 128 KiB per token.
    transfer_s = 0.0002 + prompt * 131072 / 50e9
    times = list(results.sequences[0].token_times_s)
    # the request reaches the engine after the frontend's latency (the measured vLLM engine's)
    assert config.frontend_latency_s > 0
    assert times[0] == pytest.approx(config.frontend_latency_s + cost.prefill_time(prompt),
                                     rel=1e-12)
    assert times[1] - times[0] == pytest.approx(transfer_s + cost.decode_time([prompt]), rel=1e-9)
    assert times[2] - times[1] == pytest.approx(cost.decode_time([prompt + 1]), rel=1e-9)
    assert results.summary["requests_finished"] == 1 and len(times) == output


def test_decode_pool_must_hold_the_transferred_kv_before_it_moves():
    # 5 blocks of 16 per replica: each request needs 5 (67 tokens), so the decode replica
    # takes one at a time; the second waits for the first to finish.
    requests = [Request(0, 0.0, 64, 4), Request(1, 0.0, 64, 4)]
    config = resolve(ReplayOptions(disaggregate="1:1", num_gpu_blocks=5), _trace(*requests))
    results = simulate(config)
    first, second = results.sequences[0], results.sequences[1]
    assert second.token_times_s[1] > first.finish_s
    assert results.summary["requests_finished"] == 2


def test_one_token_requests_finish_on_the_prefill_side():
    config = resolve(ReplayOptions(disaggregate="1:2"), _trace(Request(0, 0.0, 100, 1)))
    results = simulate(config)
    assert results.summary["requests_finished"] == 1
    assert [len(e.sequences) for e in results.engines] == [1, 0, 0]


@pytest.mark.parametrize("allocator", ["paged", "contiguous"])
def test_a_request_past_max_model_len_is_rejected_by_the_decode_pool(allocator):
    """The prefill side sees the prompt and one token only; the decode pool rejects what
    the context cannot hold (it ran past max_model_len on paged blocks, and a contiguous
    pool raised for slots beyond the reservation)."""
    requests = [Request(0, 0.0, 900, 200), Request(1, 0.0, 500, 100)]
    config = resolve(ReplayOptions(disaggregate="1:1", max_model_len=1024, allocator=allocator),
                     _trace(*requests))
    results = simulate(config)
    long, short = results.sequences[0], results.sequences[1]
    assert long.status.value == "rejected"
    assert long.reason == "decode pool: prompt + output = 1100 tokens exceeds max_model_len 1024"
    assert short.num_output_tokens == 100
    summary = results.summary
    assert (summary["requests_finished"], summary["requests_rejected"]) == (1, 1)


def test_bad_disaggregation_options_are_clear_errors():
    for value in ("3", "0:2", "a:b"):
        with pytest.raises(ValueError, match="P:D"):
            resolve(ReplayOptions(disaggregate=value), _trace(Request(0, 0.0, 10, 2)))
    with pytest.raises(ValueError, match="not both"):
        resolve(ReplayOptions(disaggregate="1:1", replicas=2), _trace(Request(0, 0.0, 10, 2)))
    with pytest.raises(ValueError, match="takes KV hand-offs.*not static"):
        resolve(ReplayOptions(disaggregate="1:1", scheduler="static"),
                _trace(Request(0, 0.0, 10, 2)))


def test_decode_pools_take_schedulers_that_declare_transfers():
    """`TakesTransfers` is what the decode side needs: every iteration-level scheduler, and
    the speculative wrapper around one, has it; static batching does not."""
    takes = {name for name, entry in SCHEDULERS.items()
             if issubclass(entry.policy, TakesTransfers)}
    assert takes == set(SCHEDULERS) - {"static"}
    assert issubclass(SpeculativeScheduler, TakesTransfers)
    for name in sorted(takes):
        results = simulate(resolve(ReplayOptions(disaggregate="1:1", scheduler=name),
                                   _trace(Request(0, 0.0, 100, 4))))
        assert results.summary["requests_finished"] == 1
        assert [len(e.sequences) for e in results.engines] == [1, 1]


def test_when_disaggregation_helps_and_when_it_does_not(capsys):
    """4 H100s running Llama-3-8B either as 4 colocated replicas or as 1 prefill + 3 decode.
    Long prompts: prefills stall colocated decodes, so only disaggregation meets a 15 ms TPOT
    SLO. Short prompts, decode-heavy: the prefill replica idles and 3 decoders serve less.
    The SLOs are set against the roofline's step times, so the roofline prices both."""
    workloads = {
        "long prompts, TPOT SLO 15 ms": (
            "synthetic:n=600,arrivals=poisson:8,prompt=lognormal:6000:0.3,output=lognormal:250:0.5",
            0.015),
        "short prompts, TPOT SLO 20 ms": (
            "synthetic:n=1000,arrivals=poisson:40,prompt=lognormal:300:0.5,output=lognormal:600:0.5",
            0.020),
    }
    rows = {}
    for name, (trace, tpot_slo) in workloads.items():
        for layout, extra in (("4 colocated", dict(replicas=4)), ("1:3 disaggregated", dict(disaggregate="1:3"))):
            options = ReplayOptions(trace=trace, slo_ttft_s=3.0, slo_tpot_s=tpot_slo,
                                    cost_model="roofline", **extra)
            rows[(name, layout)] = simulate(resolve(options)).summary
    with capsys.disabled():
        print("\n  workload                        layout              TTFT p99  TPOT p99  goodput  req/s")
        for (name, layout), s in rows.items():
            print(f"  {name:<31} {layout:<18} {s['ttft_p99_s']:>8.3f} {s['tpot_p99_s'] * 1e3:>7.1f}ms"
                  f" {s['goodput_req_s']:>8.2f} {s['request_throughput_req_s']:>6.2f}")
    long, short = "long prompts, TPOT SLO 15 ms", "short prompts, TPOT SLO 20 ms"
    assert rows[(long, "1:3 disaggregated")]["goodput_req_s"] > 1.3 * rows[(long, "4 colocated")]["goodput_req_s"]
    assert rows[(long, "1:3 disaggregated")]["tpot_p99_s"] < rows[(long, "4 colocated")]["tpot_p99_s"]
    assert rows[(short, "4 colocated")]["goodput_req_s"] > rows[(short, "1:3 disaggregated")]["goodput_req_s"]
