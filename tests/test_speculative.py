"""Speculative decoding in the event loop: closed forms, KV accounting, invariants, cost."""

from __future__ import annotations

import json
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from policies.engine import Engine
from policies.kv.contiguous import ContiguousAllocator, ContiguousParams
from policies.kv.paged import PagedAllocator, PagedParams
from policies.kv.radix import RadixAllocator
from policies.registry import ALLOCATORS, SCHEDULERS, SPECULATORS
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.speculative.base import SpecParams, choose_k
from policies.speculative.planner import SpeculativeScheduler
from policies.types import Request, ScheduledChunk, SeqStatus, StepResult
from sim.api import simulate
from sim.assembly import build_cost_model, build_engine
from sim.cli import main
from sim.config import ReplayOptions, resolve
from sim.results import write_results
from sim.speculation.acceptance import PositionalAcceptance, iid_expected_tokens
from sim.speculation.drafting import ModelDraftCost, draft_cost_model, draft_rows
from tests.helpers import drive, make_seq
from traces import Trace


def _trace(*requests: tuple[float, int, int]) -> Trace:
    rows = [Request(i, t, p, o) for i, (t, p, o) in enumerate(requests)]
    return Trace(name="t", requests=rows, invalid_rows=[], notes=[])


def _run(trace: Trace, **options):
    return simulate(resolve(ReplayOptions(**options), trace))


# ---- the closed forms, end to end -------------------------------------------------------

@pytest.mark.parametrize("alpha,k", [(0.5, 2), (0.8, 4), (0.9, 6)])
def test_lone_request_tokens_per_step_matches_the_iid_closed_form(alpha, k):
    results = _run(_trace((0.0, 64, 20_000)), model="llama-3.1-8b", speculator="ngram",
                   spec_k=k, spec_acceptance=str(alpha))
    s = results.summary
    assert s["requests_finished"] == 1
    assert s["spec_tokens_per_step_mean"] == pytest.approx(iid_expected_tokens(alpha, k), rel=0.02)
    assert s["spec_acceptance_rate_pos1"] == pytest.approx(alpha, abs=0.02)


def test_lone_request_with_per_position_rates_matches_the_product_formula():
    rates = (0.54, 0.36, 0.26)
    results = _run(_trace((0.0, 64, 20_000)), model="llama-3.1-8b", speculator="ngram",
                   spec_k=3, spec_acceptance="0.54,0.36,0.26")
    s = results.summary
    product = PositionalAcceptance(rates).expected_tokens_per_step(3)
    assert s["spec_tokens_per_step_mean"] == pytest.approx(product, rel=0.02)
    for i, rate in enumerate(rates, 1):
        assert s[f"spec_acceptance_rate_pos{i}"] == pytest.approx(rate, abs=0.03)


# ---- one verify step, pinned exactly ----------------------------------------------------

def test_first_verify_step_costs_target_verify_plus_k_draft_passes():
    trace = _trace((0.0, 100, 50))
    config = resolve(ReplayOptions(speculator="draft", draft_model="llama-3.2-1b", spec_k=3,
                                   spec_acceptance="0.0"), trace)
    results = simulate(config)
    target = build_cost_model(config)
    draft = draft_cost_model(target, config.draft_model, 0.0)
    # Step 0 prefills (the draft model ingests the prompt too); step 1 verifies 3 drafts over
    # the 100 prompt tokens plus... the first sampled token: 1 + 3 new tokens, 4 logits.
    log = results.engine.log
    prefill_s = target.prefill_time(100) + draft.prefill_time(100)
    verify_s = target.iteration_time([4], [100], 4)
    drafting_s = sum(draft.iteration_time([1], [100 + j]) for j in range(3))
    assert log.duration_s[0] == pytest.approx(prefill_s, rel=1e-12)
    assert log.duration_s[1] == pytest.approx(verify_s + drafting_s, rel=1e-12)
    # Acceptance 0: every verify emits exactly one token, like plain decoding.
    assert results.summary["spec_tokens_per_step_mean"] == 1.0
    assert results.summary["spec_acceptance_rate"] == 0.0
    assert len(log) == 50


@pytest.mark.parametrize("cost_model", ["roofline", "measured"])
@settings(max_examples=30, deadline=None)
@given(passes=st.lists(st.integers(1, 6), min_size=1, max_size=8),
       contexts=st.lists(st.integers(1, 6000), min_size=8, max_size=8),
       plain=st.lists(st.one_of(st.tuples(st.just(1), st.integers(1, 3000)),
                                st.tuples(st.integers(1, 300), st.integers(0, 3000))),
                      max_size=3))
def test_draft_passes_cost_each_pass_priced_alone_to_the_bit(cost_model, passes, contexts, plain):
    """Chunks drafting unequal k (near their last outputs) narrow the draft batch from pass
    to pass: its lockstep stretches (and a pass 0 whose plain chunks are all decodes) must
    give what pricing every pass alone gives."""
    config = resolve(ReplayOptions(max_requests=1, cost_model=cost_model, speculator="draft",
                                   draft_model="llama-3.2-1b"))
    draft = draft_cost_model(build_cost_model(config), config.draft_model, 0.0)
    spec = [ScheduledChunk(make_seq(i, 10, 10), 1 + k, ctx, k)
            for i, (k, ctx) in enumerate(zip(passes, contexts))]
    plain_chunks = [ScheduledChunk(make_seq(100 + i, 10, 10), n, ctx)
                    for i, (n, ctx) in enumerate(plain)]
    expected = 0.0
    for j in range(max(passes)):
        active = [c for c in spec if c.num_spec_tokens > j]
        new = [1] * len(active) + ([c.num_new_tokens for c in plain_chunks] if j == 0 else [])
        ctx = [c.num_context_tokens + j for c in active] + (
            [c.num_context_tokens for c in plain_chunks] if j == 0 else [])
        expected += draft.iteration_time(new, ctx)
    assert ModelDraftCost(draft).time_s(*draft_rows(plain_chunks, spec)) == expected


def test_accepted_tokens_share_one_timestamp_so_itl_is_bursty():
    results = _run(_trace((0.0, 64, 400)), speculator="ngram", spec_k=4, spec_acceptance="1.0")
    seq = results.engine.sequences[0]
    times = list(seq.token_times_s)
    assert len(times) == 400
    # The prefill samples token 1; then every verify emits k + 1 = 5 tokens at one instant,
    # except the last, capped so the request ends at exactly 400 tokens.
    groups = [times.count(t) for t in sorted(set(times))]
    assert groups == [1] + [5] * 79 + [4]
    assert results.summary["itl_p50_s"] == 0.0
    assert results.summary["spec_tokens_per_step_share_5"] == pytest.approx(79 / 80)


def test_paged_shrink_returns_the_rejected_tail_blocks_tail_first():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=8))
    seq = make_seq(0, 6, 20)
    assert alloc.allocate_slots(seq, 6)
    assert alloc.allocate_slots(seq, 7 + 6)  # a verify of 1 + 6 drafts: 13 slots, 4 blocks
    assert alloc.block_tables[0] == [0, 1, 2, 3]
    alloc.shrink_slots(seq, 8)  # 1 of 6 drafts accepted: 8 tokens of KV stay
    assert alloc.block_tables[0] == [0, 1]
    assert alloc.pool.free_queue() == [3, 2]  # the free queue's tail, newest last
    usage = alloc.usage()
    assert (usage.reserved_slots, usage.filled_slots) == (8, 8)
    alloc.shrink_slots(seq, 9)  # never grows
    assert alloc.block_tables[0] == [0, 1] and alloc.usage().filled_slots == 8


def test_contiguous_shrink_keeps_the_reservation_and_drops_the_filled_count():
    alloc = ContiguousAllocator(ContiguousParams(block_size=4, num_blocks=8, reserve="oracle"))
    seq = make_seq(0, 6, 20)
    assert alloc.allocate_slots(seq, 12)
    alloc.shrink_slots(seq, 8)
    usage = alloc.usage()
    assert (usage.reserved_slots, usage.filled_slots) == (25, 8)
    assert alloc.spans[0] == (0, 25)


# ---- invariants under random workloads --------------------------------------------------

class DrawingExecutor:
    """Unit-time steps; acceptance drawn from per-position rates, checked as it goes."""

    def __init__(self, rates, width: int, seed: int) -> None:
        self.model = PositionalAcceptance(rates)
        self.width = width
        self.seed = seed
        self.streams = {}
        self.max_emitted = 0

    def execute(self, plan):
        accepted = {}
        for c in plan.chunks:
            if c.num_spec_tokens:
                assert c.seq.is_decoding
                assert c.num_spec_tokens <= c.seq.num_remaining_outputs - 1
                stream = self.streams.setdefault(c.seq.seq_id,
                                                 self.model.stream(self.seed, c.seq.seq_id))
                a = self.model.draw(stream, c.num_spec_tokens, self.width)
                assert 0 <= a <= c.num_spec_tokens
                accepted[c.seq.seq_id] = a
        return StepResult(1.0, accepted)


def _held_tokens(alloc, seq_id: int) -> int | None:
    """Slots `seq_id` holds, or None when it holds none."""
    if isinstance(alloc, RadixAllocator):
        state = alloc._seqs.get(seq_id)
        return None if state is None else state.num_held_tokens
    return alloc._num_tokens.get(seq_id)


@settings(max_examples=60, deadline=None)
@given(
    reqs=st.lists(st.tuples(st.floats(0, 20), st.integers(1, 50), st.integers(1, 40)),
                  min_size=1, max_size=20),
    scheduler=st.sampled_from(sorted(SCHEDULERS)),
    allocator=st.sampled_from(sorted(ALLOCATORS)),
    speculator=st.sampled_from(["draft", "tree", "ngram", "cascade", "lookahead"]),
    spec_k=st.integers(0, 6),
    width=st.integers(1, 3),
    dynamic=st.booleans(),
    rates=st.lists(st.floats(0, 1), min_size=1, max_size=4),
    num_blocks=st.integers(6, 40),
    max_seqs=st.integers(1, 6),
    max_tokens=st.integers(8, 96),
    seed=st.integers(0, 3),
)
def test_speculation_never_leaks_kv_never_overshoots_and_keeps_output_lengths(
    reqs, scheduler, allocator, speculator, spec_k, width, dynamic, rates, num_blocks,
    max_seqs, max_tokens, seed,
):
    options = {"block_size": 4, "num_blocks": num_blocks, "max_model_len": 100,
               "max_num_seqs": max_seqs, "max_num_batched_tokens": max_tokens,
               "reserve": "oracle", "spec_dynamic": dynamic,
               # lookahead refuses a spec_k it would ignore (given without spec_dynamic)
               "spec_k": spec_k if speculator != "lookahead" or dynamic else None,
               "spec_tree_width": width, "draft_model": "d",
               "spec_k_by_batch": ((1, 6), (2, 3), (4, 1))}
    alloc = ALLOCATORS[allocator].policy(ALLOCATORS[allocator].make_params(options))
    inner = SCHEDULERS[scheduler].policy(SCHEDULERS[scheduler].make_params(options), alloc)
    entry = SPECULATORS[speculator]
    spec = entry.policy(entry.make_params(options))
    sched = SpeculativeScheduler(inner, spec, max_tokens)
    executor = DrawingExecutor(tuple(rates), width if speculator == "tree" else 1, seed)
    engine = Engine(sched, executor, max_model_len=100)
    # Every other request carries token ids from one shared sequence, so prefix caching hits.
    requests = [Request(i, t, p, o, prompt_token_ids=tuple(j % 5 for j in range(p)) if i % 2
                        else None)
                for i, (t, p, o) in enumerate(reqs)]

    original_step = engine.step
    # Lookahead drafts N - 1 per step (spec_k caps it only with spec_dynamic).
    max_drafts = (spec.params.lookahead_ngram - 1 if speculator == "lookahead" and not dynamic
                  else spec_k)

    def checked_step(now_s):
        before = {i: s.num_output_tokens for i, s in engine.sequences.items()}
        outcome = original_step(now_s)
        for seq_id, seq in engine.sequences.items():
            emitted = seq.num_output_tokens - before.get(seq_id, 0)
            assert emitted <= max(max_drafts, 0) + 1  # at most k + 1 tokens per verify
            assert seq.num_output_tokens <= seq.request.output_tokens
            holds_kv = _held_tokens(alloc, seq_id) is not None
            if seq.status in (SeqStatus.RUNNING, SeqStatus.FINISHED) and holds_kv:
                # No slot of a rejected draft survives its step.
                assert _held_tokens(alloc, seq_id) == seq.num_computed_tokens
        if allocator.startswith("paged"):
            for seq_id, table in alloc.block_tables.items():
                assert len(table) == alloc.blocks_for(alloc._num_tokens.get(seq_id, 0))
                # Rejected drafts are never cached: hashed blocks hold committed tokens only.
                registered = alloc._num_registered.get(seq_id, 0)
                assert registered * alloc.block_size <= engine.sequences[seq_id].num_computed_tokens
        return outcome

    engine.step = checked_step
    drive(engine, requests)
    for r in requests:
        seq = engine.sequences[r.request_id]
        if seq.status is SeqStatus.REJECTED:
            assert seq.reason
            continue
        assert seq.status is SeqStatus.FINISHED
        assert seq.num_output_tokens == r.output_tokens == len(seq.token_times_s)
        assert list(seq.token_times_s) == sorted(seq.token_times_s)
    assert len(engine.spec_log.emitted_histogram) <= max(max_drafts, 0) + 2
    usage = alloc.usage()
    assert usage.reserved_slots == 0 and usage.filled_slots == 0


def test_an_executor_reporting_more_accepted_than_proposed_is_refused():
    alloc = PagedAllocator(PagedParams(block_size=4, num_blocks=20))
    inner = ContinuousScheduler(ContinuousParams(max_num_seqs=4, max_num_batched_tokens=64), alloc)
    sched = SpeculativeScheduler(inner, SPECULATORS["ngram"].policy(SpecParams(spec_k=2)), 64)

    class Liar:
        def execute(self, plan):
            return StepResult(1.0, {c.seq.seq_id: 3 for c in plan.chunks if c.num_spec_tokens})

    engine = Engine(sched, Liar(), max_model_len=100)
    with pytest.raises(RuntimeError, match="3 accepted drafts for request 0, which verified 2"):
        drive(engine, [Request(0, 0.0, 8, 10)])


# ---- the policy's k ---------------------------------------------------------------------

def test_dynamic_k_shrinks_with_batch_size_and_with_measured_acceptance():
    params = SpecParams(spec_k=5, spec_dynamic=True, spec_k_by_batch=((4, 5), (16, 3), (64, 0)),
                        spec_min_accept_prob=0.2)
    seq = make_seq(0, 10, 100)
    # No history yet: alpha = 1/2 by the Laplace prior, log(0.2)/log(0.5) = 2.32 -> 2.
    assert choose_k(params, seq, 1) == 2
    seq.num_draft_tokens_reached, seq.num_draft_tokens_accepted = 98, 88  # alpha = 0.89
    assert [choose_k(params, seq, b) for b in (1, 4, 5, 16, 17, 64, 500)] == [5, 5, 3, 3, 0, 0, 0]
    seq.num_draft_tokens_accepted = 18  # alpha = 0.19: even one draft is unlikely to survive
    assert choose_k(params, seq, 1) == 0
    assert choose_k(SpecParams(spec_k=5), seq, 64) == 5  # fixed unless --spec-dynamic


def test_bad_k_tables_are_refused():
    with pytest.raises(ValueError, match="increasing batch sizes"):
        SpecParams(spec_k_by_batch=((8, 2), (4, 1)))


def _dynamic_table(**options):
    trace = _trace((0.0, 128, 128))
    config = resolve(ReplayOptions(speculator="draft", draft_model="llama-3.2-1b",
                                   spec_acceptance="0.8", spec_dynamic=True, **options), trace)
    engine, _ = build_engine(config, build_cost_model(config))
    return dict(engine.scheduler.speculator.params.spec_k_by_batch)


def test_the_simulator_fills_the_k_table_from_its_cost_model():
    gpu_bound = str(Path(__file__).resolve().parents[1] / "bench" / "h100_gpu_bound.json")
    table = _dynamic_table(calibration=gpu_bound, max_num_seqs=512)
    assert sorted(table) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    ks = [table[b] for b in sorted(table)]
    assert ks == sorted(ks, reverse=True)  # k only shrinks as the batch grows
    assert table[1] >= 3 and table[512] <= 1
    # With the fitted per-step CPU overheads, amortizing them keeps k = 4 worth it throughout.
    assert set(_dynamic_table(calibration="shared-fit", max_num_seqs=512).values()) == {4}


# ---- the simulator around it ------------------------------------------------------------

def test_draft_models_take_their_weights_and_kv_from_the_pool():
    trace = _trace((0.0, 8, 8))
    plain = _run(trace)
    draft = _run(trace, speculator="draft", draft_model="llama-3.2-1b")
    ngram = _run(trace, speculator="ngram")
    target_kv = 131072  # Llama-3-8B bf16: 32 layers x 8 heads x 128 x 2 x 2 bytes
    draft_kv = 32768    # Llama-3.2-1B: 16 layers x 8 heads x 64 x 2 x 2 bytes
    mem = plain.memory
    expected = int((mem.kv_bytes_per_device - draft.memory.weights_bytes_per_device
                    + mem.weights_bytes_per_device) // ((target_kv + draft_kv) * 16))
    assert draft.summary["kv_blocks_total"] == expected
    assert ngram.summary["kv_blocks_total"] == plain.summary["kv_blocks_total"]


def test_none_leaves_the_summary_exactly_as_without_speculation(tmp_path):
    trace = "synthetic:n=60,arrivals=poisson:8,prompt=fixed:200,output=fixed:40"
    plain = write_results(simulate(resolve(ReplayOptions(trace=trace))), tmp_path / "a")
    none = write_results(simulate(resolve(ReplayOptions(trace=trace, speculator="none",
                                                        spec_k=7))), tmp_path / "b")
    assert (plain / "summary.json").read_bytes() == (none / "summary.json").read_bytes()
    assert not [k for k in json.loads((plain / "summary.json").read_text()) if "spec" in k]


def test_speculative_runs_are_byte_identical_per_seed(tmp_path):
    trace = "synthetic:n=80,arrivals=poisson:10,prompt=lognormal:300:0.5,output=lognormal:60:0.5"
    opts = dict(trace=trace, speculator="draft", draft_model="llama-3.2-1b",
                spec_acceptance="beta:0.7:5", spec_dynamic=True)
    outs = [write_results(simulate(resolve(ReplayOptions(**opts))), tmp_path / str(i))
            for i in range(2)]
    assert (outs[0] / "summary.json").read_bytes() == (outs[1] / "summary.json").read_bytes()
    other = simulate(resolve(ReplayOptions(**opts, seed=1))).summary
    assert other["spec_tokens_per_step_mean"] != json.loads(
        (outs[0] / "summary.json").read_text())["spec_tokens_per_step_mean"]


def test_a_requests_acceptance_does_not_depend_on_its_batch():
    def bursts(trace):
        results = _run(trace, speculator="ngram", spec_k=3, spec_acceptance="0.6")
        times = list(results.engine.sequences[0].token_times_s)
        return [times.count(t) for t in sorted(set(times))]

    alone = bursts(_trace((0.0, 50, 120)))
    crowded = bursts(_trace((0.0, 50, 120), (0.0, 80, 200), (0.01, 30, 90)))
    assert alone == crowded


@pytest.mark.parametrize("speculator", ["draft", "tree", "ngram", "cascade"])
def test_every_speculator_finishes_every_request_and_reports_its_keys(speculator):
    trace = "synthetic:n=40,arrivals=poisson:8,prompt=fixed:200,output=fixed:64"
    s = simulate(resolve(ReplayOptions(trace=trace, speculator=speculator, spec_k=3,
                                       draft_model="llama-3.2-1b",
                                       tiny_draft_model="llama-3.2-1b"))).summary
    assert s["requests_finished"] == 40
    assert 1.0 <= s["spec_tokens_per_step_mean"] <= 4.0
    assert 0.0 <= s["spec_acceptance_rate"] <= 1.0
    draft_share = s["spec_draft_time_share"]
    assert (draft_share == 0.0) == (speculator == "ngram")
    assert 0.0 < s["spec_verify_time_share"] <= 1.0 - draft_share


def test_tree_accepts_more_per_step_than_a_chain_at_the_same_rate():
    trace = _trace((0.0, 64, 3000))
    chain = _run(trace, speculator="ngram", spec_k=3, spec_acceptance="0.6").summary
    tree = _run(trace, speculator="tree", spec_k=3, spec_tree_width=3,
                spec_acceptance="0.6").summary
    widened = 1 - 0.4**3
    assert tree["spec_tokens_per_step_mean"] == pytest.approx(
        iid_expected_tokens(widened, 3), rel=0.03)
    assert tree["spec_tokens_per_step_mean"] > chain["spec_tokens_per_step_mean"] + 1


# ---- CLI ---------------------------------------------------------------------------------

def test_cli_speculation_flags_and_summary_keys(tmp_path, capsys):
    code = main(["replay", "--quiet", "--trace",
                 "synthetic:n=30,arrivals=poisson:5,prompt=fixed:100,output=fixed:50",
                 "--speculator", "draft", "--draft-model", "llama-3.2-1b", "--spec-k", "3",
                 "--spec-acceptance", "0.54,0.36,0.26", "--spec-dynamic", "--out", str(tmp_path)])
    assert code == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["spec_k_mean"] <= 3
    for key in ("spec_tokens_per_step_mean", "spec_acceptance_rate",
                "spec_acceptance_rate_pos3", "spec_tokens_per_step_share_4",
                "spec_draft_time_share", "spec_verify_time_share"):
        assert key in s
    assert "speculator draft k=3" in capsys.readouterr().out


def test_config_file_takes_the_speculation_keys(tmp_path):
    config = tmp_path / "spec.toml"
    config.write_text('speculator = "tree"\nspec-k = 3\nspec_acceptance = 0.75\n'
                      'spec-dynamic = true\nspec-tree-width = 3\n')
    out = tmp_path / "out"
    assert main(["replay", "--quiet", "--config", str(config), "--trace",
                 "synthetic:n=10,arrivals=poisson:5,prompt=fixed:100,output=fixed:40",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert "spec_acceptance_rate_pos3" in s and "spec_acceptance_rate_pos4" not in s
    assert s["spec_tokens_per_step_mean"] > 2


def test_cli_lists_speculators(capsys):
    assert main(["list", "speculators"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("none", "draft", "tree", "ngram", "cascade"))


@pytest.mark.parametrize("argv,message", [
    (["--speculator", "medusa"], "unknown speculator 'medusa'"),
    (["--speculator", "draft"], "needs --draft-model"),
    (["--speculator", "draft", "--draft-model", "gpt-9"], "unknown model 'gpt-9'"),
    (["--speculator", "ngram", "--spec-k", "-1"], "--spec-k must lie in [0, 64]"),
    (["--speculator", "ngram", "--spec-k", "100000"], "--spec-k must lie in [0, 64]"),
    (["--speculator", "tree", "--spec-tree-width", "0"], "--spec-tree-width must be >= 1"),
    (["--speculator", "ngram", "--spec-acceptance", "1.2"], "must lie in [0, 1]"),
    (["--spec-acceptance", "0.5,x"], "bad number 'x'"),
])
def test_cli_bad_speculation_input_is_one_line_error(argv, message, capsys):
    assert main(["replay", "--quiet", "--max-requests", "5", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_crossover_speedup_above_1_5_at_low_batch_and_below_1_when_verify_dominates():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "spec_crossover.py"
    spec = importlib.util.spec_from_file_location("spec_crossover", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = {r["batch"]: r["speedup"] for r in bench.crossover((1, 16, 64, 256))}
    assert rows[1] > 1.5 and rows[16] > 1.5
    assert rows[64] < rows[16]
    assert rows[256] < 1.0


def test_the_two_acceptance_rates_have_names_that_tell_them_apart():
    """`--spec-acceptance 0.7` at k = 4: 0.7 of reached drafts are accepted, but only
    (0.7 + 0.49 + 0.343 + 0.2401) / 4 = 0.443 of proposed ones (after a rejection the rest of
    the drafts are never accepted)."""
    s = _run(_trace((0.0, 64, 20_000)), model="llama-3.1-8b", speculator="ngram", spec_k=4,
             spec_acceptance="0.7").summary
    assert s["spec_conditional_acceptance_rate"] == pytest.approx(0.7, abs=0.02)
    assert s["spec_acceptance_rate"] == pytest.approx(1.7731 / 4, abs=0.02)
    assert s["spec_accepted_share_of_proposed"] == s["spec_acceptance_rate"]


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       verifies=st.lists(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=9), max_size=300))
def test_a_stream_judges_drafts_on_its_uniforms_in_order(seed, verifies):
    """Each verify judges its drafts on the stream's next uniforms, one per judged draft,
    whether or not they cross one of its 256-uniform blocks."""
    import numpy as np

    from sim.speculation.acceptance import RequestStream

    stream = RequestStream(np.random.default_rng(seed), None, 0)
    reference = np.random.default_rng(seed)
    uniforms: list[float] = []
    used = 0
    for rates in verifies:
        expected = len(rates)
        for position, rate in enumerate(rates):
            if used == len(uniforms):
                uniforms += reference.random(256).tolist()
            used += 1
            if uniforms[used - 1] >= rate:
                expected = position
                break
        assert stream.accepted_prefix(tuple(rates)) == expected


@pytest.mark.parametrize("spec", ["0.7", "0.54,0.36,0.26", "beta:0.7:10",
                                  str(Path(__file__).parent / "data" / "accepted_drafts.txt")])
@settings(max_examples=20, deadline=None)
@given(steps=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=6), max_size=60),
       same_k=st.booleans(), width=st.integers(1, 3))
def test_draw_each_draws_what_one_draw_per_stream_draws(spec, steps, same_k, width):
    """A step's draws in one call (`draw_each`) take from every stream what `draw` would,
    stream by stream, whether its verifies share one k or not."""
    from sim.speculation.acceptance import parse_acceptance

    model = parse_acceptance(spec)
    one_by_one = [model.stream(7, request_id) for request_id in range(6)]
    at_once = [model.stream(7, request_id) for request_id in range(6)]
    for ks in steps:
        if same_k:
            ks = [ks[0]] * len(ks)
        drawn = [model.draw(stream, k, width) for stream, k in zip(one_by_one, ks)]
        assert model.draw_each(at_once[:len(ks)], ks, width) == drawn
