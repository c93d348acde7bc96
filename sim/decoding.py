"""Block diffusion in the simulator: the simulated executor's report of how many positions each denoising step committed.

A denoising step is priced by the cost model like any chunk: its block's B query tokens (plus
the finished block's tokens whose final KV it computes) over the cached context, with logits
at every block position. (Attention inside the block is bidirectional; the cost model counts
causal pairs, B(B-1)/2 fewer per step, negligible next to the context's.)

Commits: under `fixed` the policy's count is exact, the real engine commits the same. Under
`threshold:T` the simulator needs a model of how many masked positions clear T per step: each
still-masked position clears it independently with probability 1 - T (T = 1: one per step,
T -> 0: the whole block in one step), at least one commits (all that are left at a block's
S-th step, as in the real engine), drawn from a stream of its own per
request (`SeedSequence([seed, DIFFUSION_STREAM, request])`), so runs are reproducible.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from policies.decoding.block_diffusion import BlockDiffusion
from policies.engine import Executor
from policies.types import Plan, Sequence, StepResult

DIFFUSION_STREAM = 0xD1F5
"""Seed-sequence key of the threshold commit draws (apart from every other stream)."""


class DiffusionExecutor:
    """The cost model's executor, reporting each denoising step's committed positions."""

    def __init__(self, inner: Executor, policy: BlockDiffusion, seed: int) -> None:
        self.inner = inner
        self.policy = policy
        self.seed = seed
        self._rngs: dict[int, np.random.Generator] = {}

    def execute(self, plan: Plan) -> StepResult:
        result = self.inner.execute(plan)
        committed = {c.seq.seq_id: self._num_committed(c.seq)
                     for c in plan.chunks if c.num_block_tokens}
        return replace(result, committed_tokens=committed)

    def _num_committed(self, seq: Sequence) -> int:
        threshold = self.policy.threshold
        masked = seq.num_block_tokens - seq.num_block_committed
        if threshold is None:
            return self.policy.num_to_commit(masked, seq.num_block_steps)
        rng = self._rngs.get(seq.seq_id)
        if rng is None:
            rng = np.random.default_rng(np.random.SeedSequence(
                [self.seed, DIFFUSION_STREAM, seq.seq_id & 0xFFFFFFFF]))
            self._rngs[seq.seq_id] = rng
        return self.policy.num_to_commit(masked, seq.num_block_steps,
                                         num_cleared=int(rng.binomial(masked, 1.0 - threshold)))
