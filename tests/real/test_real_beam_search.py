"""Beam search on real tensors (`--beam-width`): the paged engine's beams equal a textbook
beam search over full recomputes token for token; the beams share the prompt's physical
blocks, a losing beam becomes a copy of its parent through the allocator's fork, and the
copy-on-write block copies really run on the KV pool."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from backend.beam_search import BeamSearch, assign_slots
from backend.model import LlamaModel, init_random
from backend.recompute import beam_search_recompute, next_token_logits
from backend.replay import replay_real, sample_outputs
from backend.runner import RealExecutor, seeded_prompt
from policies.types import Request, sample_seq_id
from sim.assembly import build_cost_model, build_engine
from sim.cli import main
from sim.config import resolve
from tests.real.tiny_llama import kv_pool_for, tiny_options
from traces.trace import Trace


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return init_random(LlamaModel(resolve(tiny_options()).model), seed=3).eval()


def _prompt(request: Request) -> list[int]:
    return list(request.prompt_token_ids or seeded_prompt(request, 512, 3))


def _reference(model, request: Request, **kwargs) -> list[tuple[float, list[int]]]:
    return beam_search_recompute(model, _prompt(request), request.output_tokens, request.n,
                                 **kwargs)


class _Recorder:
    """Spies on an executor: the (loser, parent) sample indices of every reparent, and every
    KV copy with the pool contents of its source at the time."""

    def __init__(self, executor: RealExecutor, monkeypatch) -> None:
        self.pairs: list[tuple[int, int]] = []
        self.copies: list[tuple[int, int, int]] = []
        reparent, copy_slots = executor.beams.reparent, executor.kv.copy_slots

        def spy_reparent(beams):
            pairs = reparent(beams)
            self.pairs += [(loser.sample_index, parent.sample_index) for loser, parent in pairs]
            return pairs

        def spy_copy(source, destination, num_slots):
            self.copies.append((source, destination, num_slots))
            copy_slots(source, destination, num_slots)

        monkeypatch.setattr(executor.beams, "reparent", spy_reparent)
        monkeypatch.setattr(executor.kv, "copy_slots", spy_copy)


def _engine(model, trace: Trace, beams: BeamSearch, **overrides):
    """An engine on the real executor with `beams`, built as the replay builds it."""
    config = resolve(tiny_options(**overrides), trace)
    executors = []

    def executor_for(allocator):
        kv = kv_pool_for(model, allocator)
        executors.append(RealExecutor(model, kv, allocator, seed=3, beams=beams))
        return executors[0]

    engine, _ = build_engine(config, build_cost_model(config), executor_for=executor_for,
                             beams=beams)
    return engine, executors[0]


def _drain(engine, now_s: float = 0.0) -> None:
    while engine.outstanding_requests:
        engine.step(now_s)
        now_s += 1.0


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("allocator", [{}, {"allocator": "contiguous", "reserve": "oracle"}])  # room for every beam
def test_beams_equal_a_beam_search_over_full_recomputes(model, reference_outputs, width,
                                                        allocator):
    results, outputs = replay_real(resolve(tiny_options(beam_width=width, num_gpu_blocks=512,
                                                        **allocator)))
    requests = results.config.trace.requests
    references = {r.request_id: _reference(model, r) for r in requests}
    assert sample_outputs(results) == {i: [h[1] for h in ref] for i, ref in references.items()}
    assert outputs == {i: ref[0][1] for i, ref in references.items()}
    executor = results.engines[0].executor
    for request in requests:
        hypotheses = executor.beam_hypotheses(request)
        assert [h.sum_logprob for h in hypotheses] == pytest.approx(
            [h[0] for h in references[request.request_id]], abs=1e-3)
    assert results.summary["requests_finished"] == len(requests)
    assert results.summary["preemptions"] == 0
    # Not greedy in disguise: the search changes some answers.
    assert outputs != reference_outputs


def test_width_one_is_greedy(reference_outputs):
    config = resolve(tiny_options())
    trace = Trace("beam 1", [dataclasses.replace(r, beam=True) for r in config.trace.requests])
    _, outputs = replay_real(resolve(tiny_options(), trace))
    assert outputs == reference_outputs


def test_beams_share_the_prompt_blocks_and_losers_become_copies(model, monkeypatch):
    prompt = tuple(range(20, 30))
    request = Request(0, 0.0, len(prompt), 12, prompt_token_ids=prompt, n=4, beam=True)
    engine, executor = _engine(model, Trace("one", [request]), BeamSearch(), beam_width=4)
    recorder = _Recorder(executor, monkeypatch)
    allocator = engine.scheduler.allocator
    ids = [sample_seq_id(request, index) for index in range(4)]
    engine.submit(request, 0.0)
    engine.step(0.0)  # the prefill: beams 1..3 fork from it
    tables = [list(allocator.block_tables[seq_id]) for seq_id in ids]
    assert tables[0] == tables[1] == tables[2] == tables[3] and len(tables[0]) == 3
    assert allocator.usage().filled_slots == 10  # one physical prompt
    tail = tables[0][2]
    prompt_kv = executor.kv.k[:, tail, :2].clone()
    engine.step(1.0)  # every beam writes position 10 into the shared tail block
    # Three copies of the tail's two prompt tokens ran on the pool (the last writer kept the
    # original), then the step's losers took their parents' blocks.
    assert [(source, n) for source, _, n in recorder.copies] == [(tail * 4, 2)] * 3
    for _, destination, _ in recorder.copies:
        assert torch.equal(executor.kv.k[:, destination // 4, :2], prompt_kv)
    assert all(allocator.block_tables[i][:2] == tables[0][:2] for i in ids)
    for loser, parent in recorder.pairs:
        assert allocator.block_tables[ids[loser]] == allocator.block_tables[ids[parent]]
    assert len({allocator.block_tables[i][2] for i in ids}) == 4 - len(recorder.pairs)
    checked = 0
    for step in range(2, request.output_tokens - 1):
        recorder.pairs.clear()
        engine.step(float(step))
        held = request.prompt_tokens + step  # tokens in the KV when the losers are reparented
        if not recorder.pairs or held % 4 == 0:
            continue
        # After the step each loser holds exactly its parent's blocks ...
        for loser, parent in recorder.pairs:
            assert allocator.block_tables[ids[loser]] == allocator.block_tables[ids[parent]]
        recorder.copies.clear()
        before = {i: list(allocator.block_tables[ids[i]]) for i in range(4)}
        pairs = list(recorder.pairs)
        engine.step(float(step) + 0.5)
        # ... and the next write copies each shared, partly filled tail on the pool.
        assert len(recorder.copies) == len(pairs)
        flat_k = executor.kv.k.flatten(1, 2)  # [layers, slots, kv_heads, head_dim]
        for source, destination, num_slots in recorder.copies:
            assert num_slots == held % 4 and source != destination
            assert torch.equal(flat_k[:, destination:destination + num_slots],
                               flat_k[:, source:source + num_slots])
        for loser, parent in pairs:
            assert allocator.block_tables[ids[loser]][:held // 4] == before[parent][:held // 4]
        checked += 1
        break
    assert checked == 1
    _drain(engine, 100.0)
    reference = _reference(model, request)
    assert [h.token_ids for h in executor.beam_hypotheses(request)] == [h[1] for h in reference]


def test_contiguous_beams_fork_by_copying_whole_spans(model, monkeypatch):
    prompt = tuple(range(40, 49))
    request = Request(0, 0.0, len(prompt), 10, prompt_token_ids=prompt, n=2, beam=True)
    engine, executor = _engine(model, Trace("one", [request]), BeamSearch(), beam_width=2,
                               allocator="contiguous", reserve="oracle")
    recorder = _Recorder(executor, monkeypatch)
    engine.submit(request, 0.0)
    _drain(engine)
    spans = [(source, num_slots) for source, _, num_slots in recorder.copies]
    assert spans[0] == (0, len(prompt))  # beam 1 forks with a copy of the prompt's KV
    assert len(spans) == 1 + len(recorder.pairs) and len(recorder.pairs) >= 1
    reference = _reference(model, request)
    assert executor.output_ids(request) == reference[0][1]


@pytest.mark.parametrize("overrides,min_preemptions", [
    ({"num_gpu_blocks": 40}, 1),                                     # recompute preemption
    ({"preemption": "swap", "num_gpu_blocks": 40}, 1),
    ({"scheduler": "chunked", "token_budget": 16}, 0),
    ({"scheduler": "static", "max_num_seqs": 8}, 0),
])
def test_every_beam_score_is_the_log_probability_of_its_tokens(model, overrides,
                                                               min_preemptions):
    """Whatever the schedule (preempted beams leave lockstep), each hypothesis's summed
    log-probability is that of its tokens under a full recompute: its KV was always right."""
    results, _ = replay_real(resolve(tiny_options(beam_width=3, **overrides)))
    assert results.summary["preemptions"] >= min_preemptions
    assert results.summary["requests_finished"] == 6
    executor = results.engines[0].executor
    for request in results.config.trace.requests:
        prompt = _prompt(request)
        for hypothesis in executor.beam_hypotheses(request):
            tokens = hypothesis.token_ids
            assert len(tokens) == request.output_tokens
            total = sum(float(torch.log_softmax(next_token_logits(model, prompt + tokens[:i]),
                                                -1)[token])
                        for i, token in enumerate(tokens))
            assert hypothesis.sum_logprob == pytest.approx(total, abs=1e-3)


def test_eos_hypotheses_and_the_length_penalty_match_the_reference(model):
    """With an EOS token a candidate ending in it is a finished, shorter hypothesis while the
    beams run on to the trace's length; the length penalty decides between them."""
    prompt = list(range(60, 75))
    eos = int(torch.topk(next_token_logits(model, prompt), 2).indices[1])  # 2nd-best first
    answers = {}
    for penalty in (0.0, 1.0, 3.0):
        request = Request(0, 0.0, len(prompt), 8, prompt_token_ids=tuple(prompt), n=3,
                          beam=True)
        engine, executor = _engine(model, Trace("eos", [request]), BeamSearch(penalty, eos),
                                   beam_width=3)
        engine.submit(request, 0.0)
        _drain(engine)
        reference = _reference(model, request, length_penalty=penalty, eos_token_id=eos)
        hypotheses = executor.beam_hypotheses(request)
        assert [h.token_ids for h in hypotheses] == [h[1] for h in reference]
        answers[penalty] = executor.output_ids(request)
    assert answers[0.0] == [eos]                   # no penalty: the short one scores best
    assert len(answers[3.0]) == 8                  # a strong one: a full-length beam wins


def test_assign_slots_keeps_parents_in_place():
    assert assign_slots([2, 2, 0, 2], 4) == ([2, 1, 0, 3], [(1, 2), (3, 2)])
    assert assign_slots([0, 1, 2], 3) == ([0, 1, 2], [])
    assert assign_slots([1, 1], 2) == ([1, 0], [(0, 1)])


def test_outputs_jsonl_gives_the_best_beam_and_all_hypotheses(model, tmp_path):
    trace = "synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:5"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", "--seed", "3", "--beam-width", "3", "--length-penalty",
                 "0.5", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    config = resolve(tiny_options(trace=trace, beam_width=3))
    assert [row["request_id"] for row in rows] == [0, 1]
    for row, request in zip(rows, config.trace.requests):
        reference = beam_search_recompute(model, _prompt(request), 5, 3, length_penalty=0.5)
        assert row["sample_output_token_ids"] == [h[1] for h in reference]
        assert row["output_token_ids"] == reference[0][1]


@pytest.mark.parametrize("argv,message", [
    (["--allocator", "paged-prefix"], "needs --allocator paged or contiguous"),
    (["--speculator", "ngram"], "does not speculate"),
    (["--temperature", "0.7"], "is deterministic"),
])
def test_what_beam_search_cannot_combine_with_is_a_clear_error(argv, message, capsys):
    trace = "synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:2"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", "--beam-width", "2", *argv]) == 2
    assert message in capsys.readouterr().err
