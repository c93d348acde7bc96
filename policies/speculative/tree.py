"""`tree`: Medusa / EAGLE style. A one-layer drafter on the target's hidden states proposes a
token tree of `spec_tree_width` candidates at each of k levels (k = the tree's depth), and the
target verifies every node in one pass with tree attention (each node attends to the context
and its ancestors). At most k drafts are accepted (one root-to-leaf path).

    depth:      1      2      3
    root -+-- a1 --- b1 --- c1        width 2, depth 3: 6 draft nodes verified,
          +-- a2 --- b2 --- c2        at most 3 accepted

The drafter runs fused with the target (same engine step, captured graph): its k level passes
pay their layer's cost but no per-pass engine overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.knobs import knob
from policies.speculative.base import SpecParams, choose_k
from policies.types import Sequence


@dataclass(frozen=True, slots=True)
class TreeParams(SpecParams):
    spec_tree_width: int = knob(2, min=1, help="tree: candidates per level")


class TreeSpeculator:
    fused = True

    def __init__(self, params: TreeParams) -> None:
        self.params = params

    def num_draft_tokens(self, seq: Sequence, num_decoding: int) -> int:
        return choose_k(self.params, seq, num_decoding)

    def num_verify_nodes(self, num_draft_tokens: int) -> int:
        return self.params.spec_tree_width * num_draft_tokens

    def fixed_num_draft_tokens(self) -> int | None:
        return None if self.params.spec_dynamic else self.params.spec_k
