"""A toy scheduler with one knob, the worked example of docs/policies.md ("Adding a policy").

`continuous` batching whose batch never holds more than `--toy-max-batch` sequences. It is
registered only by `register()`, which tests/test_knobs.py calls in a fresh interpreter
before anything of `sim` is imported (the run options are generated from the registry then).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from policies.kv.base import KVAllocator
from policies.knobs import knob
from policies.registry import SCHEDULERS, PolicyEntry
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler


@dataclass(frozen=True, slots=True)
class ToyParams(ContinuousParams):
    max_batch: int = knob(8, flag="--toy-max-batch", min=1,
                          help="toy: most sequences in one iteration")


class ToyScheduler(ContinuousScheduler):
    """Continuous batching under a second cap: `max_batch` sequences per iteration."""

    def __init__(self, params: ToyParams, allocator: KVAllocator) -> None:
        cap = min(params.max_num_seqs, params.max_batch)
        super().__init__(replace(params, max_num_seqs=cap), allocator)


def register() -> None:
    """The one registry line (made at run time here; in the source it is one more entry in
    `SCHEDULERS`' list)."""
    SCHEDULERS["toy"] = PolicyEntry("toy", ToyScheduler, ToyParams,
                                    "continuous batching capped at --toy-max-batch sequences")
