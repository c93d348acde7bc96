"""The speculator contract: how many draft tokens each decoding request verifies this step.

A speculator is a policy like a scheduler: data in, data out, no clock, no tensors, no model.
It decides k per request (fixed, or dynamic when `spec_dynamic` is set) and the shape of what
the target verifies (a chain of k drafts, or a tree whose depth is k). What a draft costs and
how many drafts survive is the executor's business: the simulator draws acceptance from an
acceptance model (`sim/speculation/`), a real backend runs the drafter and rejection sampling; both
report accepted counts through `StepResult.accepted_tokens`.

Dynamic k (`spec_dynamic`), per request and step, is the smaller of two limits:

    batch:      spec_k_by_batch, a table of (max batch size, k) rows: the k to use while at
                most that many requests decode in the step. At high batch the target's verify
                pass of (1 + k) tokens per request turns compute-bound, each draft then costs
                as much target time as a plain decode token, and speculation stops paying; the
                simulator fills the table from its cost and acceptance models (the k that
                maximizes expected tokens per second of a step), a real backend from a profile.
    acceptance: floor(log(spec_min_accept_prob) / log(alpha)), where alpha = (accepted + 1) /
                (reached + 2) is the request's measured acceptance (Laplace prior; drafts after
                a rejection were never judged and are not counted): stop
                drafting where all drafts so far survive with probability < spec_min_accept_prob.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from policies.knobs import check_knobs, knob
from policies.types import Sequence


MAX_SPEC_K = 64
"""Far past any useful k (acceptance 0.95 gains under 4% beyond k = 64); a bound keeps a typo
from producing a summary with a key per position for thousands of positions."""

DEFAULT_SPEC_K = 4


@dataclass(frozen=True, slots=True)
class SpecParams:
    """Knobs every speculator has (the CLI's `--spec-*` options)."""

    spec_k: int | None = knob(None, min=0, max=MAX_SPEC_K, help=(
        f"draft tokens per step (a tree's depth); the most, with --spec-dynamic (default: "
        f"{DEFAULT_SPEC_K}; lookahead: N - 1)"))
    """Unset (None) only until `__post_init__` puts the speculator's own default in its
    place (`default_spec_k`): a speculator can tell a given k from its default."""
    spec_dynamic: bool = knob(False, help=(
        "pick k per batch size from the cost model and shrink it as measured acceptance falls "
        "(default: k fixed)"))
    spec_k_by_batch: tuple[tuple[int, int], ...] = ()
    """(max batch size, k) rows in increasing batch order; empty: no batch limit."""
    spec_min_accept_prob: float = 0.2

    def __post_init__(self) -> None:
        check_knobs(self)
        if self.spec_k is None:
            object.__setattr__(self, "spec_k", self.default_spec_k())
        batches = [batch for batch, _ in self.spec_k_by_batch]
        if batches != sorted(set(batches)) or any(k < 0 for _, k in self.spec_k_by_batch):
            raise ValueError(f"spec_k_by_batch needs increasing batch sizes and k >= 0, got "
                             f"{self.spec_k_by_batch}")
        if not 0.0 < self.spec_min_accept_prob < 1.0:
            raise ValueError(
                f"spec min accept probability must lie in (0, 1), got {self.spec_min_accept_prob}"
            )

    def default_spec_k(self) -> int:
        """k when `--spec-k` is not given."""
        return DEFAULT_SPEC_K


@dataclass(frozen=True, slots=True)
class DraftModelParams(SpecParams):
    """A speculator with a separate draft model (a catalog name or a config.json; the
    simulator prices it, a real backend loads it)."""

    draft_model: str | None = knob(None, help=(
        "draft model for draft/cascade (e.g. llama-3.2-1b, qwen2-0.5b)"))


class Speculator(Protocol):
    params: SpecParams
    fused: bool
    """True when drafting runs inside the target's forward pass (no per-pass overhead of its
    own); False when each draft pass is a separate forward that pays the fixed per-pass cost."""

    def num_draft_tokens(self, seq: Sequence, num_decoding: int) -> int:
        """k for `seq` this step, before the caps of its remaining outputs and the budget."""

    def num_verify_nodes(self, num_draft_tokens: int) -> int:
        """Draft tokens the target verifies for a given k (k for a chain)."""

    def fixed_num_draft_tokens(self) -> int | None:
        """`num_draft_tokens` when it is the same for every request and batch size (the
        speculative fast-forward then sizes a step without asking per request); None when
        it is not (`spec_dynamic`)."""


def choose_k(params: SpecParams, seq: Sequence, num_decoding: int) -> int:
    """Fixed `spec_k`, or the dynamic rule of the module docstring."""
    if not params.spec_dynamic:
        return params.spec_k
    k = params.spec_k
    for max_batch, batch_k in params.spec_k_by_batch:
        k = min(params.spec_k, batch_k)
        if num_decoding <= max_batch:
            break
    alpha = (seq.num_draft_tokens_accepted + 1) / (seq.num_draft_tokens_reached + 2)
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

    def fixed_num_draft_tokens(self) -> int | None:
        return None if self.params.spec_dynamic else self.params.spec_k
