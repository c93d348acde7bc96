"""Acceptance models: how many of k drafts the target accepts, as data.

Every model is a prefix process: draft i is only looked at if drafts 1..i-1 were accepted, and
it is accepted with the *conditional* rate r_i. A verify of k drafts emits a + 1 tokens (the
a accepted drafts plus the corrected or bonus token), so the expected tokens per step are

    E[tokens | k] = 1 + sum_{i=1..k} prod_{j=1..i} r_j

Models (the `--spec-acceptance` value):

    "0.8"             i.i.d.: r_i = alpha for every i, so E = (1 - alpha^(k+1)) / (1 - alpha)
    "0.54,0.36,0.26"  per-position conditional rates, as engines log them; positions past the
                      list keep the last rate. E = 1 + .54 + .54*.36 + .54*.36*.26 = 1.78 for
                      k = 3, NOT the i.i.d. alpha of their mean 0.387 (E = 1.59): engines log
                      rates conditional on reaching the position, which fall with depth
    "beta:0.7:10"     per-request alpha ~ Beta(mean 0.7, concentration 10), then i.i.d. within
                      the request: E = sum_{i=0..k} E[alpha^i] (Beta moments), above the
                      i.i.d. value at the mean (Jensen: alpha^i is convex, so easy requests
                      gain more long runs than hard ones lose)
    PATH              a recorded acceptance trace: one accepted-draft count per verify step per
                      line (`#` comments allowed). Each request replays it from its own random
                      offset (cyclically), capped at k: E = 1 + mean(min(a, k))

A tree of width w verifies w candidates per depth; with independent candidates the conditional
rate at depth i becomes 1 - (1 - r_i)^w (a recorded trace is taken as already measured on the
tree, so width does not change it).

Draws are deterministic: request r uses its own stream seeded by SeedSequence([seed, r]) (its
parallel sample i > 0 by SeedSequence([seed, r, i])), so a request's acceptance does not
depend on what else is in its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from sim.speculation.seeding import request_generator

DEFAULT_ACCEPTANCE = "0.7"


_UNIFORM_BLOCK = 256


class RequestStream:
    """One request's random state: its generator plus what the model drew for it once.

    Uniforms are drawn from the generator in blocks (one numpy call per 256 judged drafts,
    not one per draft), which keeps draws cheap and still a pure function of the seed."""

    __slots__ = ("rng", "alpha", "offset", "_uniforms", "_next")

    def __init__(self, rng: np.random.Generator, alpha: float | None, offset: int) -> None:
        self.rng = rng
        self.alpha = alpha
        self.offset = offset
        self._uniforms: list[float] = []
        self._next = 0

    def accepted_prefix(self, rates: tuple[float, ...]) -> int:
        """Judge drafts in order, draft i accepted when the next uniform is below `rates[i]`,
        until one is rejected; uniforms are consumed only for judged drafts. The block is
        topped up with the generator's next block before a verify it cannot hold whole: the
        uniforms come in the generator's order either way."""
        return RequestStream.accepted_prefixes([self], (rates,))[0]

    @staticmethod
    def accepted_prefixes(streams: list[RequestStream],
                          rates_each: Iterable[tuple[float, ...]]) -> list[int]:
        """`accepted_prefix(rates)` of each stream on its own rates, in turn, in one loop: a
        step's verifies in one call, also when their k differ (one step in ten over the
        Azure conv trace, near requests' ends); a call per verify would cost about 0.2 s
        there."""
        accepted = []
        for stream, rates in zip(streams, rates_each):
            num_rates = len(rates)
            uniforms, first = stream._uniforms, stream._next
            while first + num_rates > len(uniforms):
                uniforms = stream._uniforms = (uniforms[first:]
                                               + stream.rng.random(_UNIFORM_BLOCK).tolist())
                first = 0
            judged = first
            for rate in rates:
                if uniforms[judged] >= rate:
                    stream._next = judged + 1
                    accepted.append(judged - first)
                    break
                judged += 1
            else:
                stream._next = judged
                accepted.append(num_rates)
        return accepted


class AcceptanceModel(Protocol):
    def stream(self, seed: int, request_id: int, sample_index: int = 0) -> RequestStream: ...

    def draw(self, stream: RequestStream, k: int, width: int) -> int:
        """Accepted drafts (0..k) for one verify of k drafts at tree width `width`."""

    def draw_each(self, streams: list[RequestStream], ks: list[int], width: int) -> list[int]:
        """`draw` of each stream with its k (a step's verifies), in order."""

    def expected_tokens_per_step(self, k: int, width: int = 1) -> float: ...


def _rng(seed: int, request_id: int, sample_index: int) -> np.random.Generator:
    """Request `request_id`'s stream; a parallel sample (n > 1) other than the first gets
    its own, keyed by its index too."""
    if sample_index:
        return np.random.default_rng(np.random.SeedSequence([seed, request_id, sample_index]))
    return request_generator(seed, request_id)


def widen(rate: float, width: int) -> float:
    """Conditional rate at one depth when `width` independent candidates are verified."""
    return 1.0 - (1.0 - rate) ** width


@lru_cache(maxsize=1024)
def _position_rates(rates: tuple[float, ...], k: int, width: int) -> tuple[float, ...]:
    return tuple(widen(rates[min(i, len(rates) - 1)], width) for i in range(k))


@dataclass(frozen=True, slots=True)
class PositionalAcceptance:
    """Conditional rate per draft position; one rate is the i.i.d. model."""

    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.rates or any(not 0.0 <= r <= 1.0 for r in self.rates):
            raise ValueError(f"acceptance rates must lie in [0, 1], got {list(self.rates)}")

    def stream(self, seed: int, request_id: int, sample_index: int = 0) -> RequestStream:
        return RequestStream(_rng(seed, request_id, sample_index), None, 0)

    def draw(self, stream: RequestStream, k: int, width: int) -> int:
        return stream.accepted_prefix(_position_rates(self.rates, k, width))

    def draw_each(self, streams: list[RequestStream], ks: list[int], width: int) -> list[int]:
        """Every stream judges on the rates of its k (looked up once a step when all verify
        the same k)."""
        k = ks[0]
        if ks.count(k) == len(ks):
            rates_each: Iterable[tuple[float, ...]] = repeat(_position_rates(self.rates, k, width))
        else:
            rates_each = [_position_rates(self.rates, k, width) for k in ks]
        return RequestStream.accepted_prefixes(streams, rates_each)

    def expected_tokens_per_step(self, k: int, width: int = 1) -> float:
        return 1.0 + float(np.cumprod(_position_rates(self.rates, k, width)).sum())


@dataclass(frozen=True, slots=True)
class BetaAcceptance:
    """Per-request alpha ~ Beta(mean * c, (1 - mean) * c), i.i.d. within the request."""

    mean: float
    concentration: float

    def __post_init__(self) -> None:
        if not 0.0 < self.mean < 1.0 or self.concentration <= 0.0:
            raise ValueError(
                f"beta acceptance needs 0 < mean < 1 and concentration > 0, got "
                f"{self.mean}, {self.concentration}"
            )

    def stream(self, seed: int, request_id: int, sample_index: int = 0) -> RequestStream:
        rng = _rng(seed, request_id, sample_index)
        c = self.concentration
        return RequestStream(rng, float(rng.beta(self.mean * c, (1.0 - self.mean) * c)), 0)

    def draw(self, stream: RequestStream, k: int, width: int) -> int:
        return stream.accepted_prefix(_position_rates((stream.alpha,), k, width))

    def draw_each(self, streams: list[RequestStream], ks: list[int], width: int) -> list[int]:
        return RequestStream.accepted_prefixes(
            streams, [_position_rates((stream.alpha,), k, width) for stream, k in zip(streams, ks)])

    def expected_tokens_per_step(self, k: int, width: int = 1) -> float:
        a = self.mean * self.concentration
        if width != 1:
            from scipy.stats import beta

            dist = beta(a, (1.0 - self.mean) * self.concentration)
            return float(dist.expect(lambda x: sum(widen(x, width) ** i for i in range(k + 1))))
        b = (1.0 - self.mean) * self.concentration
        total, moment = 1.0, 1.0
        for i in range(k):
            moment *= (a + i) / (a + b + i)  # E[alpha^(i+1)]
            total += moment
        return total


@dataclass(frozen=True, slots=True)
class TraceAcceptance:
    """Recorded accepted-draft counts, replayed per request from a random offset."""

    accepted: tuple[int, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.accepted:
            raise ValueError(f"acceptance trace {self.source} holds no counts")

    def stream(self, seed: int, request_id: int, sample_index: int = 0) -> RequestStream:
        rng = _rng(seed, request_id, sample_index)
        return RequestStream(rng, None, int(rng.integers(len(self.accepted))))

    def draw(self, stream: RequestStream, k: int, width: int) -> int:
        value = self.accepted[stream.offset % len(self.accepted)]
        stream.offset += 1
        return min(value, k)

    def draw_each(self, streams: list[RequestStream], ks: list[int], width: int) -> list[int]:
        return [self.draw(stream, k, width) for stream, k in zip(streams, ks)]

    def expected_tokens_per_step(self, k: int, width: int = 1) -> float:
        return 1.0 + sum(min(a, k) for a in self.accepted) / len(self.accepted)


def iid_expected_tokens(alpha: float, k: int) -> float:
    """(1 - alpha^(k+1)) / (1 - alpha), the i.i.d. closed form (k + 1 when alpha = 1)."""
    if alpha == 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def parse_acceptance(spec: str) -> AcceptanceModel:
    """A `--spec-acceptance` value (see the module docstring); ValueError when malformed."""
    text = str(spec).strip()
    if text.startswith("beta:"):
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"beta acceptance is beta:MEAN:CONCENTRATION, got {text!r}")
        return BetaAcceptance(_number(parts[1], text), _number(parts[2], text))
    if text and (text[0].isdigit() or text[0] == "."):
        return PositionalAcceptance(tuple(_number(p, text) for p in text.split(",")))
    return load_acceptance_trace(text)


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bad number {text!r} in --spec-acceptance {spec!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"bad number {text!r} in --spec-acceptance {spec!r}")
    return value


def load_acceptance_trace(path: str) -> TraceAcceptance:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(
            f"--spec-acceptance {path!r} is neither a rate, a rate list, beta:MEAN:CONC, nor a "
            f"readable acceptance trace ({exc.strerror})"
        ) from None
    counts = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit():
            raise ValueError(
                f"{path} line {number}: expected a non-negative accepted-draft count, got {text!r}"
            )
        counts.append(int(text))
    return TraceAcceptance(tuple(counts), path)
