"""The plain baselines: generation with no KV reuse, recomputing the whole sequence for every
new token. Outputs of every policy combination must equal them token for token, and the paged
engine's speed is measured against them (bench/paged_vs_recompute.py)."""

from __future__ import annotations

import math

import torch

from backend.diffusion import attend_ends, denoise
from backend.kv_cache import KVCache
from backend.model import BatchLayout, LlamaModel
from backend.sampler import SamplingParams, generator_for, sample
from policies.decoding.block_diffusion import BlockDiffusion


def next_token_logits(model: LlamaModel, token_ids: list[int]) -> torch.Tensor:
    """Logits [V] after `token_ids`, from a fresh full forward pass (its scratch cache holds
    only that pass's own K/V, laid out position = slot)."""
    return model.logits(full_pass(model, token_ids)[-1:])[0]


def full_pass(model: LlamaModel, token_ids: list[int],
              attend_ends: list[int] | None = None) -> torch.Tensor:
    """Hidden states [T, hidden] of a fresh forward pass over `token_ids` (causal, or each
    token seeing keys before its `attend_ends` entry)."""
    spec = model.spec
    device = model.norm.weight.device
    length = len(token_ids)
    scratch = KVCache(num_layers=spec.num_layers, num_blocks=length, block_size=1,
                      num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                      dtype=model.norm.weight.dtype, device=device)
    positions = torch.arange(length, device=device)
    ends = None if attend_ends is None else torch.tensor(attend_ends, device=device)
    layout = BatchLayout(positions=positions, slots=positions,
                         page_tables=positions.to(torch.int32)[None, :], page_size=1,
                         query_start=[0, length], context_lens=[length], attend_ends=ends)
    return model(torch.tensor(token_ids, device=device), layout, scratch)


def block_diffusion_recompute(model: LlamaModel, prompt_ids: list[int], num_tokens: int,
                              policy: BlockDiffusion) -> tuple[list[int], int]:
    """`num_tokens` outputs after `prompt_ids` by block diffusion without any KV reuse: every
    denoising step recomputes the whole sequence (prompt, finished blocks, the block) under
    the block mask. Returns the outputs and the number of denoising steps."""
    mask = model.spec.mask_token_id
    if mask is None:
        raise ValueError(f"{model.spec.name} has no mask token to denoise")
    block_size = policy.params.diffusion_block
    total = len(prompt_ids) + num_tokens
    outputs: list[int] = []
    num_steps = 0
    while len(outputs) < num_tokens:
        block = [mask] * min(block_size, num_tokens - len(outputs))
        block_steps = 0
        while mask in block:
            tokens = list(prompt_ids) + outputs + block
            ends = attend_ends(0, len(tokens), len(prompt_ids), total, block_size)
            hidden = full_pass(model, tokens, ends)[-len(block):]
            denoise(model.logits(hidden), block, mask, policy, block_steps)
            block_steps += 1
        num_steps += block_steps
        outputs += block
    return outputs, num_steps


def generate_recompute(model: LlamaModel, prompt_ids: list[int], num_tokens: int, *,
                       sampling: SamplingParams = SamplingParams(), seed: int = 0,
                       seq_id: int = 0) -> list[int]:
    """`num_tokens` tokens after `prompt_ids` (greedy unless `sampling` says otherwise, output
    i drawn with the engine's generator for (seed, seq_id, i))."""
    tokens = list(prompt_ids)
    for index in range(num_tokens):
        gen = generator_for(seed, seq_id, index)
        tokens.append(sample(next_token_logits(model, tokens), sampling, gen))
    return tokens[len(prompt_ids):]


def beam_search_recompute(model: LlamaModel, prompt_ids: list[int], num_tokens: int,
                          width: int, *, length_penalty: float = 1.0,
                          eos_token_id: int | None = None) -> list[tuple[float, list[int]]]:
    """Textbook beam search over full recomputes: the `width` best (summed log-probability,
    outputs) hypotheses after `num_tokens` steps, best first under the length penalty.

    Each step ranks every (beam, token) by the beam's sum plus the token's log-probability
    and walks the best 2 * width: an EOS among the first `width` is a finished hypothesis
    (with its EOS), the first `width` others are the next beams. Every beam runs all
    `num_tokens` steps; hypotheses are ranked by sum / len(outputs) ** length_penalty.
    """
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    finished: list[tuple[float, list[int]]] = []
    for _ in range(num_tokens):
        candidates = []
        for total, outputs in beams:
            logprobs = torch.log_softmax(next_token_logits(model, prompt_ids + outputs), -1)
            candidates += [(total + float(lp), outputs, token)
                           for token, lp in enumerate(logprobs.tolist())]
        candidates.sort(key=lambda c: -c[0])
        beams = []
        for rank, (total, outputs, token) in enumerate(candidates[:2 * width]):
            if token == eos_token_id:
                if rank < width:
                    finished.append((total, outputs + [token]))
            elif len(beams) < width:
                beams.append((total, outputs + [token]))

    def score(hypothesis: tuple[float, list[int]]) -> float:
        return hypothesis[0] / math.pow(len(hypothesis[1]), length_penalty)

    return sorted(finished + beams, key=score, reverse=True)[:width]
