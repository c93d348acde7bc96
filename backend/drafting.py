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
- `DraftModelDrafter` (`--draft-model` another model of the target's vocabulary, e.g.
  `tiny-llama-draft`): a separate, smaller model, as in Leviathan et al. and vLLM's draft
  worker. Its K/V differ from the target's, so it has a pool of its own; the pool is addressed
  by the target allocator's block tables, so one allocation covers both models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from backend.kv_cache import KVCache
from backend.model import BatchLayout, LlamaModel
from backend.sampler import SamplingParams, generator_for, probabilities
from policies.kv.base import PageTableAllocator

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


class Drafter:
    """Proposes draft chains; a drafter with KV of its own also hears what happens to the
    target's pool (the defaults: nothing to do)."""

    def propose(self, jobs: list[DraftRequest]) -> dict[int, Drafts]:
        raise NotImplementedError

    def forget(self, seq_id: int) -> None:
        """`seq_id` was preempted or finished: whatever of its KV this drafter wrote is gone."""

    def copy_slots(self, source: int, destination: int, num_slots: int) -> None:
        """The target's pool copied these slots (copy-on-write, a forked span)."""


class NgramDrafter(Drafter):
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


class ModelDrafter(Drafter):
    """k autoregressive passes of a model over every verify chunk at once: the first feeds
    the tokens from `_resume(job)` up to the last sampled one, each next one the previous
    draft. Subclasses say which model, layers and KV pool, and from where to resume."""

    def __init__(self, model: LlamaModel, kv: KVCache, allocator: PageTableAllocator,
                 sampling: SamplingParams, seed: int, use_triton: bool,
                 layers: list[int] | None = None) -> None:
        self.model = model
        self.kv = kv
        self.allocator = allocator
        self.sampling = sampling
        self.seed = seed
        self.use_triton = use_triton
        self.layers = layers

    def _resume(self, job: DraftRequest) -> int:
        """The first position the first pass feeds: everything before has draft KV."""
        return len(job.token_ids) - 1

    def _remember(self, job: DraftRequest, drafts: list[int]) -> None:
        """`job`'s passes wrote KV for its tokens and every draft but the last."""

    def propose(self, jobs: list[DraftRequest]) -> dict[int, Drafts]:
        if not jobs:
            return {}
        drafted: dict[int, list[int]] = {job.seq_id: [] for job in jobs}
        probs: dict[int, list[torch.Tensor]] = {job.seq_id: [] for job in jobs}
        gens = {job.seq_id: generator_for(self.seed, job.seq_id, -2 - job.draw_index)
                for job in jobs}
        first = {job.seq_id: self._resume(job) for job in jobs}
        for step in range(max(job.num_drafts for job in jobs)):
            active = [job for job in jobs if job.num_drafts > step]
            spans = []  # (token ids, first position) fed per active job
            for job in active:
                ids = job.token_ids + drafted[job.seq_id]
                start = first[job.seq_id] if step == 0 else len(ids) - 1
                spans.append((ids[start:], start))
            logits = self.model.logits(self._forward(active, spans))
            for row, job in zip(logits, active):
                if self.sampling.is_greedy:
                    drafted[job.seq_id].append(int(row.argmax()))
                    continue
                q = probabilities(row, self.sampling).cpu()
                drafted[job.seq_id].append(int(torch.multinomial(q, 1, generator=gens[job.seq_id])))
                probs[job.seq_id].append(q)
        for job in jobs:
            self._remember(job, drafted[job.seq_id])
        return {
            seq_id: Drafts(tokens, torch.stack(probs[seq_id]) if probs[seq_id] else None)
            for seq_id, tokens in drafted.items()
        }

    def _forward(self, jobs: list[DraftRequest],
                 spans: list[tuple[list[int], int]]) -> torch.Tensor:
        """One pass over every job's span (its K/V written at the job's own slots); returns
        the hidden state [len(jobs), hidden] at each span's last token."""
        device = self.model.norm.weight.device
        tokens, positions, slots, tables = [], [], [], []
        query_start, context_lens = [0], []
        page_size = 1
        for job, (ids, start) in zip(jobs, spans):
            page_size, pages = self.allocator.page_size, self.allocator.page_table(job.seq_id)
            page_ids = torch.tensor(pages, dtype=torch.long)
            new_pos = torch.arange(start, start + len(ids))
            tokens.extend(ids)
            positions.append(new_pos)
            slots.append(page_ids[new_pos // page_size] * page_size + new_pos % page_size)
            tables.append(pages)
            query_start.append(len(tokens))
            context_lens.append(start + len(ids))
        width = max(len(t) for t in tables)
        page_tables = torch.zeros(len(tables), width, dtype=torch.int32)
        for row, pages in enumerate(tables):
            page_tables[row, : len(pages)] = torch.tensor(pages, dtype=torch.int32)
        layout = BatchLayout(
            positions=torch.cat(positions).to(device), slots=torch.cat(slots).to(device),
            page_tables=page_tables.to(device), page_size=page_size,
            query_start=query_start, context_lens=context_lens, use_triton=self.use_triton)
        hidden = self.model(torch.tensor(tokens, device=device), layout, self.kv,
                            layers=self.layers)
        return hidden[[end - 1 for end in query_start[1:]]]


class SelfDrafter(ModelDrafter):
    """The target with its middle layers skipped, on the target's own KV pool (see the
    module docstring): the context is always there, so each chain starts at the last
    sampled token."""

    def __init__(self, model: LlamaModel, kv: KVCache, allocator: PageTableAllocator,
                 sampling: SamplingParams, seed: int, use_triton: bool) -> None:
        skipped = skipped_layers(model.spec.num_layers)
        super().__init__(model, kv, allocator, sampling, seed, use_triton,
                         [i for i in range(model.spec.num_layers) if i not in skipped])


class DraftModelDrafter(ModelDrafter):
    """A separate, smaller model with a KV pool of its own (see the module docstring).

    Its pool has the target's block count and block size and is addressed by the target
    allocator's block tables (vLLM v0's draft worker did the same): the allocator accounts
    one block for both models, and the target's copy-on-write copies are mirrored here. The
    draft computes a sequence's context lazily, when the sequence first speculates, and then
    resumes after the longest prefix of tokens it already holds KV for: the last sampled token
    usually, or the bonus token's predecessor too when every draft was accepted (the verify
    computed it, the draft never fed it). A preempted sequence starts over.
    """

    def __init__(self, draft: LlamaModel, allocator: PageTableAllocator, sampling: SamplingParams,
                 seed: int, use_triton: bool) -> None:
        spec = draft.spec
        kv = KVCache(num_layers=spec.num_layers, num_blocks=allocator.num_blocks,
                     block_size=allocator.block_size, num_kv_heads=spec.num_kv_heads,
                     head_dim=spec.attn_head_dim, dtype=draft.norm.weight.dtype,
                     device=draft.norm.weight.device)
        super().__init__(draft, kv, allocator, sampling, seed, use_triton)
        self._held: dict[int, list[int]] = {}
        """Per sequence, the tokens whose draft KV its pages hold, from position 0."""

    def _resume(self, job: DraftRequest) -> int:
        held = self._held.get(job.seq_id, [])
        common = 0
        for have, want in zip(held, job.token_ids):
            if have != want:
                break
            common += 1
        return min(common, len(job.token_ids) - 1)

    def _remember(self, job: DraftRequest, drafts: list[int]) -> None:
        self._held[job.seq_id] = job.token_ids + drafts[:-1]

    def forget(self, seq_id: int) -> None:
        self._held.pop(seq_id, None)

    def copy_slots(self, source: int, destination: int, num_slots: int) -> None:
        self.kv.copy_slots(source, destination, num_slots)


def layer_subset(model: LlamaModel, layers: list[int]) -> LlamaModel:
    """A separate model of `model`'s embedding, its `layers` (in order) and its head, sharing
    their weights: an early-exit draft for a checkpoint with no smaller sibling at hand
    (smollm2-135m). Unlike `SelfDrafter` it runs as a model of its own, on its own KV."""
    spec = dataclasses.replace(model.spec, name=f"{model.spec.name}-layers{len(layers)}",
                               num_layers=len(layers))
    with torch.device("meta"):  # every parameter is replaced by a shared one: none allocated
        draft = LlamaModel(spec)
    draft.embed_tokens, draft.norm, draft.lm_head = model.embed_tokens, model.norm, model.lm_head
    draft.layers = nn.ModuleList(model.layers[i] for i in layers)
    return draft
