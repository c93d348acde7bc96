"""Block diffusion on tensors: the block mask and one denoising step's commits, shared by the
real executor (`backend/runner.py`) and the full-recompute reference (`backend/recompute.py`).

The mask over a sequence of P prompt tokens and output blocks of B positions:

    query in the prompt, at p:          keys at 0..p                 (causal)
    query in output block k:            keys at 0..end of block k    (its whole block, and
                                                                      everything before it)

so a block's KV depends only on the tokens of its block and those before it: the KV a cached
engine keeps for a finished block (computed once with its final tokens) is exactly what a
full recompute of the whole sequence computes for it.
"""

from __future__ import annotations

import torch

from policies.decoding.block_diffusion import BlockDiffusion


def attend_ends(first: int, end: int, prompt_tokens: int, total_tokens: int,
                block: int) -> list[int]:
    """For positions first..end-1: the position before which each one's keys end."""
    ends = []
    for p in range(first, end):
        if p < prompt_tokens:
            ends.append(p + 1)
        else:
            ends.append(min(prompt_tokens + ((p - prompt_tokens) // block + 1) * block,
                            total_tokens))
    return ends


def denoise(logits: torch.Tensor, block_ids: list[int], mask_token_id: int,
            policy: BlockDiffusion, num_block_steps: int) -> int:
    """Step `num_block_steps` + 1 of a block, from its logits [b, vocab]: commit the most
    confident still-masked positions (as many as `policy` says, greedy tokens; the mask token
    is never a prediction) into `block_ids` in place, and return how many. Ties go to the
    earlier position."""
    logits = logits.float().clone()
    logits[:, mask_token_id] = float("-inf")
    confidence, tokens = torch.softmax(logits, dim=-1).max(dim=-1)  # [b], [b]
    masked = [i for i, token in enumerate(block_ids) if token == mask_token_id]
    scores = confidence.tolist()
    count = policy.num_to_commit(len(masked), num_block_steps, [scores[i] for i in masked])
    for i in sorted(masked, key=lambda i: (-scores[i], i))[:count]:
        block_ids[i] = int(tokens[i])
    return count
