"""The speculator contract: how many draft tokens each decoding request verifies this step.

A speculator is a policy like a scheduler: data in, data out, no clock, no tensors, no model.
It decides k per request (fixed, or dynamic when `spec_dynamic` is set) and the shape of what
the target verifies (a chain of k drafts, or a tree whose depth is k). What a draft costs and
how many drafts survive is the executor's business: the simulator draws acceptance from an
acceptance model (`sim/spec/`), a real backend runs the drafter and rejection sampling; both
report accepted counts through `StepResult.accepted_tokens`.

Dynamic k, per request and step:

    k = min(spec_k,
            spec_knee_tokens // num_decoding - 1,         # batch: keep the verify pass under
                                                          #   the roofline knee (memory-bound)
            floor(log(spec_min_accept_prob) / log(alpha)))  # acceptance: stop drafting where
                                                          #   all-drafts-so-far survive with
                                                          #   probability < spec_min_accept_prob
    alpha = (accepted + 1) / (proposed + 2), the request's measured acceptance (Laplace prior)

Above the knee a verify pass over (1 + k) tokens per request is compute-bound, so each draft
costs as much target time as a plain decode token and speculation stops paying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from policies.types import Sequence


@dataclass(frozen=True, slots=True)
class SpecParams:
    """Knobs every speculator has (the CLI's `--spec-*` options)."""

    spec_k: int = 4
    spec_dynamic: bool = False
    spec_knee_tokens: int = 256
    """Verify-pass size (tokens over the whole batch) where the target turns compute-bound;
    the simulator fills it from the roofline of the target on its hardware."""
    spec_min_accept_prob: float = 0.2

    def __post_init__(self) -> None:
        if self.spec_k < 0:
            raise ValueError(f"--spec-k must be >= 0, got {self.spec_k}")
        if self.spec_knee_tokens < 1:
            raise ValueError(f"spec knee must be >= 1 token, got {self.spec_knee_tokens}")
        if not 0.0 < self.spec_min_accept_prob < 1.0:
            raise ValueError(
                f"spec min accept probability must lie in (0, 1), got {self.spec_min_accept_prob}"
            )


class Speculator(Protocol):
    params: SpecParams
    fused: bool
    """True when drafting runs inside the target's forward pass (no per-pass overhead of its
    own); False when each draft pass is a separate forward that pays the fixed per-pass cost."""

    def num_draft_tokens(self, seq: Sequence, num_decoding: int) -> int:
        """k for `seq` this step, before the caps of its remaining outputs and the budget."""

    def num_verify_nodes(self, num_draft_tokens: int) -> int:
        """Draft tokens the target verifies for a given k (k for a chain)."""


def choose_k(params: SpecParams, seq: Sequence, num_decoding: int) -> int:
    """Fixed `spec_k`, or the dynamic rule of the module docstring."""
    if not params.spec_dynamic:
        return params.spec_k
    k = min(params.spec_k, params.spec_knee_tokens // max(1, num_decoding) - 1)
    alpha = (seq.num_draft_tokens_accepted + 1) / (seq.num_draft_tokens_proposed + 2)
    k = min(k, math.floor(math.log(params.spec_min_accept_prob) / math.log(alpha)))
    return max(0, k)


class ChainSpeculator:
    """A drafter proposing one chain of k tokens (draft model, n-gram lookup, cascade)."""

    fused = False

    def __init__(self, params: SpecParams) -> None:
        self.params = params

    def num_draft_tokens(self, seq: Sequence, num_decoding: int) -> int:
        return choose_k(self.params, seq, num_decoding)

    def num_verify_nodes(self, num_draft_tokens: int) -> int:
        return num_draft_tokens
