"""The decode fast-forward changes the simulator's cost, never its results.

Each case replays the same workload with `fast_forward` off (one SimPy event per iteration)
and on (runs of decode-only iterations jumped in one event), and compares: every summary
value within 1e-9 relative (the issue's bound; the construction in fact gives equal bits),
every request's status, token counts, preemptions and token times, and every row of every
replica's iteration log. Cases cover each scheduler, allocator, preemption mode, forks, beams,
speculation, routers, disaggregation, pipeline and tensor parallelism, sliding-window models
(with prefix caching too), MoE and hybrid models, and runs cut by a horizon; workloads are sized
to queue, preempt and evict; and again with the measured cost model.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import Engine
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from sim.results import Results

LIGHT = dict(max_requests=150)
HEAVY = dict(max_requests=150, rate_scale=8.0)  # queueing: waiting work blocks admission
TIGHT = dict(max_requests=120, rate_scale=4.0, num_gpu_blocks=900)  # preemption and eviction
SESSIONS = ("sessions:n=40,turns=3,system=1500,user=lognormal:200:0.5,answer=lognormal:150:0.5,"
            "arrivals=poisson:4,think=2")  # shared prefixes longer than Gemma-3's window

CASES = {
    "continuous paged": dict(LIGHT),
    "continuous paged heavy": dict(HEAVY),
    "continuous paged recompute": dict(TIGHT),
    "continuous paged swap": dict(TIGHT, preemption="swap", swap_space_gb=0.05),
    "continuous contiguous pow2": dict(HEAVY, allocator="contiguous", reserve="pow2"),
    "continuous radix": dict(TIGHT, allocator="radix"),
    "continuous radix light": dict(LIGHT, allocator="radix"),
    "chunked radix sessions": dict(trace=SESSIONS, scheduler="chunked", allocator="radix",
                                   num_gpu_blocks=1500),
    "radix n=2 swap": dict(TIGHT, allocator="radix", n=2, preemption="swap",
                           swap_space_gb=0.05),
    "radix sliding window": dict(trace=SESSIONS, model="gemma-3-12b", allocator="radix",
                                 num_gpu_blocks=3000),
    "chunked paged-prefix": dict(HEAVY, scheduler="chunked", allocator="paged-prefix"),
    "chunked prefix tight": dict(TIGHT, scheduler="chunked", allocator="paged-prefix",
                                 token_budget=512, chunked_order="prefill-first"),
    "orca n=2": dict(HEAVY, scheduler="orca", n=2),
    "orca contiguous n=2": dict(HEAVY, scheduler="orca", allocator="contiguous", n=2),
    "static": dict(LIGHT, scheduler="static", max_num_seqs=8),
    "beam": dict(LIGHT, beam_width=3),
    "priority classes": dict(TIGHT, queue_policy="priority", priority_mix="0.3,0.7"),
    "edf": dict(HEAVY, queue_policy="edf"),
    "draft speculation": dict(LIGHT, speculator="draft", draft_model="llama-3.2-1b"),
    "replicas least-outstanding": dict(HEAVY, replicas=3, router="least-outstanding"),
    "replicas prefix-affinity": dict(HEAVY, replicas=2, router="prefix-affinity",
                                     allocator="paged-prefix"),
    "disaggregated": dict(HEAVY, disaggregate="1:2"),
    "disaggregated 1:3 light": dict(LIGHT, disaggregate="1:3"),
    "disaggregated 2:3 chunked radix": dict(HEAVY, disaggregate="2:3", scheduler="chunked",
                                            allocator="radix"),
    "pipeline parallel": dict(LIGHT, model="llama-3-70b", tp=4, pp=2),
    "tensor parallel": dict(HEAVY, model="llama-3-70b", tp=4),
    "sliding window": dict(HEAVY, model="gemma-3-12b"),
    "moe": dict(HEAVY, model="mixtral-8x7b", tp=2),
    "hybrid ssm": dict(HEAVY, model="jamba-v0.1", tp=4),
    "sliding window paged-prefix": dict(trace=SESSIONS, model="gemma-3-12b",
                                        allocator="paged-prefix", num_gpu_blocks=3000),
    "sliding window prefix chunked n=2": dict(trace=SESSIONS, model="gemma-3-12b", n=2,
                                              scheduler="chunked", allocator="paged-prefix",
                                              num_gpu_blocks=3000),
    "all-window prefix swap": dict(trace=SESSIONS, model="mistral-7b", allocator="paged-prefix",
                                   preemption="swap", swap_space_gb=0.5, num_gpu_blocks=800),
    "horizon": dict(HEAVY, horizon_s=20.0),
}

MEASURED_CASES = {
    "continuous paged heavy": dict(HEAVY),
    "chunked prefix tight": dict(TIGHT, scheduler="chunked", allocator="paged-prefix",
                                 token_budget=512, chunked_order="prefill-first"),
    # decode-first: most steps' decodes planned, priced and committed apart from their chunks
    "chunked paged": dict(HEAVY, scheduler="chunked"),
    "chunked tight n=2": dict(TIGHT, scheduler="chunked", n=2, token_budget=512),
    "draft speculation": dict(LIGHT, speculator="draft", draft_model="llama-3.2-1b"),
    "tensor parallel": dict(HEAVY, model="llama-3-70b", tp=4),
    "sliding window": dict(HEAVY, model="gemma-3-12b"),
    "moe": dict(HEAVY, model="mixtral-8x7b", tp=2),
    "mla": dict(HEAVY, model="deepseek-v2-lite"),
    "hybrid ssm": dict(HEAVY, model="jamba-v0.1", tp=4),
    # a static batch's runs price its finished members as padding rows (stepped under a
    # sliding window)
    "static": dict(HEAVY, scheduler="static", max_num_seqs=16),
    "static sliding window": dict(HEAVY, scheduler="static", max_num_seqs=16,
                                  model="gemma-3-12b"),
    "long runs": dict(trace="synthetic:n=30,arrivals=poisson:0.2,prompt=fixed:100,"
                            "output=fixed:600"),
    # 64 sequences decode past the 8,191 cached tokens the batch-64 decode row was measured
    # to: runs priced as arrays fall back to step-by-step pricing for the steps beyond.
    "past the measured range": dict(model="llama-3.1-8b", pace="asap", max_num_seqs=64,
                                    max_num_batched_tokens=16384,
                                    trace="synthetic:n=64,arrivals=poisson:1000,"
                                          "prompt=fixed:8150,output=fixed:120"),
}
"""Cases replayed again with `--cost-model measured` (pipeline parallelism is roofline-only)."""


def _run(options: dict, fast_forward: bool):
    return simulate(resolve(ReplayOptions(fast_forward=fast_forward, **options)))


def assert_shortcut_keeps_results(monkeypatch, owner: type, name: str,
                                  options: ReplayOptions) -> tuple[Results, float]:
    """Simulate `options` with `owner.name` (a shortcut that answers whether it did the work
    itself) counted, then with it always declining, and assert both leave the same results;
    return the first run and the share of calls in which the shortcut did the work."""
    calls: list[bool] = []
    shortcut = getattr(owner, name)

    def counted(*args) -> bool:
        calls.append(shortcut(*args))
        return calls[-1]

    with monkeypatch.context() as patched:
        patched.setattr(owner, name, counted)
        taken = simulate(resolve(options))
    with monkeypatch.context() as patched:
        patched.setattr(owner, name, lambda *args: False)
        declined = simulate(resolve(options))
    assert_same_results(declined, taken)
    return taken, sum(calls) / len(calls)


def assert_same_results(off, on) -> None:
    for key, expected in off.summary.items():
        got = on.summary[key]
        if isinstance(expected, float) and isinstance(got, float):
            assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=0.0), key
        else:
            assert got == expected, key
    assert len(off.engines) == len(on.engines)
    for engine_off, engine_on in zip(off.engines, on.engines):
        assert engine_off.sequences.keys() == engine_on.sequences.keys()
        for seq_id, a in engine_off.sequences.items():
            b = engine_on.sequences[seq_id]
            assert (a.status, a.num_output_tokens, a.num_computed_tokens, a.num_preemptions,
                    a.reason) == (b.status, b.num_output_tokens, b.num_computed_tokens,
                                  b.num_preemptions, b.reason), seq_id
            assert a.token_times_s == b.token_times_s, seq_id
        for column in engine_off.log.__slots__:
            assert getattr(engine_off.log, column) == getattr(engine_on.log, column), column


@pytest.mark.parametrize("name", list(CASES))
def test_fast_forward_leaves_every_result_unchanged(name):
    assert_same_results(_run(CASES[name], False), _run(CASES[name], True))


@pytest.mark.parametrize("name", list(MEASURED_CASES))
def test_fast_forward_leaves_measured_results_unchanged(name):
    options = dict(MEASURED_CASES[name], cost_model="measured")
    off, on = _run(options, False), _run(options, True)
    assert_same_results(off, on)
    assert on.summary["kernel_lookups_in_range"] > 0


def _count_steps(monkeypatch) -> list[int]:
    calls = [0]
    step = Engine.step

    def counting_step(self, *args, **kwargs):
        calls[0] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "step", counting_step)
    return calls


def test_fast_forward_jumps_most_iterations(monkeypatch):
    """Not a vacuous equality: on the bundled trace most iterations run inside jumps."""
    calls = _count_steps(monkeypatch)
    result = _run(LIGHT, True)
    iterations = len(result.engines[0].log)
    assert calls[0] < iterations / 4


@pytest.mark.parametrize("scheduler", ["continuous", "chunked", "orca", "static"])
def test_each_declaring_scheduler_jumps_and_keeps_results(monkeypatch, scheduler):
    """Continuous, chunked, Orca and static batching each declare `RepeatsDecodeBatch`
    themselves: each one's claim (its decode-only plans repeat; a static batch's with its
    finished members as padding) holds, and its runs are jumped."""
    options = dict(LIGHT, scheduler=scheduler)
    off = _run(options, False)
    calls = _count_steps(monkeypatch)
    on = _run(options, True)
    assert_same_results(off, on)
    assert calls[0] < len(on.engines[0].log) / 4


def test_disaggregated_decode_replicas_jump_between_hand_offs(monkeypatch):
    """A decode replica's runs end at the next hand-off that can happen, not at the next
    event anywhere in the cluster (another replica's step): most of its iterations jump."""
    calls = _count_steps(monkeypatch)
    result = _run(dict(LIGHT, disaggregate="1:3"), True)
    assert calls[0] < sum(len(engine.log) for engine in result.engines) / 4


def test_a_run_resumes_past_an_arrival_routed_elsewhere(monkeypatch):
    """A replica whose run an arrival stopped, and which the router passed over, goes on
    with the same batch without planning a step (`DecodeFastForward.resume`)."""
    from policies.fast_forward import DecodeFastForward

    options = dict(LIGHT, replicas=4, router="round-robin")
    off = _run(options, False)
    resumed = [0]
    resume = DecodeFastForward.resume

    def counting_resume(self, *args):
        span_end_s = resume(self, *args)
        resumed[0] += span_end_s is not None
        return span_end_s

    monkeypatch.setattr(DecodeFastForward, "resume", counting_resume)
    on = _run(options, True)
    assert_same_results(off, on)
    assert resumed[0] > len(on.engines) * 10


def test_fast_forward_abilities_are_declared_per_class():
    from policies.fast_forward import (GrowsInLockstep, LockstepPricing, PlansDecodesApart,
                                       PricesDecodesApart, RepeatsDecodeBatch)
    from policies.kv.contiguous import ContiguousAllocator
    from policies.kv.hybrid_paged import HybridPagedAllocator
    from policies.kv.paged import PagedAllocator
    from policies.kv.radix import RadixAllocator
    from policies.registry import SCHEDULERS
    from sim.cost.measured import MeasuredCostModel
    from sim.cost.roofline import CostModel

    def declared(cls, protocol):
        return protocol in cls.__mro__

    schedulers = {name: declared(entry.policy, RepeatsDecodeBatch)
                  for name, entry in SCHEDULERS.items()}
    assert schedulers == {"continuous": True, "chunked": True, "orca": True, "static": True}
    for allocator in (PagedAllocator, HybridPagedAllocator, ContiguousAllocator, RadixAllocator):
        assert declared(allocator, GrowsInLockstep)
    assert declared(CostModel, LockstepPricing) and declared(MeasuredCostModel, LockstepPricing)
    apart = {name for name, entry in SCHEDULERS.items() if declared(entry.policy, PlansDecodesApart)}
    assert apart == {"chunked"}
    assert declared(CostModel, PricesDecodesApart) and declared(MeasuredCostModel, PricesDecodesApart)


def test_chunked_steps_plan_their_decodes_apart_only_with_the_fast_forward(monkeypatch):
    """Not vacuous: with the fast-forward, chunked steps that carry a prompt's chunk price
    their decodes apart (`PlansDecodesApart`), and the results match stepping one chunk each."""
    from sim.cost.measured import MeasuredCostModel
    from sim.cost.roofline import CostModel

    calls = [0]

    def count_calls(model) -> None:
        apart = model.execute_decodes_apart

        def counted(self, decode_contexts, plan):
            calls[0] += 1
            assert decode_contexts and plan.chunks
            return apart(self, decode_contexts, plan)

        monkeypatch.setattr(model, "execute_decodes_apart", counted)

    count_calls(CostModel)
    count_calls(MeasuredCostModel)
    for cost_model in ("roofline", "measured"):
        options = dict(HEAVY, scheduler="chunked", cost_model=cost_model)
        calls[0] = 0
        off = _run(options, False)
        assert calls[0] == 0
        on = _run(options, True)
        assert calls[0] > 100
        assert_same_results(off, on)


def test_fast_forward_off_steps_every_iteration(monkeypatch):
    calls = _count_steps(monkeypatch)
    result = _run(LIGHT, False)
    assert calls[0] >= len(result.engines[0].log)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheduler=st.sampled_from(["continuous", "chunked", "orca", "static"]),
    allocator=st.sampled_from(["paged", "paged-prefix", "contiguous", "radix"]),
    rate_scale=st.sampled_from([0.5, 2.0, 8.0]),
    num_gpu_blocks=st.sampled_from([None, 700, 2000]),
    block_size=st.sampled_from([1, 16, 32]),
    max_num_seqs=st.sampled_from([4, 64, 256]),
    n=st.sampled_from([1, 2]),
    preemption=st.sampled_from(["recompute", "swap"]),
    queue_policy=st.sampled_from(["fcfs", "spf", "srpt"]),
    replicas=st.sampled_from([1, 2]),
    seed=st.integers(0, 3),
    cost_model=st.sampled_from(["roofline", "measured"]),
)
def test_fast_forward_equality_holds_for_drawn_configs(scheduler, allocator, rate_scale,
                                                       num_gpu_blocks, block_size, max_num_seqs,
                                                       n, preemption, queue_policy, replicas,
                                                       seed, cost_model):
    options = dict(max_requests=60, scheduler=scheduler, allocator=allocator,
                   rate_scale=rate_scale, num_gpu_blocks=num_gpu_blocks, block_size=block_size,
                   max_num_seqs=max_num_seqs, n=n, preemption=preemption,
                   queue_policy=queue_policy, replicas=replicas, router="least-outstanding",
                   swap_space_gb=0.02, seed=seed, cost_model=cost_model)
    assert_same_results(_run(options, False), _run(options, True))


@pytest.mark.parametrize("cost_model", ["roofline", "measured"])
def test_dashboard_recorder_sees_every_iteration_either_way(cost_model):
    """The roofline view's per-iteration FLOPs and bytes stay parallel to the log, whichever
    cost model prices the run."""
    from sim.assembly import roofline_cost_model
    from sim.cost.intensity import IterationRecorder

    recorded = {}
    for fast_forward in (False, True):
        config = resolve(ReplayOptions(fast_forward=fast_forward, cost_model=cost_model, **HEAVY))
        recorders = []

        def record(executor):
            recorders.append(IterationRecorder(executor, roofline_cost_model(config)))
            return recorders[-1]

        result = simulate(config, observe=record)
        (recorder,) = recorders
        assert len(recorder.flops) == len(recorder.bytes_moved) == len(result.engines[0].log)
        recorded[fast_forward] = (list(recorder.flops), list(recorder.bytes_moved))
    assert recorded[True] == recorded[False]
