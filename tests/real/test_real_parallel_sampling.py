"""Parallel sampling (`--n`) on real tensors: samples fork from the prompt's KV through the
allocator (paged children share the prompt's physical blocks; the partly filled last block is
copied on first write, and the executor really copies it), and every sample's outputs equal
an independent no-cache run with that sample's seed."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from backend.model import LlamaModel, init_random
from backend.recompute import generate_recompute
from backend.replay import replay_real, sample_outputs
from backend.runner import RealExecutor, seeded_prompt
from backend.sampler import SamplingParams
from policies.types import Request, sample_seq_id
from sim.assembly import build_cost_model, build_engine
from sim.cli import main
from sim.config import ReplayOptions, resolve
from tests.real.tiny_llama import kv_pool_for
from traces.trace import Trace

TRACE = "synthetic:n=4,arrivals=poisson:100,prompt=uniform:5:40,output=uniform:2:20"
SAMPLING = SamplingParams(temperature=0.8, top_k=50)


def _options(**overrides) -> ReplayOptions:
    base = ReplayOptions(trace=TRACE, model="tiny-llama", hardware="cpu", executor="real",
                         pace="asap", seed=3, num_gpu_blocks=96, block_size=4, n=3,
                         temperature=SAMPLING.temperature, top_k=SAMPLING.top_k)
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return init_random(LlamaModel(resolve(_options()).model), seed=3).eval()


def _references(model, requests, sampling=SAMPLING):
    return {
        r.request_id: [
            generate_recompute(model, list(r.prompt_token_ids or seeded_prompt(r, 512, 3)),
                               r.output_tokens, sampling=sampling, seed=3,
                               seq_id=sample_seq_id(r, index))
            for index in range(r.n)
        ]
        for r in requests
    }


def test_samples_share_the_prompt_blocks_and_the_tail_is_really_copied(model):
    prompt = tuple(range(20, 30))
    request = Request(0, 0.0, len(prompt), 6, prompt_token_ids=prompt, n=3)
    config = resolve(_options(), Trace("one", [request]))
    executors = []

    def executor_for(allocator):
        kv = kv_pool_for(model, allocator)
        executors.append(RealExecutor(model, kv, allocator, sampling=SAMPLING, seed=3))
        return executors[0]

    engine, _ = build_engine(config, build_cost_model(config), executor_for=executor_for)
    executor, allocator = executors[0], engine.scheduler.allocator
    engine.submit(request, 0.0)
    engine.step(0.0)  # the prefill: samples 1 and 2 fork from it
    ids = [sample_seq_id(request, index) for index in range(3)]
    tables = [list(allocator.block_tables[seq_id]) for seq_id in ids]
    assert tables[0] == tables[1] == tables[2] and len(tables[0]) == 3
    assert engine.scheduler.allocator.usage().filled_slots == 10  # one physical prompt
    tail = tables[0][2]
    prompt_kv = executor.kv.k[:, tail, :2].clone()
    engine.step(1.0)  # every sample writes position 10 into the shared tail block
    new_tables = [allocator.block_tables[seq_id] for seq_id in ids]
    assert all(table[:2] == tables[0][:2] for table in new_tables)  # full blocks still shared
    tails = {table[2] for table in new_tables}
    assert len(tails) == 3  # two copies made, the last writer kept the original
    for block in tails:
        assert torch.equal(executor.kv.k[:, block, :2], prompt_kv)
    now = 2.0
    while engine.outstanding_requests:
        engine.step(now)
        now += 1.0
    assert executor.sample_output_ids(request) == _references(model, [request])[0]


@pytest.mark.parametrize("overrides", [
    {},
    {"allocator": "contiguous", "reserve": "oracle"},
    {"num_gpu_blocks": 24},                                         # forks meet a tight pool
    {"num_gpu_blocks": 24, "preemption": "swap"},                   # a fork swapped unrun
    {"scheduler": "chunked", "token_budget": 16},
])
def test_every_sample_equals_an_independent_run_of_its_seed(model, overrides):
    results, outputs = replay_real(resolve(_options(**overrides)))
    samples = sample_outputs(results)
    assert samples == _references(model, results.config.trace.requests)
    assert outputs == {request_id: runs[0] for request_id, runs in samples.items()}
    assert results.summary["requests_finished"] == 4
    assert len({tuple(run) for runs in samples.values() for run in runs}) > 4


@pytest.mark.parametrize("speculation", [
    {}, {"speculator": "ngram"}, {"speculator": "draft", "draft_model": "tiny-llama"},
])
def test_greedy_samples_are_all_the_greedy_answer(model, speculation):
    """Speculating samples verify drafts on their own forked KV (sampling with speculation
    draws differently from plain sampling, so greedy pins its outputs)."""
    results, _ = replay_real(resolve(_options(n=2, temperature=0.0, top_k=0, **speculation)))
    references = _references(model, results.config.trace.requests, SamplingParams())
    assert sample_outputs(results) == references
    assert all(runs[0] == runs[1] for runs in references.values())


def test_outputs_jsonl_lists_every_sample(tmp_path):
    trace = "synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:3"
    assert main(["replay", "--quiet", "--trace", trace, "--executor", "real", "--model",
                 "tiny-llama", "--n", "2", "--temperature", "1.0", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert [row["request_id"] for row in rows] == [0, 1]
    for row in rows:
        assert len(row["sample_output_token_ids"]) == 2
        assert row["sample_output_token_ids"][0] == row["output_token_ids"]
        assert all(len(run) == 3 for run in row["sample_output_token_ids"])
