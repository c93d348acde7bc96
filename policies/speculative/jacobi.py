"""Lookahead decoding's token logic, shared by every executor that runs it on real tokens:
the Jacobi window, the n-gram pool, one pass's layout and attention mask, and acceptance.

Pass of one request (x: the last committed token, at position p; W = 3, N = 4, G = 2):

    index   0 | 1  2  3 | 4  5  6 | 7  8  9 | 10 11 12 | 13 14 15
    token   x | level 0 | level 1 | level 2 | cand 0   | cand 1
    offset  0 | 1  2  3 | 2  3  4 | 3  4  5 | 1  2  3  | 1  2  3      (position - p)

Mask (every token also sees the whole committed context and itself):
- lookahead (level l, column j) sees x, level 0 columns 0..j, and levels 1..l of column j:
  one consecutive guessed sequence x, g(p+1) .. g(p+1+j+l), so its output is the Jacobi
  update of position p+2+j+l.
- candidate g's token m sees x and candidate g's tokens 0..m (a chain, as a draft verify).

After the pass (greedy outputs at every index):
- acceptance: the candidate whose leading tokens match the target's own predictions for the
  longest run is accepted, plus the target's token after it (at least the token after x);
- pool: each column j yields the n-gram (level 0..N-2 at j, output of level N-2 at j), keyed by
  its first token, its N - 1 followers the candidate;
- window: level 0 drops, the others move down one, and the outputs of level N-2 become the
  new top level (one Jacobi iteration).
Outputs never depend on the window or pool (every accepted token is the target's own greedy
token), only how many tokens a step commits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence as Tokens
from dataclasses import dataclass


class NgramPool:
    """Candidate continuations keyed by an n-gram's first token; per key the `capacity` most
    recently seen distinct continuations (a repeat moves to the front)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_key: dict[int, OrderedDict[tuple[int, ...], None]] = {}

    def add(self, ngram: Tokens[int]) -> None:
        key, followers = ngram[0], tuple(ngram[1:])
        entries = self._by_key.setdefault(key, OrderedDict())
        entries[followers] = None
        entries.move_to_end(followers)
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def candidates(self, key: int) -> list[tuple[int, ...]]:
        """Most recent first."""
        return list(reversed(self._by_key.get(key, ())))


@dataclass(slots=True)
class LookaheadPass:
    """One request's part of the pass: tokens, offsets from x's position, and per index the
    pass indices it attends to (in position order, itself last; the context is implied)."""

    tokens: list[int]
    offsets: list[int]
    attends: list[list[int]]
    num_levels: int
    window: int
    candidates: list[tuple[int, ...]]

    @property
    def verify_start(self) -> int:
        return 1 + self.window * self.num_levels

    def accepted_indices(self, committed: Tokens[int]) -> list[int]:
        """The pass indices of the drafts `commit` accepted (the tokens after x in
        `committed`, all but its last): a candidate's leading tokens that equal them. Their
        K/V were computed at the drafts' own positions under a causal chain over the context
        and x, so they are the K/V of the accepted tokens wherever they sit in the pass."""
        num_accepted = len(committed) - 1
        if num_accepted == 0:
            return []
        for g, candidate in enumerate(self.candidates):
            if list(candidate[:num_accepted]) == list(committed[:num_accepted]):
                start = self.verify_start + g * self.num_levels
                return list(range(start, start + num_accepted))
        raise ValueError(f"no candidate of this pass starts with {list(committed[:-1])}")


class LookaheadState:
    """One request's Jacobi window and n-gram pool across its steps."""

    def __init__(self, context: Tokens[int], window: int, ngram: int, guesses: int) -> None:
        if not context:
            raise ValueError("lookahead needs a non-empty context to seed its window")
        self.window = window
        self.ngram = ngram
        self.guesses = guesses
        self.pool = NgramPool(guesses)
        # Initial guesses come from the context (a deterministic start; any guess is lossless).
        seed = list(context[-window * (ngram - 1):])
        self.levels = [[seed[(level * window + column) % len(seed)] for column in range(window)]
                       for level in range(ngram - 1)]

    def layout(self, last_token: int, num_levels: int) -> LookaheadPass:
        """The pass for `num_levels` (N - 1, or fewer when the planner narrowed the step):
        the window's first `num_levels` levels and candidates cut to that length; a full pool
        candidate list is padded with x so the chunk always holds 1 + (W + G) num_levels."""
        w = self.window
        tokens, offsets, attends = [last_token], [0], [[0]]
        for level in range(num_levels):
            for column in range(w):
                tokens.append(self.levels[level][column])
                offsets.append(1 + column + level)
                seen = [0] + [1 + c for c in range(column + 1)]
                seen += [1 + l * w + column for l in range(1, level + 1)]
                attends.append(seen)
        candidates = [c[:num_levels] for c in self.pool.candidates(last_token)[:self.guesses]]
        padded = candidates + [(last_token,) * num_levels] * (self.guesses - len(candidates))
        for candidate in padded:
            start = len(tokens)
            for m, token in enumerate(candidate):
                tokens.append(token)
                offsets.append(1 + m)
                attends.append([0] + list(range(start, start + m + 1)))
        return LookaheadPass(tokens, offsets, attends, num_levels, w, candidates)

    def commit(self, step: LookaheadPass, outputs: Tokens[int]) -> list[int]:
        """The tokens this step commits (1 + accepted drafts), given the target's greedy
        output at every index of `step`; feeds the pool and advances the window when the
        pass carried every level."""
        if len(outputs) != len(step.tokens):
            raise ValueError(f"lookahead pass of {len(step.tokens)} tokens got "
                             f"{len(outputs)} outputs")
        best = [outputs[0]]
        for g, candidate in enumerate(step.candidates):
            start = step.verify_start + g * step.num_levels
            committed = [outputs[0]]
            for m, token in enumerate(candidate):
                if token != committed[-1]:
                    break
                committed.append(outputs[start + m])
            if len(committed) > len(best):
                best = committed
        if step.num_levels == self.ngram - 1:
            self._advance(step, outputs)
        return best

    def _advance(self, step: LookaheadPass, outputs: Tokens[int]) -> None:
        w, top = self.window, self.ngram - 2
        new_level = [outputs[1 + top * w + column] for column in range(w)]
        for column in range(w):
            self.pool.add([level[column] for level in self.levels] + [new_level[column]])
        self.levels = self.levels[1:] + [new_level]
