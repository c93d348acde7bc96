"""inference-perf's length distributions: how a `Distribution` block turns into token counts.

The block has `min`, `max`, `mean`, `std_dev` (or `variance`), `type` and `skew`, with
inference-perf's defaults (10, 1024, 512, 200, normal, 0). Draws follow its
`sample_from_distribution`: normal, skew-normal (Azzalini's two-normal construction),
lognormal matched to the mean and standard deviation, uniform over whole numbers
[min, max], Poisson with the mean as its rate, each rounded and clamped to [min, max];
`fixed` is the mean, as inference-perf returns it (unclamped). A plain number N is `fixed` N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DISTRIBUTION_TYPES = ("normal", "skew_normal", "lognormal", "uniform", "poisson", "fixed")


@dataclass(frozen=True, slots=True)
class LengthSpec:
    kind: str
    min_tokens: int = 10
    max_tokens: int = 1024
    mean_tokens: float = 512.0
    std_dev_tokens: float = 200.0
    skew: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTION_TYPES:
            raise ValueError(f"type must be one of {', '.join(DISTRIBUTION_TYPES)}, "
                             f"got {self.kind!r}")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min ({self.min_tokens}) must not exceed max ({self.max_tokens})")
        if not self.std_dev_tokens >= 0:
            raise ValueError(f"std_dev must be >= 0, got {self.std_dev_tokens}")
        if self.kind == "lognormal" and not self.mean_tokens > 0:
            raise ValueError(f"a lognormal needs mean > 0, got {self.mean_tokens}")

    @classmethod
    def fixed(cls, tokens: int) -> LengthSpec:
        return cls("fixed", tokens, tokens, float(tokens), 0.0)

    @property
    def smallest_tokens(self) -> int:
        """The least a draw can be."""
        return int(self.mean_tokens) if self.kind == "fixed" else self.min_tokens

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` token counts (int64, shape (n,))."""
        if self.kind == "fixed":
            return np.full(n, int(self.mean_tokens), dtype=np.int64)
        mean, std = self.mean_tokens, self.std_dev_tokens
        if self.kind == "normal":
            draws = rng.normal(mean, std, n)
        elif self.kind == "skew_normal":
            delta = self.skew / math.sqrt(1.0 + self.skew**2)
            first, second = rng.standard_normal(n), rng.standard_normal(n)
            mixed = delta * first + math.sqrt(1.0 - delta**2) * second
            draws = mean + std * np.where(first >= 0, mixed, -mixed)
        elif self.kind == "lognormal":
            if std > 0:
                sigma_sq = math.log(1.0 + (std / mean) ** 2)
                draws = rng.lognormal(math.log(mean) - sigma_sq / 2, math.sqrt(sigma_sq), n)
            else:
                draws = np.full(n, mean)
        elif self.kind == "uniform":
            draws = rng.uniform(self.min_tokens, self.max_tokens + 1, n)
        else:  # poisson
            draws = rng.poisson(mean if mean > 0 else 1.0, n).astype(np.float64)
        clamped = np.clip(np.rint(np.clip(draws, self.min_tokens, self.max_tokens)),
                          self.min_tokens, self.max_tokens)
        return clamped.astype(np.int64)

    def describe(self) -> str:
        if self.kind == "fixed":
            return str(int(self.mean_tokens))
        shape = f"skew {self.skew:g}, " if self.kind == "skew_normal" else ""
        return (f"{self.kind}(mean {self.mean_tokens:g}, std_dev {self.std_dev_tokens:g}, "
                f"{shape}in [{self.min_tokens}, {self.max_tokens}])")
