"""The plain baseline: greedy generation with no KV reuse, recomputing the whole sequence for
every new token. Outputs of every policy combination must equal it token for token, and the
paged engine's speed is measured against it (bench/paged_vs_recompute.py)."""

from __future__ import annotations

import torch

from backend.kv_cache import KVCache
from backend.model import BatchLayout, LlamaModel
from backend.sampler import SamplingParams, generator_for, sample


def generate_recompute(model: LlamaModel, prompt_ids: list[int], num_tokens: int, *,
                       sampling: SamplingParams = SamplingParams(), seed: int = 0,
                       seq_id: int = 0) -> list[int]:
    """`num_tokens` tokens after `prompt_ids` (greedy unless `sampling` says otherwise, output
    i drawn with the engine's generator for (seed, seq_id, i)); each step is a fresh full
    forward pass (its scratch cache holds only that pass's own K/V, laid out position = slot)."""
    spec = model.spec
    device = model.norm.weight.device
    max_len = len(prompt_ids) + num_tokens
    scratch = KVCache(num_layers=spec.num_layers, num_blocks=max_len, block_size=1,
                      num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                      dtype=model.norm.weight.dtype, device=device)
    tokens = list(prompt_ids)
    for index in range(num_tokens):
        length = len(tokens)
        positions = torch.arange(length, device=device)
        layout = BatchLayout(positions=positions, slots=positions,
                             page_tables=positions.to(torch.int32)[None, :], page_size=1,
                             query_start=[0, length], context_lens=[length])
        hidden = model(torch.tensor(tokens, device=device), layout, scratch)
        gen = generator_for(seed, seq_id, index)
        tokens.append(sample(model.logits(hidden[-1:])[0], sampling, gen))
    return tokens[len(prompt_ids):]
