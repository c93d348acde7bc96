"""Arithmetic intensity (FLOPs per byte moved) of iterations, against the hardware's ridge point.

The ridge point is peak bf16 FLOP/s over memory bandwidth (about 295 FLOP/byte on an H100).
An op group whose intensity lies below it is memory-bound at the peaks: batch-1 decode of a
dense model reads every weight to do 2 FLOPs per weight element, so it sits near 1 FLOP/byte.
Batching multiplies the FLOPs done per weight byte; GQA shrinks the KV bytes that attention
reads; weight quantization halves or quarters the bytes; speculative verification of k draft
tokens computes k + 1 tokens per weight read. Prefill of a long prompt is compute-bound. A
block-diffusion denoising step computes a whole block of B positions per sequence over the same
KV a decode reads (with logits at every one), so it does about B times a decode's FLOPs for
about a decode's bytes and turns compute-bound at about 1/B of the batch size a decode needs.

`servesim roofline` prints `intensity_table`; the dashboard plots the same rows and the
per-iteration points an `IterationRecorder` collects during a simulation.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from policies.engine import Executor
from policies.fast_forward import LockstepPricing
from policies.types import Plan, StepResult
from sim.cost.roofline import CostModel, IterationCost

DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PREFILL_TOKENS = (16, 64, 256, 1024, 4096, 16384)


@dataclass(frozen=True, slots=True)
class IntensityRow:
    """One op group (or the whole iteration, group "total") of one batch shape."""

    phase: str
    """"decode" (each sequence computes 1 + spec_tokens tokens), "denoise" (a block-diffusion
    step: each sequence computes a block of positions) or "prefill" (whole prompts)."""
    group: str
    num_seqs: int
    new_tokens: int
    context_tokens: int
    flops: float
    bytes_moved: float
    time_s: float
    memory_bound: bool
    """True when the group's memory term exceeds its compute term at the fitted efficiencies."""

    @property
    def intensity_flops_per_byte(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved else float("inf")

    @property
    def achieved_flops_s(self) -> float:
        return self.flops / self.time_s if self.time_s else 0.0


def _rows(phase: str, cost: IterationCost, num_seqs: int, new: int, context: int) -> list[IntensityRow]:
    rows = [
        IntensityRow(phase, g.name, num_seqs, new, context, g.flops, g.bytes, g.time_s,
                     g.memory_s > g.compute_s)
        for g in cost.groups
    ]
    memory_s = sum(g.memory_s for g in cost.groups)
    compute_s = sum(g.compute_s for g in cost.groups)
    rows.append(IntensityRow(phase, "total", num_seqs, new, context, cost.flops, cost.bytes,
                             cost.time_s, memory_s > compute_s))
    return rows


def decode_rows(cost: CostModel, batch: int, context_tokens: int, spec_tokens: int = 0) -> list[IntensityRow]:
    """`batch` sequences each computing 1 + `spec_tokens` tokens on `context_tokens` of KV.

    Verifying draft tokens needs logits at every one of the 1 + `spec_tokens` positions.
    """
    new = 1 + spec_tokens
    breakdown = cost.breakdown([new] * batch, [context_tokens] * batch, num_sampling=batch * new)
    return _rows("decode", breakdown, batch, new, context_tokens)


def denoise_rows(cost: CostModel, batch: int, context_tokens: int,
                 block_tokens: int) -> list[IntensityRow]:
    """`batch` sequences each denoising a block of `block_tokens` positions on
    `context_tokens` of KV, with logits at every position (block diffusion)."""
    breakdown = cost.breakdown([block_tokens] * batch, [context_tokens] * batch,
                               num_sampling=batch * block_tokens)
    return _rows("denoise", breakdown, batch, block_tokens, context_tokens)


def prefill_rows(cost: CostModel, batch: int, prompt_tokens: int) -> list[IntensityRow]:
    """`batch` whole prompts of `prompt_tokens` tokens each, from an empty cache."""
    breakdown = cost.breakdown([prompt_tokens] * batch, [0] * batch)
    return _rows("prefill", breakdown, batch, prompt_tokens, 0)


MAX_BATCH = 1_000_000
"""The largest `--batch`: the cost model prices a batch row by row, and no engine runs
anywhere near a million sequences in one iteration."""


def intensity_table(cost: CostModel, batch: int, context_tokens: int,
                    spec_tokens: int = 0, diffusion_block: int = 0) -> list[IntensityRow]:
    """What `servesim roofline` prints: decode at (batch, context), a denoising step of a
    `diffusion_block`-position block there (none when 0), then prefill of that context."""
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"--batch must lie in [1, {MAX_BATCH:,}] sequences, got {batch}")
    if context_tokens < 1:
        raise ValueError(f"--context must be >= 1, got {context_tokens}")
    if spec_tokens < 0:
        raise ValueError(f"--spec-tokens must be >= 0, got {spec_tokens}")
    if diffusion_block < 0:
        raise ValueError(f"--diffusion-block must be >= 0, got {diffusion_block}")
    denoise = (denoise_rows(cost, batch, context_tokens, diffusion_block)
               if diffusion_block else [])
    return (decode_rows(cost, batch, context_tokens, spec_tokens) + denoise
            + prefill_rows(cost, batch, context_tokens))


def intensity_curve(cost: CostModel, context_tokens: int, spec_tokens: int = 0,
                    diffusion_block: int = 0) -> list[IntensityRow]:
    """Whole-iteration rows for decode (and denoising steps of `diffusion_block` positions,
    when > 0) over `DECODE_BATCHES`, and prefill over `PREFILL_TOKENS`."""
    rows = [decode_rows(cost, b, context_tokens, spec_tokens)[-1] for b in DECODE_BATCHES]
    if diffusion_block:
        rows += [denoise_rows(cost, b, context_tokens, diffusion_block)[-1]
                 for b in DECODE_BATCHES]
    rows += [prefill_rows(cost, 1, n)[-1] for n in PREFILL_TOKENS]
    return rows


class IterationRecorder(LockstepPricing):
    """Wraps the executor that prices a run (either cost model, or an executor around one) and
    keeps each executed iteration's FLOPs and bytes moved, as `counts` (the roofline model of
    the same replica) counts them; the executor's prices pass through unchanged, so a point's
    achieved FLOP/s is the roofline's work over the time the pricing model gave the step.

    Columns are parallel to the engine's `IterationLog` (`execute` records each executed
    plan once; a decode fast-forward reports the iterations it ran through
    `ran_lockstep_decodes`), so iteration i's intensity is `flops[i] / bytes_moved[i]`. KV swap
    copies to and from the host are not counted: they move no FLOPs and use the host link,
    not HBM.
    """

    def __init__(self, inner: Executor, counts: CostModel) -> None:
        self.inner = inner
        self.counts = counts
        self._lockstep = inner if isinstance(inner, LockstepPricing) else None
        self.flops = array("d")
        self.bytes_moved = array("d")

    def execute(self, plan: Plan) -> StepResult:
        result = self.inner.execute(plan)
        cost = self.counts.plan_cost(plan)
        self.flops.append(cost.flops)
        self.bytes_moved.append(cost.bytes)
        return result

    def lockstep_decode_times(self, context_tokens: list[int], num_steps: int,
                              first_step: int = 0,
                              padding_contexts: Collection[int] = ()) -> list[float] | None:
        """The inner executor's prices; None (step one at a time) when it has none, or for
        padding rows (the intensity counts of a run have none)."""
        if self._lockstep is None or padding_contexts:
            return None
        return self._lockstep.lockstep_decode_times(context_tokens, num_steps, first_step)

    def ran_lockstep_decodes(self, context_tokens: list[int], num_steps: int,
                             padding_contexts: Collection[int] = ()) -> None:
        # Only called after lockstep_decode_times priced the run (no padding), so
        # _lockstep is set.
        assert self._lockstep is not None
        self._lockstep.ran_lockstep_decodes(context_tokens, num_steps)
        cost = self.counts.lockstep_decode_costs(context_tokens, num_steps)
        self.flops.extend(np.broadcast_to(cost.flops, (num_steps,)).tolist())
        self.bytes_moved.extend(np.broadcast_to(cost.bytes, (num_steps,)).tolist())
