"""`cascade`: a tiny drafter feeds a small drafter, which feeds the target.

The small drafter (`--draft-model`) does not decode its k tokens one pass each: it verifies
chains of `spec_inner_k` tokens proposed by the tiny drafter (`--tiny-draft-model`, or n-gram
lookup at no cost when none is given), accepting `spec_inner_acceptance` of them i.i.d., so it
needs about k / E_inner passes, where E_inner is the inner level's expected tokens per pass.
Every small-drafter and tiny-drafter pass is a separate forward (not fused).
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.knobs import knob
from policies.speculative.base import ChainSpeculator, DraftModelParams


@dataclass(frozen=True, slots=True)
class CascadeParams(DraftModelParams):
    tiny_draft_model: str | None = knob(None, help=(
        "cascade: the tiny drafter feeding the draft model (default: n-gram, free)"))
    spec_inner_k: int = knob(3, min=1, help=(
        "cascade: tokens the tiny drafter proposes per small-drafter pass"))
    spec_inner_acceptance: float = knob(0.6, min=0.0, max=1.0, help=(
        "cascade: i.i.d. acceptance of the tiny drafter by the small one"))

    def __post_init__(self) -> None:
        DraftModelParams.__post_init__(self)
        if not self.draft_model:
            raise ValueError("--speculator cascade needs --draft-model (the small drafter)")
        if self.spec_inner_acceptance >= 1.0:
            raise ValueError(
                f"--spec-inner-acceptance must lie in [0, 1), got {self.spec_inner_acceptance}"
            )


class CascadeSpeculator(ChainSpeculator):
    fused = False
