"""Lookahead decoding on a real model without KV reuse: each step is one forward pass over the
context and the step's lookahead pass (`policies/speculative/jacobi.py`: x, the Jacobi window,
the pool's candidates) under the pass's mask, with every token at its own position. The
baseline the paged runner's lookahead must equal, and a measure of tokens per step on real
weights."""

from __future__ import annotations

import torch

from backend.kv_cache import KVCache
from backend.model import BatchLayout, LlamaModel
from policies.speculative.jacobi import LookaheadPass, LookaheadState


def pass_outputs(model: LlamaModel, context_ids: list[int], step: LookaheadPass) -> list[int]:
    """The target's greedy token after every index of `step`, x sitting right after
    `context_ids`."""
    spec = model.spec
    device = model.norm.weight.device
    num_context, num_pass = len(context_ids), len(step.tokens)
    length = num_context + num_pass
    scratch = KVCache(num_layers=spec.num_layers, num_blocks=length, block_size=1,
                      num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                      dtype=model.norm.weight.dtype, device=device)
    sees = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device))
    sees[num_context:, num_context:] = False
    for index, attended in enumerate(step.attends):
        sees[num_context + index, [num_context + a for a in attended]] = True
    positions = torch.tensor(list(range(num_context)) + [num_context + o for o in step.offsets],
                             device=device)
    slots = torch.arange(length, device=device)
    layout = BatchLayout(positions=positions, slots=slots,
                         page_tables=slots.to(torch.int32)[None, :], page_size=1,
                         query_start=[0, length], context_lens=[length], chunk_masks=[sees])
    hidden = model(torch.tensor(context_ids + step.tokens, device=device), layout, scratch)
    return model.logits(hidden[num_context:]).argmax(dim=-1).tolist()


def lookahead_recompute(model: LlamaModel, prompt_ids: list[int], num_tokens: int,
                        window: int, ngram: int, guesses: int) -> tuple[list[int], int]:
    """`num_tokens` greedy outputs by lookahead decoding, and the number of lookahead steps
    (the first token comes from the prompt's own pass, as a prefill samples it)."""
    state = LookaheadState(prompt_ids, window, ngram, guesses)
    tokens = list(prompt_ids)
    tokens += pass_outputs(model, tokens[:-1], state.layout(tokens[-1], 0))[:1]
    num_steps = 0
    while len(tokens) - len(prompt_ids) < num_tokens:
        step = state.layout(tokens[-1], ngram - 1)
        tokens += state.commit(step, pass_outputs(model, tokens[:-1], step))
        num_steps += 1
    return tokens[len(prompt_ids):len(prompt_ids) + num_tokens], num_steps
