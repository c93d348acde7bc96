"""Beam search's memory dynamics: each step some beams are replaced by copies of others.

Beam search keeps `width` candidates; after each step the best continuations survive, so a
beam that falls behind is dropped and a leading beam forks into its place. In memory that is
`free(loser)` then `fork(donor, loser)`: the loser now shares the donor's blocks, and the next
write copies the partial tail (copy-on-write), which is where PagedAttention saves memory on
beam search. Which beams lose depends on logits; the simulator draws it: each beam but the
first is replaced with probability `beam_churn`, by a uniformly chosen other beam, from a
stream of its own per request. The real backend decides from its scores instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from policies.kv.base import ForksSequences
from policies.types import Plan, Sequence, SeqStatus, sample_seq_id


class BeamReparenter(Protocol):
    def reparent(self, beams: list[Sequence]) -> list[tuple[Sequence, Sequence]]:
        """(loser, donor) pairs: each loser becomes a copy of its donor this step."""

    def forget(self, request_id: int) -> None:
        """A beam of the request finished: it is never reparented again."""


@dataclass(frozen=True, slots=True)
class BeamParams:
    beam_churn: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beam_churn <= 1.0:
            raise ValueError(f"beam churn must lie in [0, 1], got {self.beam_churn}")


class RandomBeamReparenter:
    def __init__(self, params: BeamParams) -> None:
        self.params = params
        self._streams: dict[int, random.Random] = {}

    def reparent(self, beams: list[Sequence]) -> list[tuple[Sequence, Sequence]]:
        """(loser, donor) pairs for one step of a request's beams (all at the same length)."""
        request_id = beams[0].request.request_id
        rng = self._streams.get(request_id)
        if rng is None:  # seeding one costs microseconds: once a request, not once a step
            rng = self._streams[request_id] = random.Random(self.params.seed * 1_000_003
                                                            + request_id)
        pairs = []
        losers: set[int] = set()
        for beam in beams[1:]:
            if rng.random() < self.params.beam_churn:
                donors = [b for b in beams if b is not beam and b.seq_id not in losers]
                pairs.append((beam, rng.choice(donors)))
                losers.add(beam.seq_id)
        return pairs

    def forget(self, request_id: int) -> None:
        """Drop the request's stream (2.5 KB of generator state each)."""
        self._streams.pop(request_id, None)


def reparent_beams(reparenter: BeamReparenter, plan: Plan, sequences: dict[int, Sequence],
                   allocator: ForksSequences) -> None:
    """After a step, let `reparenter` replace losing beams by copies of others; only beams
    that are in lockstep (running, at the same length) are compared. A loser frees what its
    donor's copy needs (same request, same length), so no fork should be refused; were one
    refused, the loser would run on with no KV, so that stops the run instead."""
    for request_id in {c.seq.request.request_id for c in plan.chunks if c.seq.request.beam}:
        request = sequences[request_id].request
        beams = [sequences.get(sample_seq_id(request, k)) for k in range(request.n)]
        if any(b is not None and b.status is SeqStatus.FINISHED for b in beams):
            reparenter.forget(request_id)  # never all running again
            continue
        if any(b is None or b.status is not SeqStatus.RUNNING for b in beams):
            continue
        if len({b.num_computed_tokens for b in beams}) != 1:
            continue
        for loser, donor in reparenter.reparent(beams):
            if not allocator.refork(loser, donor):
                raise RuntimeError(f"beam {loser.seq_id} of request {request_id} freed its KV "
                                   f"but the allocator refused it a copy of beam {donor.seq_id}")
