"""`ngram`: prompt lookup (as lookahead / prompt-lookup decoding): drafts are copied from an
earlier occurrence of the last few tokens in the prompt or output.

No draft model and no draft cost (a CPU string match overlapped with the GPU step: fused), no
draft KV. Whether it helps depends on how repetitive the workload is, which the acceptance
model states (low for chat, high for code editing or summarisation with quoting).
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.speculative.base import ChainSpeculator, SpecParams


@dataclass(frozen=True, slots=True)
class NgramParams(SpecParams):
    pass


class NgramSpeculator(ChainSpeculator):
    fused = True
