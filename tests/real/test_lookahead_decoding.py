"""Lookahead decoding on real weights (no KV reuse): greedy outputs equal plain greedy
decoding, and the masked pass is the per-branch computation it stands for."""

from __future__ import annotations

import pytest
import torch

from backend.gguf_weights import INSTALL_HINT, find_gguf
from backend.lookahead import lookahead_recompute, pass_outputs
from backend.model import LlamaModel, init_random
from backend.recompute import generate_recompute, next_token_logits
from policies.speculative.jacobi import LookaheadState
from sim.cost.catalog import get_model


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return init_random(LlamaModel(get_model("tiny-llama")), seed=3).eval()


def test_masked_pass_equals_each_branch_run_alone(tiny):
    context = [5, 9, 2, 7, 5, 9, 2, 7, 1]
    state = LookaheadState(context, window=3, ngram=3, guesses=2)
    state.pool.add([4, 8, 6])
    step = state.layout(4, 2)
    outputs = pass_outputs(tiny, context, step)
    for index, attended in enumerate(step.attends):
        alone = context + [step.tokens[a] for a in attended]
        assert outputs[index] == int(next_token_logits(tiny, alone).argmax())


@pytest.mark.parametrize("window, ngram, guesses", [(3, 3, 2), (4, 4, 4), (2, 2, 1)])
def test_tiny_llama_greedy_outputs_are_plain_greedy(tiny, window, ngram, guesses):
    prompt = [3, 17, 4, 17, 4, 17, 4, 9, 12]
    tokens, num_steps = lookahead_recompute(tiny, prompt, 24, window, ngram, guesses)
    assert tokens == generate_recompute(tiny, prompt, 24)
    assert num_steps <= 23


@pytest.mark.slow
@pytest.mark.skipif(find_gguf() is None, reason=f"SmolLM2 weights not installed ({INSTALL_HINT})")
def test_smollm2_greedy_outputs_are_plain_greedy_in_fewer_steps():
    from backend.gguf_weights import load_gguf_weights, load_tokenizer, open_gguf

    torch.set_num_threads(1)
    reader = open_gguf(find_gguf())
    model = load_gguf_weights(LlamaModel(get_model("smollm2-135m")), reader).eval()
    prompt = load_tokenizer(reader).chat_prompt([{"role": "user", "content":
                                                   "Count from 1 to 20, separated by commas."}])
    tokens, num_steps = lookahead_recompute(model, prompt, 40, 4, 4, 4)  # about 80 s on CPU
    assert tokens == generate_recompute(model, prompt, 40)
    assert num_steps < 39   # the counting answer repeats ", " patterns the pool catches
