"""Beam search on real tensors: the score-driven `BeamReparenter` (`policies/beam.py`).

The engine runs a beam request of width W as W sequences: beam 0 prefills the prompt and
beams 1..W-1 fork from it (sharing the prompt's blocks). Whenever all W sample a token in the
same step at the same length ("lockstep"), the executor hands their next-token logits to
`BeamSearch.advance`, one step of standard beam search (as Hugging Face's BeamSearchScorer):

    candidate (b, t) scores  sum_logprob[b] + log_softmax(logits[b])[t]     W x V of them
    keep the best 2W; walking them best first, an EOS candidate ranked among the first W
    becomes a finished hypothesis, and the first W non-EOS candidates are the new beams
    (each beam contributes at most one EOS, so 2W always holds W non-EOS candidates)

The new beams are laid onto the W sequences with as few copies as possible: a parent chosen
at least once keeps its own sequence for its best continuation; every further continuation
takes the sequence of a beam nobody chose (the loser), whose history becomes the parent's plus
its new token. The engine then reparents each loser, `free(loser); fork(parent, loser)`: the
loser shares the parent's blocks, and the next write into their partly filled last block
copies it (copy-on-write), a copy the executor runs on the KV pool from the plan's
`block_copies`.

    before            beam 0: [p p p p][p a b .]    beam 1: [p p p p][p a c .]
    parents 0, 0      beam 0: [p p p p][p a b d]    beam 1: [p p p p][p a b .] -> copy, + e

Length and EOS: the trace fixes each request's output length, so every beam runs to it (the
memory the simulator's beam model charges); there is no early stop. With an EOS token (a model
with a tokenizer) an EOS candidate is set aside as a finished, shorter hypothesis, as in
Hugging Face; without one (tiny-llama) EOS is ignored. The answer is the best hypothesis among
the finished ones and the W beams at the end, scored with Hugging Face's length penalty:
`sum_logprob / num_output_tokens ** length_penalty` (the output counts its EOS).

A beam that samples without its siblings (preempted and recomputed, or forked into a full
pool) falls out of lockstep for good: it is then extended alone by its own best token, its
score still adds up, and the engine reparents nothing for that request. Beam search is exact
while the pool holds every beam.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from policies.types import Request, Sequence


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """One candidate answer: its output ids, their summed log-probability, and its score
    under the length penalty (what answers are ranked by)."""

    token_ids: list[int]
    sum_logprob: float
    score: float


@dataclass(slots=True)
class _Beams:
    sum_logprobs: list[float]
    """Each beam's summed output log-probability, by sample index."""
    finished: list[Hypothesis]


class BeamSearch:
    """Every beam request's scores and finished hypotheses; the executor feeds it logits, the
    engine asks it whom to reparent. Deterministic: no draw, no seed."""

    def __init__(self, length_penalty: float = 1.0, eos_token_id: int | None = None) -> None:
        self.length_penalty = length_penalty
        self.eos_token_id = eos_token_id
        self._beams: dict[int, _Beams] = {}
        self._pending: dict[int, list[tuple[int, int]]] = {}
        """(loser, parent) sample indices the last lockstep step chose, per request, until
        the engine's `reparent` takes them."""

    def score(self, sum_logprob: float, num_tokens: int) -> float:
        return sum_logprob / num_tokens ** self.length_penalty

    def start(self, request: Request, logits: torch.Tensor,
              prompt_ids: list[int]) -> list[list[int]]:
        """The prompt's next-token logits [V] -> every beam's first history (prompt + its
        token): the W best first tokens, as a step from one beam of score 0. The engine
        forks beams 1..W-1 from beam 0 itself, so nothing is reparented."""
        self._beams[request.request_id] = _Beams([0.0], [])
        histories, _ = self._select(request, logits[None, :], [prompt_ids])
        return histories

    def advance(self, request: Request, logits: torch.Tensor,
                histories: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, int]]]:
        """One lockstep step. logits [W, V] and histories (prompt + outputs) of beams
        0..W-1 -> (the W new histories by sample index, the (loser, parent) pairs). Unless
        this was the last step the pairs wait for the engine's `reparent`."""
        new_histories, pairs = self._select(request, logits, histories)
        if len(new_histories[0]) < request.total_tokens:
            self._pending[request.request_id] = pairs
        return new_histories, pairs

    def _select(self, request: Request, logits: torch.Tensor,
                histories: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, int]]]:
        """The beam step of the module docstring over beams 0..B-1 (logits [B, V])."""
        state = self._beams[request.request_id]
        width = request.n
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # [B, V]
        totals = logprobs + torch.tensor(state.sum_logprobs)[:, None]  # [B, V]
        vocab_size = totals.shape[1]
        best, flat = torch.topk(totals.flatten(), min(2 * width, totals.numel()))
        num_outputs = len(histories[0]) - request.prompt_tokens + 1
        chosen: list[tuple[int, int, float]] = []  # (parent, token, sum_logprob), best first
        for rank, (total, index) in enumerate(zip(best.tolist(), flat.tolist())):
            parent, token = divmod(index, vocab_size)
            if token == self.eos_token_id:
                if rank < width:
                    outputs = histories[parent][request.prompt_tokens:] + [token]
                    state.finished.append(Hypothesis(outputs, total,
                                                     self.score(total, num_outputs)))
                continue
            chosen.append((parent, token, total))
            if len(chosen) == width:
                break
        slots, pairs = assign_slots([parent for parent, _, _ in chosen], width)
        new_histories: list[list[int]] = [[] for _ in range(width)]
        state.sum_logprobs = [0.0] * width
        for slot, (parent, token, total) in zip(slots, chosen):
            new_histories[slot] = histories[parent] + [token]
            state.sum_logprobs[slot] = total
        return new_histories, pairs

    def advance_alone(self, seq: Sequence, logits: torch.Tensor) -> int:
        """A beam out of lockstep: its own best non-EOS token, from logits [V]."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        if self.eos_token_id is not None:
            logprobs[self.eos_token_id] = float("-inf")
        token = int(logprobs.argmax())
        self._beams[seq.request.request_id].sum_logprobs[seq.sample_index] += float(logprobs[token])
        return token

    def reparent(self, beams: list[Sequence]) -> list[tuple[Sequence, Sequence]]:
        """The engine's question after a step, beams by sample index: the losers of that
        step's selection, each with the parent it becomes a copy of."""
        pairs = self._pending.pop(beams[0].request.request_id, [])
        return [(beams[loser], beams[parent]) for loser, parent in pairs]

    def forget(self, request_id: int) -> None:
        """A beam finished, so the engine asks no more: a selection still waiting is moot
        (the scores stay for `ranked`)."""
        self._pending.pop(request_id, None)

    def ranked(self, request: Request, outputs: list[list[int]]) -> list[Hypothesis]:
        """The W best hypotheses, best first: the finished ones and the beams' current
        `outputs` (by sample index). Empty for a request that never started."""
        state = self._beams.get(request.request_id)
        if state is None:
            return []
        running = [Hypothesis(tokens, total, self.score(total, len(tokens)))
                   for tokens, total in zip(outputs, state.sum_logprobs) if tokens]
        # sorted() is stable: at equal scores finished hypotheses (found earlier) come first.
        hypotheses = sorted(state.finished + running, key=lambda h: -h.score)
        return hypotheses[:request.n]


def assign_slots(parents: list[int], width: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Sequences for the chosen continuations, whose parents are `parents` (best first).

    Returns each continuation's sample index, and the (loser, parent) pairs: a parent's first
    continuation stays in the parent's own sequence; the others take, in order, the sequences
    of beams no continuation came from, which become copies of their parents.

    >>> assign_slots([2, 2, 0, 2], 4)
    ([2, 1, 0, 3], [(1, 2), (3, 2)])
    """
    slots: list[int | None] = []
    kept: set[int] = set()
    for parent in parents:
        slots.append(None if parent in kept else parent)
        kept.add(parent)
    free = iter(index for index in range(width) if index not in kept)
    placed = [slot if slot is not None else next(free) for slot in slots]
    pairs = [(slot, parent) for slot, parent in zip(placed, parents) if slot != parent]
    return placed, pairs
