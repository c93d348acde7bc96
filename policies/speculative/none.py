"""`none`: plain decoding, one token per step (the baseline speculation is measured against)."""

from __future__ import annotations

from dataclasses import dataclass

from policies.speculative.base import SpecParams
from policies.types import Sequence


@dataclass(frozen=True, slots=True)
class NoSpecParams:
    pass


class NoSpeculator:
    fused = True
    params = SpecParams(spec_k=0)

    def __init__(self, params: NoSpecParams) -> None:
        del params  # nothing to tune

    def num_draft_tokens(self, seq: Sequence, num_decoding: int) -> int:
        return 0

    def num_verify_nodes(self, num_draft_tokens: int) -> int:
        return 0

    def fixed_num_draft_tokens(self) -> int | None:
        return 0
