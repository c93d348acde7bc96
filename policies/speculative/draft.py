"""`draft`: a separate, smaller draft model (e.g. Llama-3.2-1B for Llama-3-8B).

It runs k sequential single-token passes per step on the same hardware, each a forward of its
own (not fused: every pass pays the draft model's per-pass fixed cost), and keeps its own KV
for every running request.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.speculative.base import ChainSpeculator, DraftModelParams


@dataclass(frozen=True, slots=True)
class DraftParams(DraftModelParams):
    def __post_init__(self) -> None:
        DraftModelParams.__post_init__(self)
        if not self.draft_model:
            raise ValueError("--speculator draft needs --draft-model (e.g. llama-3.2-1b)")


class DraftSpeculator(ChainSpeculator):
    fused = False
