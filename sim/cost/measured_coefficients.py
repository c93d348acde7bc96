"""The measured cost model's named coefficients: data, with provenance, never constants in code.

The kernel tables hold what vLLM's kernels take; these say what they do not: the engine's own
time per step (a constant and a term per running sequence), how the ops with no table are
priced, and where vLLM switches all-reduce implementations. `data/measured_coefficients.json`
holds one set per engine, with its provenance (the overhead terms are priors until they are
fitted to recorded runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path


@dataclass(frozen=True, slots=True)
class MeasuredCoefficients:
    step_overhead_s: float
    per_sequence_overhead_s: float
    untabled_bandwidth_eff: float
    """Share of peak memory bandwidth the untabled kernels (norms, rotary, KV write,
    activation, SSM scans) reach."""
    untabled_kernel_latency_s: float
    """Fixed time of one untabled kernel."""
    cuda_graph_max_tokens: int
    """Largest step (tokens) run inside a CUDA graph; larger steps run eagerly."""
    custom_allreduce_max_bytes: float
    """Largest message vLLM's custom all-reduce takes; larger ones go to NCCL."""
    frontend_latency_s: float
    """Per request, outside the engine's steps: the API server's HTTP handling and
    tokenization before the request is queued, detokenization and streaming after a token is
    sampled. Adds to TTFT and E2E, not to the time between tokens."""
    async_scheduling: bool
    """The engine plans each step while the one before runs (vLLM's default since 0.14)."""
    provenance: str = ""
    fit: dict | None = None
    """The record of the fit to recorded runs that set the fitted terms (`sim.engine_fit`):
    data, date, design, errors, leave-one-model-out cross-validation."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("provenance", "fit"):
                continue
            if f.name == "async_scheduling":
                if not isinstance(value, bool):
                    raise ValueError(f"measured coefficient async_scheduling={value!r} must be "
                                     "true or false")
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"measured coefficient {f.name}={value!r} must be a number >= 0")
        if not 0.0 < self.untabled_bandwidth_eff <= 1.0:
            raise ValueError(f"untabled_bandwidth_eff={self.untabled_bandwidth_eff} must lie in (0, 1]")

    @classmethod
    def from_json(cls, data: dict) -> MeasuredCoefficients:
        known = {f.name for f in fields(cls)}
        unknown, missing = set(data) - known, known - set(data) - {"provenance", "fit"}
        if unknown or missing:
            raise ValueError(f"measured coefficients: unknown keys {sorted(unknown)}, missing "
                             f"{sorted(missing)}")
        return cls(**data)


def measured_coefficients(engine: str = "vllm", path: str | Path | None = None) -> MeasuredCoefficients:
    """The engine's coefficients from `path` (default: the shipped file)."""
    try:
        text = (Path(path).read_text() if path is not None else resources.files("sim.cost")
                .joinpath("data/measured_coefficients.json").read_text())
        table = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read measured coefficients {path}: {exc}") from None
    if engine not in table:
        raise ValueError(f"no measured coefficients for engine {engine!r} (have {sorted(table)})")
    return MeasuredCoefficients.from_json(table[engine])
