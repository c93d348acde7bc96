"""`cascade`: a tiny drafter feeds a small drafter, which feeds the target.

The small drafter (`--draft-model`) does not decode its k tokens one pass each: it verifies
chains of `spec_inner_k` tokens proposed by the tiny drafter (`--tiny-draft-model`, or n-gram
lookup at no cost when none is given), accepting `spec_inner_acceptance` of them i.i.d., so it
needs about k / E_inner passes, where E_inner is the inner level's expected tokens per pass.
Every small-drafter and tiny-drafter pass is a separate forward (not fused).
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.speculative.base import ChainSpeculator, SpecParams


@dataclass(frozen=True, slots=True)
class CascadeParams(SpecParams):
    draft_model: str = ""
    tiny_draft_model: str = ""
    spec_inner_k: int = 3
    spec_inner_acceptance: float = 0.6

    def __post_init__(self) -> None:
        SpecParams.__post_init__(self)
        if not self.draft_model:
            raise ValueError("--speculator cascade needs --draft-model (the small drafter)")
        if self.spec_inner_k < 1:
            raise ValueError(f"--spec-inner-k must be >= 1, got {self.spec_inner_k}")
        if not 0.0 <= self.spec_inner_acceptance < 1.0:
            raise ValueError(
                f"--spec-inner-acceptance must lie in [0, 1), got {self.spec_inner_acceptance}"
            )


class CascadeSpeculator(ChainSpeculator):
    fused = False
