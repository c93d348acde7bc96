"""Drafters for speculative decoding on real tensors: who proposes the k tokens a verify
chunk checks.

The speculator policy (`policies/speculative/`) decides k per request and the planner widens
each decode to 1 + k tokens with KV slots for all of them; a drafter only fills in the tokens,
with the distribution each was drawn from (rejection sampling needs q(x)). Verification is the
runner's (greedy or exact rejection sampling), so outputs never depend on the drafter, only
the number of tokens per step does.

- `NgramDrafter` (`--speculator ngram`): prompt lookup. The longest recent n-gram (n = 3..1)
  that occurred earlier in the prompt or output proposes the tokens that followed it; a
  deterministic proposal, so q is one-hot.
- `SelfDrafter` (`--speculator draft --draft-model` equal to `--model`): the same model with
  its middle layers skipped (self-speculative decoding). It runs on the target's own KV pool:
  context positions read the target's K/V of the kept layers, and the K/V it writes at the
  draft positions lie in slots the verify pass rewrites (or the allocator reclaims), so it
  needs no memory of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from backend.kv_cache import KVCache, page_table
from backend.model import BatchLayout, LlamaModel
from backend.sampler import SamplingParams, generator_for, probabilities
from policies.kv.base import KVAllocator

MAX_NGRAM = 3


@dataclass(slots=True)
class DraftRequest:
    """One verify chunk's drafting job: the sequence's known tokens (prompt + outputs, the
    last not yet in the KV) and how many drafts to propose."""

    seq_id: int
    token_ids: list[int]
    num_drafts: int
    draw_index: int
    """The sequence's output count, seeding the draft draws of this step."""


@dataclass(slots=True)
class Drafts:
    token_ids: list[int]
    probs: torch.Tensor | None
    """[k, vocab] distributions the tokens were drawn from; None for a deterministic drafter
    (q is then one-hot on each token)."""


class Drafter(Protocol):
    def propose(self, jobs: list[DraftRequest]) -> dict[int, Drafts]: ...


class NgramDrafter:
    def propose(self, jobs: list[DraftRequest]) -> dict[int, Drafts]:
        return {job.seq_id: Drafts(ngram_lookup(job.token_ids, job.num_drafts), None)
                for job in jobs}


def ngram_lookup(token_ids: list[int], num_drafts: int) -> list[int]:
    """The `num_drafts` tokens that followed the latest earlier occurrence of the longest
    suffix n-gram (n = MAX_NGRAM..1); positions with nothing to copy repeat the last token
    (the planner has already given them KV slots, so the chain keeps its length)."""
    for n in range(min(MAX_NGRAM, len(token_ids) - 1), 0, -1):
        suffix = token_ids[-n:]
        for start in range(len(token_ids) - n - 1, -1, -1):
            if token_ids[start:start + n] == suffix:
                follow = token_ids[start + n:start + n + num_drafts]
                return follow + [follow[-1]] * (num_drafts - len(follow))
    return [token_ids[-1]] * num_drafts


def skipped_layers(num_layers: int) -> range:
    """The middle quarter of the layers (at least one): early layers build features, late
    layers map to the vocabulary, the middle is the most redundant (LayerSkip, Draft&Verify)."""
    num_skipped = max(1, num_layers // 4)
    first = (num_layers - num_skipped) // 2
    return range(first, first + num_skipped)


class SelfDrafter:
    def __init__(self, model: LlamaModel, kv: KVCache, allocator: KVAllocator,
                 sampling: SamplingParams, seed: int, use_triton: bool) -> None:
        self.model = model
        self.kv = kv
        self.allocator = allocator
        self.sampling = sampling
        self.seed = seed
        self.use_triton = use_triton
        skipped = skipped_layers(model.spec.num_layers)
        self.layers = [i for i in range(model.spec.num_layers) if i not in skipped]

    def propose(self, jobs: list[DraftRequest]) -> dict[int, Drafts]:
        """k single-token passes over every job at once (jobs with fewer drafts drop out)."""
        if not jobs:
            return {}
        device = self.model.norm.weight.device
        drafted: dict[int, list[int]] = {job.seq_id: [] for job in jobs}
        probs: dict[int, list[torch.Tensor]] = {job.seq_id: [] for job in jobs}
        gens = {job.seq_id: generator_for(self.seed, job.seq_id, -2 - job.draw_index)
                for job in jobs}
        for step in range(max(job.num_drafts for job in jobs)):
            active = [job for job in jobs if job.num_drafts > step]
            tokens, positions, slots, tables = [], [], [], []
            page_size = 1
            for job in active:
                position = len(job.token_ids) - 1 + step
                tokens.append((job.token_ids + drafted[job.seq_id])[position])
                positions.append(position)
                page_size, pages = page_table(self.allocator, job.seq_id)
                slots.append(pages[position // page_size] * page_size + position % page_size)
                tables.append(pages)
            width = max(len(t) for t in tables)
            page_tables = torch.zeros(len(tables), width, dtype=torch.int32)
            for row, pages in enumerate(tables):
                page_tables[row, : len(pages)] = torch.tensor(pages, dtype=torch.int32)
            layout = BatchLayout(
                positions=torch.tensor(positions, device=device),
                slots=torch.tensor(slots, device=device),
                page_tables=page_tables.to(device), page_size=page_size,
                query_start=list(range(len(active) + 1)),
                context_lens=[p + 1 for p in positions], use_triton=self.use_triton)
            hidden = self.model(torch.tensor(tokens, device=device), layout, self.kv,
                                layers=self.layers)
            logits = self.model.logits(hidden)
            for row, job in zip(logits, active):
                if self.sampling.is_greedy:
                    drafted[job.seq_id].append(int(row.argmax()))
                    continue
                q = probabilities(row, self.sampling).cpu()
                drafted[job.seq_id].append(int(torch.multinomial(q, 1, generator=gens[job.seq_id])))
                probs[job.seq_id].append(q)
        return {
            seq_id: Drafts(tokens, torch.stack(probs[seq_id]) if probs[seq_id] else None)
            for seq_id, tokens in drafted.items()
        }
