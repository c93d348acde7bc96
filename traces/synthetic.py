"""Synthetic workloads: arrival processes, length distributions, and the CLI strings for them.

Seeding: one `SeedSequence(seed)` child per stream (arrivals, prompt lengths, output lengths;
see `traces.seeding`), so changing a length distribution never moves an arrival.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from policies.types import Request
from traces.fields import MAX_TOKENS
from traces.rows import open_trace, parse_rows
from traces.seeding import ARRIVALS_STREAM, OUTPUT_TOKENS_STREAM, PROMPT_TOKENS_STREAM, stream_rng
from traces.trace import Trace

ARRIVALS_SYNTAX = "poisson:RATE_PER_S or gamma:RATE_PER_S:CV (e.g. poisson:2.0, gamma:2.0:4)"
LENGTHS_SYNTAX = "fixed:N, uniform:LO:HI, lognormal:MEDIAN:SIGMA or file:PATH"
SYNTHETIC_SYNTAX = (
    "synthetic:n=N,arrivals=ARRIVALS,prompt=LENGTHS,output=LENGTHS "
    "(e.g. synthetic:n=1000,arrivals=poisson:2.0,prompt=lognormal:1024:0.8,output=fixed:128)"
)


@dataclass(frozen=True, slots=True)
class ArrivalProcess:
    """A renewal process: i.i.d. inter-arrival gaps with mean 1 / `rate_per_s`.

    `poisson` has exponential gaps (CV 1). `gamma` has gamma gaps with coefficient of variation
    `cv` (shape 1 / cv**2): cv > 1 is burstier than Poisson, cv < 1 more regular.
    """

    kind: str
    rate_per_s: float
    cv: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("poisson", "gamma"):
            raise ValueError(f"arrival kind must be poisson or gamma, got {self.kind!r}")
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise ValueError(f"rate_per_s must be positive and finite, got {self.rate_per_s}")
        if not (math.isfinite(self.cv) and self.cv > 0):
            raise ValueError(f"cv must be positive and finite, got {self.cv}")
        if self.kind == "poisson" and self.cv != 1.0:
            raise ValueError(f"a poisson process has cv 1; use gamma for cv {self.cv}")

    @property
    def spec(self) -> str:
        """The CLI string that `parse_arrivals` turns back into this process."""
        if self.kind == "poisson":
            return f"poisson:{self.rate_per_s}"
        return f"gamma:{self.rate_per_s}:{self.cv}"

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` arrival offsets in seconds, ascending, the first at 0.0 (float64, shape (n,))."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        if n == 0:
            return np.zeros(0)
        mean_gap_s = 1.0 / self.rate_per_s
        if self.kind == "poisson":
            gaps_s = rng.exponential(mean_gap_s, n - 1)
        else:
            shape = 1.0 / self.cv**2
            gaps_s = rng.gamma(shape, mean_gap_s / shape, n - 1)
        return np.concatenate(([0.0], np.cumsum(gaps_s)))


_NUM_LENGTH_PARAMS = {"fixed": 1, "uniform": 2, "lognormal": 2, "empirical": 0}


@dataclass(frozen=True, slots=True)
class LengthDistribution:
    """A token-length distribution; the classmethods build each kind.

    `params`: fixed (N,), uniform (LO, HI) inclusive, lognormal (MEDIAN, SIGMA). `empirical`
    resamples rows of `pairs_tokens` ((prompt, output) pairs of valid lengths) and reads
    `column` (0 prompt, 1 output); a prompt and an output distribution over the same pairs are
    sampled with the same row indices by `synthetic_trace`, so each request keeps a real pair.
    """

    kind: str
    params: tuple[float, ...] = ()
    pairs_tokens: tuple[tuple[int, int], ...] = ()
    column: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _NUM_LENGTH_PARAMS:
            raise ValueError(f"length kind must be one of {', '.join(_NUM_LENGTH_PARAMS)}")
        if len(self.params) != _NUM_LENGTH_PARAMS[self.kind]:
            raise ValueError(f"{self.kind} takes {_NUM_LENGTH_PARAMS[self.kind]} parameters")
        if self.kind == "fixed":
            _check_tokens("fixed length", self.params[0])
        elif self.kind == "uniform":
            low, high = self.params
            _check_tokens("uniform low", low)
            _check_tokens("uniform high", high)
            if low > high:
                raise ValueError(f"uniform needs LO <= HI, got {low} > {high}")
        elif self.kind == "lognormal":
            median, sigma = self.params
            if not (math.isfinite(median) and 1 <= median <= MAX_TOKENS):
                raise ValueError(f"lognormal median must be in [1, 1e9] tokens, got {median}")
            if not (math.isfinite(sigma) and 0 <= sigma <= 10):
                raise ValueError(f"lognormal sigma must be in [0, 10], got {sigma}")
        elif not self.pairs_tokens or self.column not in (0, 1):
            raise ValueError("empirical needs (prompt, output) pairs and a column of 0 or 1")

    @classmethod
    def fixed(cls, tokens: int) -> LengthDistribution:
        return cls("fixed", (tokens,))

    @classmethod
    def uniform(cls, low_tokens: int, high_tokens: int) -> LengthDistribution:
        return cls("uniform", (low_tokens, high_tokens))

    @classmethod
    def lognormal(cls, median_tokens: float, sigma: float) -> LengthDistribution:
        return cls("lognormal", (median_tokens, sigma))

    @classmethod
    def empirical_pair(
        cls, pairs_tokens: tuple[tuple[int, int], ...]
    ) -> tuple[LengthDistribution, LengthDistribution]:
        """(prompt, output) distributions resampling the given pairs jointly."""
        prompt = cls("empirical", pairs_tokens=pairs_tokens, column=0)
        return prompt, cls("empirical", pairs_tokens=pairs_tokens, column=1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` token counts, each in [1, 10**9] (int64, shape (n,))."""
        if self.kind == "fixed":
            return np.full(n, int(self.params[0]), dtype=np.int64)
        if self.kind == "uniform":
            low, high = self.params
            return rng.integers(int(low), int(high), size=n, endpoint=True, dtype=np.int64)
        if self.kind == "lognormal":
            median, sigma = self.params
            tokens = np.rint(median * np.exp(sigma * rng.standard_normal(n)))
            return np.clip(tokens, 1, MAX_TOKENS).astype(np.int64)
        if self.kind == "empirical":
            indices = rng.integers(0, len(self.pairs_tokens), size=n)
            return np.asarray(self.pairs_tokens, dtype=np.int64)[indices, self.column]
        raise AssertionError(f"unreachable: kind {self.kind!r} passed __post_init__")

    @property
    def spec(self) -> str:
        if self.kind == "empirical":
            return f"empirical over {len(self.pairs_tokens)} pairs"
        return ":".join([self.kind, *(str(param) for param in self.params)])


def _check_tokens(what: str, tokens: float) -> None:
    # Range first: float() of a huge int would overflow.
    if not (1 <= tokens <= MAX_TOKENS and float(tokens).is_integer()):
        raise ValueError(f"{what} must be a whole number in [1, 10**9] tokens, got {tokens}")


def synthetic_trace(
    n: int,
    arrivals: ArrivalProcess,
    prompt: LengthDistribution,
    output: LengthDistribution,
    seed: int,
    name: str = "synthetic",
) -> Trace:
    """`n` requests with arrival times from `arrivals` and lengths from `prompt` and `output`."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    arrival_times_s = arrivals.sample(n, stream_rng(seed, ARRIVALS_STREAM))
    prompt_tokens = prompt.sample(n, stream_rng(seed, PROMPT_TOKENS_STREAM))
    # Joint empirical pairs: the output column reuses the prompt stream's row indices.
    is_joint = (
        prompt.kind == output.kind == "empirical" and prompt.pairs_tokens == output.pairs_tokens
    )
    output_stream = PROMPT_TOKENS_STREAM if is_joint else OUTPUT_TOKENS_STREAM
    output_tokens = output.sample(n, stream_rng(seed, output_stream))
    requests = [
        Request(request_id, float(time_s), int(prompt_len), int(output_len))
        for request_id, (time_s, prompt_len, output_len) in enumerate(
            zip(arrival_times_s, prompt_tokens, output_tokens)
        )
    ]
    note = (
        f"synthetic: {n} requests, arrivals {arrivals.spec}, prompt {prompt.spec}, "
        f"output {output.spec}{' (jointly resampled)' if is_joint else ''}, seed {seed}"
    )
    return Trace(name, requests, [], [note])


def parse_arrivals(text: str) -> ArrivalProcess:
    """`poisson:RATE` or `gamma:RATE:CV` (rates in requests per second)."""
    parts = text.strip().split(":")
    try:
        if parts[0] == "poisson" and len(parts) == 2:
            return ArrivalProcess("poisson", float(parts[1]))
        if parts[0] == "gamma" and len(parts) == 3:
            return ArrivalProcess("gamma", float(parts[1]), float(parts[2]))
    except ValueError as error:
        raise ValueError(
            f"bad arrival process {text!r}: {error}; expected {ARRIVALS_SYNTAX}"
        ) from None
    raise ValueError(f"bad arrival process {text!r}; expected {ARRIVALS_SYNTAX}")


def parse_lengths(text: str, column: int) -> LengthDistribution:
    """A length spec; `column` (0 prompt, 1 output) picks the side of `file:PATH` pairs."""
    kind, _, rest = text.strip().partition(":")
    parts = rest.split(":")
    try:
        if kind == "fixed" and len(parts) == 1:
            return LengthDistribution.fixed(_parse_int(parts[0]))
        if kind == "uniform" and len(parts) == 2:
            return LengthDistribution.uniform(_parse_int(parts[0]), _parse_int(parts[1]))
        if kind == "lognormal" and len(parts) == 2:
            return LengthDistribution.lognormal(float(parts[0]), float(parts[1]))
        if kind == "file" and rest:
            return LengthDistribution.empirical_pair(_length_pairs(rest))[column]
    except ValueError as error:
        raise ValueError(
            f"bad length distribution {text!r}: {error}; expected {LENGTHS_SYNTAX}"
        ) from None
    raise ValueError(f"bad length distribution {text!r}; expected {LENGTHS_SYNTAX}")


def _parse_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def parse_synthetic(
    text: str,
) -> tuple[int, ArrivalProcess, LengthDistribution, LengthDistribution]:
    """A CLI trace spec such as `synthetic:n=1000,arrivals=poisson:2.0,prompt=...,output=...`.

    `file:PATH` lengths resample (prompt, output) pairs of the valid rows of the trace at PATH
    (any format; timestamps not needed); naming the same file for both keeps the pairs joint.
    PATH may not contain a comma.
    """
    head, _, body = text.strip().partition(":")
    if head != "synthetic" or not body:
        raise ValueError(f"bad synthetic trace spec {text!r}; expected {SYNTHETIC_SYNTAX}")
    settings: dict[str, str] = {}
    for item in body.split(","):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or key not in ("n", "arrivals", "prompt", "output") or key in settings:
            raise ValueError(
                f"bad item {item!r} in synthetic trace spec (keys n, arrivals, prompt, output, "
                f"each once); expected {SYNTHETIC_SYNTAX}"
            )
        settings[key] = value.strip()
    missing = [key for key in ("n", "arrivals", "prompt", "output") if key not in settings]
    if missing:
        raise ValueError(
            f"synthetic trace spec lacks {', '.join(missing)}; expected {SYNTHETIC_SYNTAX}"
        )
    try:
        n = _parse_int(settings["n"])
    except ValueError:
        raise ValueError(
            f"n={settings['n']!r} is not a whole number; expected {SYNTHETIC_SYNTAX}"
        ) from None
    if n < 1:
        raise ValueError(f"n must be at least 1 in {text!r}")
    arrivals = parse_arrivals(settings["arrivals"])
    prompt = parse_lengths(settings["prompt"], column=0)
    output = parse_lengths(settings["output"], column=1)
    return n, arrivals, prompt, output


def _length_pairs(path: str | os.PathLike[str]) -> tuple[tuple[int, int], ...]:
    """The (prompt, output) token pairs of a trace file's valid rows; timestamps are ignored."""
    valid, _ = parse_rows(open_trace(path), need_times=False)
    if not valid:
        raise ValueError(f"{path}: no valid rows to resample lengths from")
    return tuple((numbered.row.prompt_tokens, numbered.row.output_tokens) for numbered in valid)
