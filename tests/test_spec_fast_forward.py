"""The speculative fast-forward (`policies.fast_forward.VerifyFastForward`) changes the
simulator's cost, never its results.

As in `test_fast_forward.py`, each case replays a workload with `fast_forward` off (one SimPy
event and one scheduler search per step) and on (runs of speculative steps of one batch in one
event), and compares the summary (exactly), every request's counts and token times, every
iteration-log row and the speculation counters. Cases cover draft, n-gram, lookahead, tree and
cascade speculation; i.i.d., per-position, Beta and recorded acceptance; fixed and dynamic k;
paged and paged-prefix allocators (and allocators that do not declare the growth, which step);
every repeating scheduler, preemption, forks, replicas, async scheduling, sliding windows,
horizons; both cost models.

Lookahead runs fast-forward like any chain speculator here: in the simulator its acceptance
is drawn from the acceptance model per request stream, as every speculator's is (the n-gram
pool that decides it on a real model lives in the real backend, which never fast-forwards).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import Engine
from test_fast_forward import HEAVY, LIGHT, TIGHT, _count_steps, _run, assert_same_results

RECORDED = str(Path(__file__).parent / "data" / "accepted_drafts.txt")
DRAFT = dict(speculator="draft", draft_model="llama-3.2-1b")
NGRAM = dict(speculator="ngram")
LOOKAHEAD = dict(speculator="lookahead")

CASES = {
    "draft paged": dict(LIGHT, **DRAFT),
    "draft paged heavy roofline": dict(HEAVY, cost_model="roofline", **DRAFT),
    "draft paged-prefix heavy": dict(HEAVY, allocator="paged-prefix", **DRAFT),
    "draft paged tight": dict(TIGHT, **DRAFT),
    "draft paged-prefix tight swap": dict(TIGHT, allocator="paged-prefix", preemption="swap",
                                          swap_space_gb=0.05, **DRAFT),
    "draft dynamic": dict(HEAVY, spec_dynamic=True, spec_k=6, **DRAFT),
    "draft dynamic paged-prefix tight": dict(TIGHT, allocator="paged-prefix", spec_dynamic=True,
                                             **DRAFT),
    "draft recorded paged-prefix": dict(HEAVY, allocator="paged-prefix",
                                        spec_acceptance=RECORDED, **DRAFT),
    "draft recorded dynamic": dict(HEAVY, spec_acceptance=RECORDED, spec_dynamic=True, **DRAFT),
    "ngram paged positional": dict(HEAVY, spec_acceptance="0.9,0.7,0.5", spec_k=5, **NGRAM),
    "ngram paged-prefix beta": dict(HEAVY, allocator="paged-prefix",
                                    spec_acceptance="beta:0.7:5", **NGRAM),
    "ngram paged-prefix beta dynamic": dict(HEAVY, allocator="paged-prefix", spec_dynamic=True,
                                            spec_acceptance="beta:0.6:3", **NGRAM),
    "ngram recorded": dict(LIGHT, spec_acceptance=RECORDED, **NGRAM),
    "ngram n=2 forks": dict(HEAVY, n=2, allocator="paged-prefix", **NGRAM),
    "ngram block size 1": dict(TIGHT, block_size=1, **NGRAM),
    "ngram sliding window": dict(HEAVY, model="gemma-3-12b", **NGRAM),
    "ngram sliding window roofline": dict(HEAVY, model="gemma-3-12b", cost_model="roofline",
                                          **NGRAM),
    "lookahead paged": dict(HEAVY, **LOOKAHEAD),
    "lookahead paged-prefix dynamic": dict(HEAVY, allocator="paged-prefix", spec_dynamic=True,
                                           spec_acceptance="0.8,0.5", **LOOKAHEAD),
    # rejected drafts give memory back: a run must stop where waiting work could now join
    "lookahead chunked paged-prefix, work waits on memory": dict(
        max_requests=50, scheduler="chunked", allocator="paged-prefix", spec_acceptance="0.7",
        rate_scale=8.0, num_gpu_blocks=600, max_num_seqs=64, cost_model="roofline",
        **LOOKAHEAD),
    "tree": dict(HEAVY, speculator="tree", spec_tree_width=3),
    "cascade": dict(HEAVY, speculator="cascade", draft_model="llama-3.2-1b"),
    "chunked draft": dict(HEAVY, scheduler="chunked", allocator="paged-prefix", **DRAFT),
    "orca ngram": dict(HEAVY, scheduler="orca", **NGRAM),
    "static draft (steps)": dict(LIGHT, scheduler="static", max_num_seqs=8, **DRAFT),
    "radix draft (steps)": dict(HEAVY, allocator="radix", **DRAFT),
    "contiguous ngram (steps)": dict(HEAVY, allocator="contiguous", **NGRAM),
    "replicas round-robin": dict(LIGHT, replicas=4, router="round-robin", **DRAFT),
    "replicas least-outstanding": dict(HEAVY, replicas=2, router="least-outstanding", **NGRAM),
    "async scheduling": dict(HEAVY, async_scheduling="on", **DRAFT),
    "horizon": dict(HEAVY, horizon_s=15.0, **DRAFT),
    "tensor parallel": dict(HEAVY, model="llama-3-70b", tp=4, **DRAFT),
}


def assert_same_speculation(off, on) -> None:
    """Every result, the summary bit for bit, and every engine's speculation counters."""
    assert_same_results(off, on)
    assert on.summary == off.summary
    for engine_off, engine_on in zip(off.engines, on.engines):
        assert engine_on.spec_log == engine_off.spec_log
        for seq_id, a in engine_off.sequences.items():
            b = engine_on.sequences[seq_id]
            assert ((a.num_draft_tokens_reached, a.num_draft_tokens_accepted)
                    == (b.num_draft_tokens_reached, b.num_draft_tokens_accepted)), seq_id


@pytest.mark.parametrize("name", list(CASES))
def test_speculative_fast_forward_leaves_every_result_unchanged(name):
    assert_same_speculation(_run(CASES[name], False), _run(CASES[name], True))


@pytest.mark.parametrize("speculation", [DRAFT, NGRAM, LOOKAHEAD],
                         ids=["draft", "ngram", "lookahead"])
def test_speculative_runs_are_jumped(monkeypatch, speculation):
    """Not a vacuous equality: most speculative steps run inside jumps."""
    calls = _count_steps(monkeypatch)
    result = _run(dict(LIGHT, **speculation), True)
    iterations = len(result.engines[0].log)
    assert result.summary["spec_verifies"] > iterations
    assert calls[0] < iterations / 4


def test_speculation_abilities_are_declared_per_class():
    from policies.fast_forward import (GrowsForVerifies, PricesAhead, PricesRows,
                                       PricesVerifies, RepeatsDecodeBatch, RepeatsVerifyBatch)
    from policies.kv.contiguous import ContiguousAllocator
    from policies.kv.hybrid_paged import HybridPagedAllocator
    from policies.kv.paged import PagedAllocator
    from policies.kv.radix import RadixAllocator
    from policies.speculative.planner import SpeculativeScheduler
    from sim.cost.measured import MeasuredCostModel
    from sim.cost.roofline import CostModel
    from sim.speculation.executor import SpeculativeExecutor

    def declared(cls, protocol):
        return protocol in cls.__mro__

    assert declared(SpeculativeScheduler, RepeatsVerifyBatch)
    assert declared(SpeculativeScheduler, RepeatsDecodeBatch)
    assert declared(PagedAllocator, GrowsForVerifies)
    for allocator in (HybridPagedAllocator, ContiguousAllocator, RadixAllocator):
        assert not declared(allocator, GrowsForVerifies)  # these step speculative runs
    for executor in (SpeculativeExecutor, CostModel, MeasuredCostModel):
        assert declared(executor, PricesAhead)
    assert declared(SpeculativeExecutor, PricesVerifies)
    for executor in (CostModel, MeasuredCostModel):
        assert declared(executor, PricesRows)


def test_a_static_inner_scheduler_leaves_speculation_stepping(monkeypatch):
    """The wrapper repeats only what its inner scheduler repeats: around static batching
    every step is its own event."""
    calls = _count_steps(monkeypatch)
    result = _run(dict(LIGHT, scheduler="static", max_num_seqs=8, **DRAFT), True)
    assert calls[0] >= len(result.engines[0].log)


def test_a_run_never_goes_past_a_step_the_pool_cannot_grow(monkeypatch):
    """Where a verify's slots do not fit (the wrapper then verifies fewer drafts, or the
    inner scheduler preempts), the run stops and the engine plans that step itself."""
    from policies.kv.paged import PagedAllocator

    refused = [0]
    grow = PagedAllocator.grow_for_verifies

    def counting_grow(self, seqs, num_tokens):
        grown = grow(self, seqs, num_tokens)
        refused[0] += not grown
        return grown

    monkeypatch.setattr(PagedAllocator, "grow_for_verifies", counting_grow)
    options = dict(TIGHT, num_gpu_blocks=400, **DRAFT)
    on = _run(options, True)
    assert refused[0] > 0 and on.summary["preemptions"] > 0
    assert_same_speculation(_run(options, False), on)


ACCEPTANCES = ["0.7", "0.95", "0.8,0.5,0.2", "beta:0.6:4", RECORDED]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    speculator=st.sampled_from(["draft", "ngram", "lookahead"]),
    scheduler=st.sampled_from(["continuous", "chunked"]),
    allocator=st.sampled_from(["paged", "paged-prefix"]),
    acceptance=st.sampled_from(ACCEPTANCES),
    spec_k=st.integers(1, 6),
    spec_dynamic=st.booleans(),
    rate_scale=st.sampled_from([0.5, 2.0, 8.0]),
    num_gpu_blocks=st.sampled_from([None, 600, 2000]),
    block_size=st.sampled_from([1, 16]),
    max_num_seqs=st.sampled_from([4, 64]),
    replicas=st.sampled_from([1, 2]),
    seed=st.integers(0, 3),
    cost_model=st.sampled_from(["roofline", "measured"]),
)
def test_speculative_equality_holds_for_drawn_configs(speculator, scheduler, allocator,
                                                      acceptance, spec_k, spec_dynamic,
                                                      rate_scale, num_gpu_blocks, block_size,
                                                      max_num_seqs, replicas, seed, cost_model):
    options = dict(max_requests=50, speculator=speculator, scheduler=scheduler,
                   allocator=allocator, spec_acceptance=acceptance, spec_k=spec_k,
                   spec_dynamic=spec_dynamic, rate_scale=rate_scale,
                   num_gpu_blocks=num_gpu_blocks, block_size=block_size,
                   max_num_seqs=max_num_seqs, replicas=replicas, router="least-outstanding",
                   seed=seed, cost_model=cost_model)
    if speculator == "draft":
        options["draft_model"] = "llama-3.2-1b"
    if speculator == "lookahead" and not spec_dynamic:
        del options["spec_k"]  # lookahead drafts N - 1; a k caps it only under spec_dynamic
    assert_same_speculation(_run(options, False), _run(options, True))


def test_engine_builds_the_speculative_fast_forward_only_when_asked():
    from policies.fast_forward import VerifyFastForward

    on = _run(dict(LIGHT, max_requests=5, **DRAFT), True).engines[0]
    off = _run(dict(LIGHT, max_requests=5, **DRAFT), False).engines[0]
    assert isinstance(on, Engine) and isinstance(on._fast_forward, VerifyFastForward)
    assert off._fast_forward is None


# ---- the parts, one at a time -------------------------------------------------------------
def _decoding(request_id: int, prompt_tokens: int, outputs: int, output_tokens: int = 100):
    from policies.types import Request, Sequence, SeqStatus

    seq = Sequence(Request(request_id, 0.0, prompt_tokens, output_tokens),
                   status=SeqStatus.RUNNING)
    seq.num_output_tokens = outputs
    seq.num_computed_tokens = prompt_tokens + outputs - 1
    return seq


def _speculative_executor(cost_model: str, **options):
    return _speculative_engine(cost_model, **options).executor


def _speculative_engine(cost_model: str, **options):
    from sim.assembly import build_cost_model, build_engine
    from sim.config import ReplayOptions, resolve

    config = resolve(ReplayOptions(max_requests=5, cost_model=cost_model,
                                   **(options or DRAFT)))
    engine, _ = build_engine(config, build_cost_model(config))
    return engine


@pytest.mark.parametrize("caching", [False, True])
def test_grow_for_verifies_does_what_the_step_allocations_do(caching):
    """Block for block (ids, hashes, free queue, usage) what the inner scheduler's decode
    allocations and then the wrapper's draft allocations leave; a round the pool cannot
    serve is refused with nothing changed."""
    from policies.kv.paged import PagedAllocator, PagedParams, PagedPrefixAllocator

    def pool_with_batch():
        kind = PagedPrefixAllocator if caching else PagedAllocator
        allocator = kind(PagedParams(block_size=4, num_blocks=14, enable_prefix_caching=caching))
        seqs = [_decoding(1, 5, 2), _decoding(2, 7, 1), _decoding(3, 3, 4)]
        for seq in seqs:
            assert allocator.allocate_slots(seq, seq.num_computed_tokens)
        allocator.free(seqs[1])  # freed blocks (cached-free with caching) in the queue
        assert allocator.allocate_slots(seqs[1], seqs[1].num_computed_tokens)
        return allocator, seqs

    def state(allocator):
        return (allocator.block_tables, allocator._num_tokens, allocator.usage(),
                list(allocator.pool._free), allocator.pool._block_of,
                allocator.stats() if caching else None)

    totals = [9, 12, 11]  # known + drafts: 8 + 1, 8 + 4, 7 + 4
    stepped, seqs = pool_with_batch()
    for seq in seqs:
        assert stepped.allocate_slots(seq, seq.num_known_tokens)
    for seq, total in zip(seqs, totals):
        assert stepped.allocate_slots(seq, total)
    grown, seqs = pool_with_batch()
    assert grown.grow_for_verifies(seqs, totals)
    assert state(grown) == state(stepped)

    refused, seqs = pool_with_batch()
    before = state(refused)
    assert not refused.grow_for_verifies(seqs, [9, 12, 40])  # 10 more blocks: 8 are free
    assert state(refused) == before


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 6), min_size=3, max_size=3), min_size=1, max_size=12),
       st.integers(0, 2), st.integers(9, 40))
def test_a_runs_kv_does_what_the_methods_do_step_by_step(draws, finisher, num_blocks):
    """`PagedVerifyRun` (a run's growth and give-back, which after checking the rows once
    takes and gives back blocks only where a verify outgrows them) leaves, step by step,
    what `grow_for_verifies` and `shrink_to_computed` leave: block ids, the free queue's
    order, usage, and held tokens once the run ends; a step the pool cannot serve is
    refused by both, and a finish (the rows up to it shrunk, it freed, then the rest)
    ends the run the same."""
    from policies.kv.paged import PagedAllocator, PagedParams

    def pool_with_batch():
        allocator = PagedAllocator(PagedParams(block_size=4, num_blocks=num_blocks))
        seqs = [_decoding(1, 5, 2, 99), _decoding(2, 7, 1, 99), _decoding(3, 3, 4, 99)]
        for seq in seqs:
            assert allocator.allocate_slots(seq, seq.num_computed_tokens)
        return allocator, seqs

    def state(allocator):
        return (allocator.block_tables, allocator.usage(), list(allocator.pool._free),
                allocator.pool.num_free)

    def commit(seqs, accepted, shrink, free):
        for seq, num_accepted in zip(seqs, accepted):
            seq.num_computed_tokens += 1 + num_accepted
            seq.num_output_tokens += 1 + num_accepted
        if len(draws) - 1 == step:  # the last step: a finish ends the run
            shrink(seqs[:finisher + 1])
            free(seqs[finisher])
            if finisher < 2:
                shrink(seqs[finisher + 1:])
        else:
            shrink(seqs)

    by_methods, method_seqs = pool_with_batch()
    by_run, run_seqs = pool_with_batch()
    run = by_run.verify_run(run_seqs)
    for step, accepted in enumerate(draws):
        totals = [seq.num_computed_tokens + 7 for seq in method_seqs]  # k = 6 (blocks of 4)
        assert run.computed_tokens() in (None, [seq.num_computed_tokens for seq in run_seqs])
        grown = by_methods.grow_for_verifies(method_seqs, totals)
        assert run.grow(totals) == grown
        if not grown:
            break
        assert run.usage() == by_methods.usage()
        commit(method_seqs, accepted, by_methods.shrink_to_computed, by_methods.free)
        commit(run_seqs, accepted, run.shrink_to_computed, by_run.free)
        assert state(by_run) == state(by_methods)
    run.end()
    assert by_run._num_tokens == by_methods._num_tokens
    assert by_run._filled_slots == by_methods._filled_slots


def test_price_has_no_side_effects_and_execute_is_price_then_run():
    """`execute` is `run_priced(price)`; pricing alone draws nothing and counts nothing."""
    from policies.types import Plan, ScheduledChunk
    executor = _speculative_executor("measured")
    seqs = [_decoding(1, 300, 5), _decoding(2, 900, 20)]

    def plan():
        return Plan([ScheduledChunk(seqs[0], 5, seqs[0].num_computed_tokens, 4),
                     ScheduledChunk(seqs[1], 1, seqs[1].num_computed_tokens)])

    counters = (executor.target.lookups_in_range, executor.target.lookups_extrapolated)
    priced = executor.price(plan())
    assert (executor.target.lookups_in_range, executor.target.lookups_extrapolated) == counters
    assert not executor._streams
    ran = executor.run_priced(plan(), priced)
    executor._streams.clear()
    executor.target.lookups_in_range, executor.target.lookups_extrapolated = counters
    assert executor.execute(plan()) == ran
    assert ran.duration_s == priced.duration_s > ran.draft_s > 0


@pytest.mark.parametrize("cost_model", ["roofline", "measured"])
def test_draft_passes_priced_in_one_call_equal_each_pass(cost_model):
    """k draft passes of a batch that all draft k are priced by the draft model's lockstep
    decode pricing: the same bits as one `iteration_time` per pass."""
    from policies.types import ScheduledChunk
    from sim.speculation.drafting import draft_rows
    drafting = _speculative_executor(cost_model).drafting
    draft = drafting.draft
    contexts = [17, 300, 4100, 9000]
    for k in (1, 3, 6):
        spec = [ScheduledChunk(_decoding(i, c, 1), 1 + k, c, k) for i, c in enumerate(contexts)]
        by_pass = 0.0
        for j in range(k):
            by_pass += draft.iteration_time([1] * len(contexts), [c + j for c in contexts])
        assert drafting.time_s(*draft_rows([], spec)) == by_pass


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 8).flatmap(lambda k: st.tuples(st.just(k), st.integers(0, k))),
                max_size=40))
def test_speculation_counters_from_histograms_equal_counting_each_position(verifies):
    from policies.logs import SpeculationLog

    reached, accepted = [], []
    for k, a in verifies:
        for position in range(min(a + 1, k)):
            reached += [0] * (position + 1 - len(reached))
            reached[position] += 1
            if position < a:
                accepted += [0] * (position + 1 - len(accepted))
                accepted[position] += 1
    log = SpeculationLog()
    for k, a in verifies:
        log.record(k, a)
    assert (log.reached_by_position, log.accepted_by_position) == (reached, accepted)
    assert sum(log.emitted_histogram) == log.num_verifies == len(verifies)


SPECULATORS = {"draft": DRAFT, "cascade": dict(speculator="cascade", draft_model="llama-3.2-1b"),
               "tree": dict(speculator="tree"), "ngram": NGRAM,
               "tree sliding window": dict(speculator="tree", model="gemma-3-12b")}


@pytest.mark.parametrize("speculator", list(SPECULATORS))
@pytest.mark.parametrize("cost_model", ["roofline", "measured"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.integers(1, 9000), st.integers(0, 6)), min_size=1,
                     max_size=12))
def test_verifies_priced_from_sizes_equal_their_plan_to_the_bit(speculator, cost_model, rows):
    """`price_verifies` and `run_verifies` (the fast-forward's, from sizes) give what `price`
    and `run_priced` of the same plan give, float for float: duration, drafting, accepted
    drafts and the target's lookup counters."""
    from policies.types import Plan, ScheduledChunk

    def step(executor, contexts):
        seqs = [_decoding(i, context, 1) for i, context in enumerate(contexts)]
        nodes = executor.tree_width
        spec_tokens = [k for _, k in rows]
        new_tokens = [1 + nodes * k for k in spec_tokens]
        return seqs, [seq.num_computed_tokens for seq in seqs], new_tokens, spec_tokens

    def counters(executor):
        return (getattr(executor.target, "lookups_in_range", None),
                getattr(executor.target, "lookups_extrapolated", None))

    by_plan = _speculative_executor(cost_model, **SPECULATORS[speculator])
    seqs, contexts, new_tokens, spec_tokens = step(by_plan, [context for context, _ in rows])
    plan = Plan([ScheduledChunk(seq, new, context, k)
                 for seq, context, new, k in zip(seqs, contexts, new_tokens, spec_tokens)])
    priced = by_plan.price(plan)
    result = by_plan.run_priced(plan, priced)

    by_sizes = _speculative_executor(cost_model, **SPECULATORS[speculator])
    seqs, contexts, new_tokens, spec_tokens = step(by_sizes, contexts)
    sized = by_sizes.price_verifies(contexts, new_tokens, spec_tokens)
    assert (sized.duration_s, sized.draft_s) == (priced.duration_s, priced.draft_s)
    accepted = by_sizes.run_verifies(seqs, spec_tokens, sized)
    assert accepted == [result.accepted_tokens.get(seq.seq_id, 0) for seq in seqs]
    assert counters(by_sizes) == counters(by_plan)

    # Rows with the same cached tokens in all (a remembered price, for uniform verifies)
    # still price as their own plan does.
    moved = contexts[:]
    if len(moved) > 1 and moved[0] > 1:
        moved[0] -= 1
        moved[-1] += 1
    again = by_sizes.price_verifies(moved, new_tokens, spec_tokens)
    fresh = _speculative_executor(cost_model, **SPECULATORS[speculator])
    seqs, moved, new_tokens, spec_tokens = step(fresh, moved)
    alone = fresh.price(Plan([ScheduledChunk(seq, new, context, k) for seq, context, new, k
                              in zip(seqs, moved, new_tokens, spec_tokens)]))
    assert (again.duration_s, again.draft_s) == (alone.duration_s, alone.draft_s)


@pytest.mark.parametrize("speculation", [DRAFT, dict(speculator="tree"), LOOKAHEAD])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=st.lists(st.integers(1, 12), min_size=1, max_size=10),
       budget=st.integers(1, 120))
def test_verify_sizes_of_a_fixed_k_equal_asking_the_speculator(speculation, left, budget):
    """With a fixed k, `verify_sizes` skips the speculator for requests whose verify fits
    whole: what it gives must be what `_fitting_k` gives request by request (near the last
    outputs and under a tight token budget too)."""
    scheduler = _speculative_engine("roofline", **speculation).scheduler
    scheduler.max_num_batched_tokens = budget
    batch = [_decoding(i, 50, 100 - n, 100) for i, n in enumerate(left)]
    fixed = scheduler.verify_sizes(batch)

    class AskEachTime:
        """The speculator, without its fixed k: every request asked."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def fixed_num_draft_tokens(self):
            return None

    assert scheduler.speculator.fixed_num_draft_tokens()
    scheduler.speculator = AskEachTime(scheduler.speculator)
    assert scheduler.verify_sizes(batch) == (*fixed[:2], 1)


@pytest.mark.parametrize("speculation", [DRAFT, dict(speculator="tree"), LOOKAHEAD])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(left=st.lists(st.integers(1, 40), min_size=1, max_size=8), budget=st.integers(1, 120),
       acceptance=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_verify_sizes_hold_for_the_steps_they_say(speculation, left, budget, acceptance):
    """The sizes `verify_sizes` gives are the ones it gives at each of the steps it says they
    hold for, whatever those steps accept (each row's outputs moving on by its accepted
    drafts and one more), the budget and the requests near their last outputs."""
    scheduler = _speculative_engine("roofline", **speculation).scheduler
    scheduler.max_num_batched_tokens = budget
    batch = [_decoding(i, 50, 100 - n, 100) for i, n in enumerate(left)]
    spec_tokens, new_tokens, steady_steps = scheduler.verify_sizes(batch)
    assert steady_steps >= 1
    draws = iter(acceptance * (len(batch) * steady_steps))
    for _ in range(steady_steps - 1):
        for seq, k in zip(batch, spec_tokens):
            seq.num_output_tokens += 1 + round(next(draws) * k)
        assert scheduler.verify_sizes(batch)[:2] == (spec_tokens, new_tokens)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 8).flatmap(
    lambda k: st.tuples(st.just(k), st.integers(0, k))), max_size=10), max_size=20))
def test_a_steps_verifies_recorded_at_once_count_as_one_by_one(steps):
    """`record_each` (a fast-forwarded step's verifies) counts what `record` of each verify
    counts; plain decodes (k = 0) are no verify."""
    from policies.logs import SpeculationLog

    one_by_one, at_once = SpeculationLog(), SpeculationLog()
    for step in steps:
        for k, a in step:
            if k:
                one_by_one.record(k, a)
        at_once.record_each([k for k, _ in step], [a for _, a in step])
    assert at_once == one_by_one


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 6), min_size=1, max_size=8),
                          st.integers(0, 2**32 - 1), st.booleans()), max_size=20))
def test_a_runs_verifies_recorded_as_it_ends_count_as_step_by_step(steps):
    """`record_steps` (a run's verifies, counted as it ends, its uniform steps by value)
    counts what `record_each` of each step counts, whether or not steps in a row hand the
    same list of ks (as a run's steady steps do)."""
    import random

    from policies.logs import SpeculationLog

    step_by_step, at_end = SpeculationLog(), SpeculationLog()
    spec_tokens_each, accepted_each = [], []
    for ks, seed, same_as_before in steps:
        if same_as_before and spec_tokens_each:
            ks = spec_tokens_each[-1]  # the same list object
        draws = random.Random(seed)
        accepted = [draws.randint(0, k) for k in ks]
        step_by_step.record_each(ks, accepted)
        spec_tokens_each.append(ks)
        accepted_each.append(accepted)
    at_end.record_steps(spec_tokens_each, accepted_each)
    assert at_end == step_by_step


@pytest.mark.parametrize("accepted, outputs", [(3, 1), (-1, 1), (None, 1), (2, 98)])
def test_a_fast_forwarded_step_refuses_an_impossible_accepted_count(accepted, outputs):
    """`_commit_verifies` (the fast-forward's commit, its checks inline) refuses what
    `_commit_verify` refuses: more drafts than verified, fewer than none, none reported, or
    as many as the outputs left (2 of 2), before it advances anything."""
    engine = _speculative_engine("roofline")
    seq = _decoding(7, 5, outputs)
    computed = seq.num_computed_tokens
    with pytest.raises(RuntimeError, match=f"reported {accepted!r} accepted drafts for "
                                           "request 7, which verified 2"):
        engine._commit_verifies([seq], engine.scheduler.allocator.verify_run([seq]), [2],
                                [accepted], 0.0, 1.0, 0.0)
    assert seq.num_computed_tokens == computed and seq.num_output_tokens == outputs
