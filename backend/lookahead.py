"""Lookahead decoding on a real model (`policies/speculative/jacobi.py` holds the token logic:
the Jacobi window, the n-gram pool, a pass's layout and mask, acceptance).

- `Lookahead`: the paged runner's part (`backend/runner.py`). A verify chunk of k levels is
  the pass [x] + W x k window + G x k candidates, written into the sequence's next
  1 + (W + G) k KV slots at their own RoPE positions and attended under the pass's mask on
  top of the cached context. The accepted drafts' K/V are then copied from the accepted
  candidate's slots to the slots right after x (recomputing them would cost another pass;
  they already are the causal K/V: a candidate token attends to the context, x and its own
  chain, at its own position); the engine's `shrink_slots` releases the rest.
- `lookahead_recompute`: no KV reuse, each step one forward over the context and the pass;
  the baseline the paged runner must equal.
"""

from __future__ import annotations

import torch

from backend.kv_cache import KVCache
from backend.model import BatchLayout, LlamaModel
from policies.speculative.jacobi import LookaheadPass, LookaheadState
from policies.speculative.lookahead import LookaheadParams


class Lookahead:
    """Each sequence's Jacobi window and n-gram pool (a `LookaheadState`, seeded from its
    prompt when it first speculates, as `lookahead_recompute` seeds it, and kept across
    preemptions: it holds guesses, no KV), its passes' masks and acceptance."""

    def __init__(self, params: LookaheadParams) -> None:
        self.params = params
        self._states: dict[int, LookaheadState] = {}

    def layout(self, seq_id: int, token_ids: list[int], num_prompt_tokens: int,
               num_levels: int) -> LookaheadPass:
        """The pass of `num_levels` levels after `token_ids` (the last one is x)."""
        state = self._states.get(seq_id)
        if state is None:
            p = self.params
            state = LookaheadState(token_ids[:num_prompt_tokens], p.lookahead_window,
                                   p.lookahead_ngram, p.lookahead_guesses)
            self._states[seq_id] = state
        return state.layout(token_ids[-1], num_levels)

    def commit(self, seq_id: int, step: LookaheadPass, logits: torch.Tensor) -> list[int]:
        """The tokens `step` commits, from the target's logits at every pass index
        [len(step.tokens), vocab] (greedy); advances the window and feeds the pool."""
        return self._states[seq_id].commit(step, logits.argmax(dim=-1).tolist())

    def forget(self, seq_id: int) -> None:
        """`seq_id` finished."""
        self._states.pop(seq_id, None)


def pass_mask(step: LookaheadPass, device: torch.device) -> torch.Tensor:
    """[n, n] bool: pass index i sees index j (the context is always seen)."""
    n = len(step.tokens)
    sees = torch.zeros(n, n, dtype=torch.bool)
    for index, attended in enumerate(step.attends):
        sees[index, attended] = True
    return sees.to(device)


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
    sees[num_context:, num_context:] = pass_mask(step, device)
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
