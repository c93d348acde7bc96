"""What an engine records as it runs: one row per iteration, and speculation's counters.

Both are written by `policies.engine.Engine` (and its decode fast-forward, which appends the
rows of a whole run at once) and read by `sim.metrics`.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from policies.kv.base import KVUsage, LockstepUsage
from policies.types import Plan, ScheduledChunk


@dataclass(slots=True)
class IterationLog:
    """One row per executed iteration, in compact columns (no per-iteration objects; counts
    as 4-byte ints, which overflow loudly, so a million-request trace's log stays small)."""

    start_s: array = field(default_factory=lambda: array("d"))
    duration_s: array = field(default_factory=lambda: array("d"))
    batch_size: array = field(default_factory=lambda: array("i"))
    new_tokens: array = field(default_factory=lambda: array("i"))
    prefill_tokens: array = field(default_factory=lambda: array("i"))
    num_waiting: array = field(default_factory=lambda: array("i"))
    kv_reserved_slots: array = field(default_factory=lambda: array("i"))
    kv_filled_slots: array = field(default_factory=lambda: array("i"))
    kv_cached_free_slots: array = field(default_factory=lambda: array("i"))

    def __len__(self) -> int:
        return len(self.start_s)

    def record(self, plan: Plan, start_s: float, duration_s: float, num_waiting: int,
               usage: KVUsage, num_decodes_apart: int = 0) -> None:
        """The row of one executed `plan` (plus `num_decodes_apart` one-token decodes planned
        apart from it); its prefill tokens as `_prefill_tokens` counts."""
        self.record_row(start_s, duration_s,
                        num_decodes_apart + len(plan.chunks) + len(plan.padding),
                        num_decodes_apart + plan.num_new_tokens, _num_prefill_tokens(plan.chunks),
                        num_waiting, usage)

    def record_row(self, start_s: float, duration_s: float, batch_size: int, new_tokens: int,
                   prefill_tokens: int, num_waiting: int, usage: KVUsage) -> None:
        """One executed iteration's row, from its counts (a plan's: `record`)."""
        self.start_s.append(start_s)
        self.duration_s.append(duration_s)
        self.batch_size.append(batch_size)
        self.new_tokens.append(new_tokens)
        self.prefill_tokens.append(prefill_tokens)
        self.num_waiting.append(num_waiting)
        self.kv_reserved_slots.append(usage.reserved_slots)
        self.kv_filled_slots.append(usage.filled_slots)
        self.kv_cached_free_slots.append(usage.cached_free_slots)

    def record_decode_run(self, batch_size: int, first_start_s: float, ends_s: array,
                          durations_s: list[float], num_waiting: int,
                          usage: LockstepUsage) -> None:
        """The rows `record` would write for each iteration of a run in which a batch of
        `batch_size` sequences decodes one token each, back to back from `first_start_s`."""
        num_steps = len(ends_s)
        self.start_s.append(first_start_s)
        self.start_s.extend(ends_s[:-1])
        self.duration_s.extend(durations_s)
        sizes = array("i", [batch_size]) * num_steps
        self.batch_size.extend(sizes)
        self.new_tokens.extend(sizes)
        self.prefill_tokens.extend(array("i", [0]) * num_steps)
        self.num_waiting.extend(array("i", [num_waiting]) * num_steps)
        self.kv_reserved_slots.extend(usage.reserved_slots)
        self.kv_filled_slots.extend(usage.filled_slots)
        self.kv_cached_free_slots.extend(usage.cached_free_slots)

    def record_verify_run(self, batch_size: int, starts_s: list[float],
                          durations_s: list[float], new_tokens: list[int], num_waiting: int,
                          usages: list[KVUsage]) -> None:
        """The rows `record` would write for each step of a run in which a batch of
        `batch_size` sequences decodes and verifies (no prefill tokens), step i starting at
        `starts_s[i]` with `new_tokens[i]` tokens, the pool at `usages[i]`."""
        num_steps = len(starts_s)
        self.start_s.extend(starts_s)
        self.duration_s.extend(durations_s)
        self.batch_size.extend(array("i", [batch_size]) * num_steps)
        self.new_tokens.extend(new_tokens)
        self.prefill_tokens.extend(array("i", [0]) * num_steps)
        self.num_waiting.extend(array("i", [num_waiting]) * num_steps)
        _, reserved_slots, filled_slots, cached_free_slots = zip(*usages)
        self.kv_reserved_slots.extend(reserved_slots)
        self.kv_filled_slots.extend(filled_slots)
        self.kv_cached_free_slots.extend(cached_free_slots)


@dataclass(slots=True)
class SpeculationLog:
    """Counters over every verify of every sequence; all zero when nothing speculates.

    `emitted_histogram[n]` counts verifies that emitted n tokens (accepted drafts + 1), and
    `reached_histogram[n]` those that looked at n drafts (each up to the first rejected one).
    `reached_by_position[i]` counts verifies whose draft at position i + 1 was looked at (it
    was proposed and every draft before it was accepted), `accepted_by_position[i]` those that
    accepted it: their ratio is the conditional acceptance rate engines log per position.
    (Both follow from the histograms, so a verify costs two counts, not one per position.)
    """

    num_verifies: int = 0
    num_proposed: int = 0
    emitted_histogram: list[int] = field(default_factory=list)
    reached_histogram: list[int] = field(default_factory=list)
    draft_s: float = 0.0
    """Drafting time over every step (a draft model also ingests prefills in plain steps)."""
    verify_s: float = 0.0
    """Target time of the steps that verified drafts (their duration less their drafting)."""

    def record(self, num_spec_tokens: int, num_accepted: int) -> None:
        self.record_each((num_spec_tokens,), (num_accepted,))

    def record_each(self, spec_tokens: Sequence[int], accepted: Sequence[int]) -> None:
        """One verify of `spec_tokens[i]` drafts, `accepted[i]` of them accepted, for each i
        (a step's; a plain decode, k = 0, is none)."""
        emitted, reached = self.emitted_histogram, self.reached_histogram
        num_verifies = num_proposed = 0
        for num_spec_tokens, num_accepted in zip(spec_tokens, accepted):
            if not num_spec_tokens:
                continue
            num_verifies += 1
            num_proposed += num_spec_tokens
            num_emitted = num_accepted + 1
            num_reached = num_emitted if num_emitted < num_spec_tokens else num_spec_tokens
            if num_emitted < len(emitted) and num_reached < len(reached):  # no list grows
                emitted[num_emitted] += 1
                reached[num_reached] += 1
                continue
            _bump(emitted, num_emitted)
            _bump(reached, num_reached)
        self.num_verifies += num_verifies
        self.num_proposed += num_proposed

    def record_steps(self, spec_tokens_each: list[list[int]],
                     accepted_each: list[list[int]]) -> None:
        """`record_each(spec_tokens_each[j], accepted_each[j])` of each step j (a run's).
        The steps whose verifies all have the same k are counted together, by value."""
        uniform: dict[int, list[int]] = {}  # k -> accepted drafts of those steps' verifies
        last_spec_tokens, counted = None, None
        for spec_tokens, accepted in zip(spec_tokens_each, accepted_each):
            if spec_tokens is not last_spec_tokens:  # steps in a row often share their ks
                last_spec_tokens = spec_tokens
                k = spec_tokens[0]
                uniform_step = k and spec_tokens.count(k) == len(spec_tokens)
                counted = uniform.setdefault(k, []) if uniform_step else None
            if counted is None:
                self.record_each(spec_tokens, accepted)
            else:
                counted += accepted
        emitted, reached = self.emitted_histogram, self.reached_histogram
        for k, accepted in uniform.items():  # each count is 0..k (the commit checked)
            self.num_verifies += len(accepted)
            self.num_proposed += k * len(accepted)
            for num_accepted in range(k + 1):
                count = accepted.count(num_accepted)
                if count:
                    _bump(emitted, num_accepted + 1, count)
                    _bump(reached, min(num_accepted + 1, k), count)

    @property
    def reached_by_position(self) -> list[int]:
        return _more_than_each(self.reached_histogram)

    @property
    def accepted_by_position(self) -> list[int]:
        return _more_than_each(self.emitted_histogram[1:])


def _more_than_each(histogram: list[int]) -> list[int]:
    """From counts by value n (`histogram[n]`), the count of values above i, for i from 0 to
    the largest value less 1."""
    above, total = [], 0
    for count in reversed(histogram[1:]):
        total += count
        above.append(total)
    return above[::-1]


def _bump(counts: list[int], index: int, by: int = 1) -> None:
    if index >= len(counts):
        counts.extend([0] * (index + 1 - len(counts)))
    counts[index] += by


def _num_prefill_tokens(chunks: list[ScheduledChunk]) -> int:
    """The `_prefill_tokens` of `chunks` in all. A chunk of one token at or past its prompt
    (a decode, the bulk of a large batch) has none in any case, so only the others are asked."""
    return sum([_prefill_tokens(c) for c in chunks
                if c.num_new_tokens > 1 or c.num_context_tokens < c.seq.request.prompt_tokens])


def _prefill_tokens(chunk: ScheduledChunk) -> int:
    """A chunk's tokens that are prefill: all of them when it computes prompt tokens or
    several tokens at once without verifying drafts (a recompute); of a block-diffusion
    denoising step only the prompt tokens it carries (the block's positions are decoding)."""
    if chunk.num_spec_tokens:
        return 0
    start, end = chunk.num_context_tokens, chunk.num_context_tokens + chunk.num_new_tokens
    prompt_tokens = chunk.seq.request.prompt_tokens
    if chunk.num_block_tokens:
        return max(0, min(end, prompt_tokens) - start)
    return chunk.num_new_tokens if chunk.num_new_tokens > 1 or start < prompt_tokens else 0
