"""`lookahead`: lookahead decoding (Fu et al., ICML 2024): Jacobi iteration feeds an n-gram
pool, and one forward pass both advances the Jacobi window and verifies pool candidates. No
draft model, no training.

Each step the target runs one pass over three parts (`policies/speculative/jacobi.py` lays
them out and states the attention mask):

    [x] + lookahead branch: W columns x (N - 1) levels of the Jacobi window
        + verification branch: up to G candidate (N - 1)-grams that start after x

so a request's chunk holds 1 + (W + G)(N - 1) tokens, where x is the last committed token. At
most N - 1 drafts (one candidate) are accepted, plus the target's own next token. The pass is
much wider than a draft verify of k = N - 1: the planner reserves KV slots for all of it
(the lookahead branch's K/V are scratch, rewritten next step), and the simulator prices it
whole, which is why lookahead stops paying at a smaller batch than a chain verify does.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.knobs import knob
from policies.speculative.base import SpecParams, choose_k
from policies.types import Sequence


@dataclass(frozen=True, slots=True)
class LookaheadParams(SpecParams):
    """Lookahead's knobs; a step drafts N - 1 (`spec_k` caps it only under `spec_dynamic`,
    so a `spec_k` given without it would be silently ignored: an error instead)."""

    lookahead_window: int = knob(5, min=1, help=(
        "lookahead: Jacobi window W (columns of the lookahead branch)"))
    lookahead_ngram: int = knob(4, min=2, help=(
        "lookahead: n-gram size N (the window keeps N - 1 levels; a step accepts at most "
        "N - 1 drafts)"))
    lookahead_guesses: int = knob(5, min=1, help=(
        "lookahead: n-gram candidates G verified per step"))

    def __post_init__(self) -> None:
        if self.spec_k is not None and not self.spec_dynamic:
            raise ValueError(f"--spec-k {self.spec_k} does not apply to --speculator lookahead "
                             f"without --spec-dynamic: each step drafts N - 1 tokens (set "
                             f"--lookahead-ngram, or add --spec-dynamic to cap them at --spec-k)")
        SpecParams.__post_init__(self)

    def default_spec_k(self) -> int:
        return self.num_levels

    @property
    def num_levels(self) -> int:
        """Levels of the Jacobi window, and the drafts one candidate carries: N - 1."""
        return self.lookahead_ngram - 1


class LookaheadSpeculator:
    """k = N - 1 drafts (one accepted candidate at most); the pass verifies (W + G) k nodes.

    When the budget or a request's remaining outputs cannot hold the full pass, the planner
    lowers k, which narrows both branches to k levels (shorter n-grams) rather than dropping
    the request to a plain decode."""

    fused = True

    def __init__(self, params: LookaheadParams) -> None:
        self.params = params

    def num_draft_tokens(self, seq: Sequence, num_decoding: int) -> int:
        """N - 1, or fewer levels under `spec_dynamic` (the batch table and the request's
        measured acceptance, as every speculator)."""
        if self.params.spec_dynamic:
            return min(self.params.num_levels, choose_k(self.params, seq, num_decoding))
        return self.params.num_levels

    def num_verify_nodes(self, num_draft_tokens: int) -> int:
        p = self.params
        return (p.lookahead_window + p.lookahead_guesses) * num_draft_tokens

    def fixed_num_draft_tokens(self) -> int | None:
        return None if self.params.spec_dynamic else self.params.num_levels
