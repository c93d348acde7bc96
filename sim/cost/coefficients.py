"""Efficiency coefficients of the roofline: data, with provenance, never constants in code.

A roofline term is `max(flops / (peak * compute_eff), bytes / (bandwidth * memory_eff))`. The
efficiencies say what fraction of the datasheet peaks real kernels reach; they are fitted
(`sim.cost.calibrate`) to measured timings and stored as JSON so a run names the fit it used.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Coefficients:
    linear_compute_eff: float
    linear_memory_eff: float
    attention_compute_eff: float
    attention_memory_eff: float
    comm_bandwidth_eff: float
    iteration_overhead_s: float
    per_sequence_overhead_s: float
    provenance: str = ""
    # Added after the first fits (defaults keep older JSON loading and meaning the same):
    allreduce_latency_s: float | None = None
    """Latency of one step of a tensor-parallel all-reduce; a call over tp ranks takes
    ceil(log2 tp) steps. None takes the hardware table's `interconnect_latency_s`. Fitted
    because measured small all-reduces on 4-8 GPUs take 35-60 us, not the table's 5 us, and
    whole-model decode steps grow with TP by about that much per call (160 calls for
    Llama-2-70B)."""
    layer_overhead_s: float = 0.0
    """Fixed time per layer per iteration, booked to the linear group: the launch and tail
    latency of a layer's kernels. It is what a GEMM costs when it moves only a few MB (one
    token through a TP-8 shard runs at under half the bandwidth a TP-1 layer reaches)."""
    tp_overhead_s: float = 0.0
    """Fixed time per iteration paid only under tensor parallelism: the driver handing the
    batch to the other ranks' workers (6 ms of RPC per iteration at TP 2-4 against under 1 ms
    at TP 1 in Vidur's CPU-overhead profile)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "provenance" or value is None:
                continue
            if f.name.endswith("_eff") and not 0.0 < value <= 1.0:
                raise ValueError(f"coefficient {f.name}={value} must lie in (0, 1]")
            if f.name.endswith("_s") and value < 0.0:
                raise ValueError(f"coefficient {f.name}={value} must be >= 0")

    def with_values(self, **values: float) -> Coefficients:
        return replace(self, **values)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Coefficients:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown coefficient keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


def _default_table() -> dict[str, dict]:
    text = resources.files("sim.cost").joinpath("data/default_coefficients.json").read_text()
    return json.loads(text)


def default_coefficients(hardware: str) -> Coefficients:
    """The shipped coefficients for one hardware name (fitted where profiles exist)."""
    table = _default_table()
    entry = table.get(hardware, table["_generic"])
    return Coefficients.from_json(entry)


def load_coefficients(path: str | Path, hardware: str | None = None) -> Coefficients:
    """Read a calibration file: either one coefficient set or a table keyed by hardware."""
    data = json.loads(Path(path).read_text())
    if "linear_compute_eff" in data:
        return Coefficients.from_json(data)
    if "coefficients" in data:
        return Coefficients.from_json(data["coefficients"])
    if hardware is not None and hardware in data:
        return Coefficients.from_json(data[hardware])
    raise ValueError(f"{path}: no coefficients for hardware {hardware!r} (keys: {sorted(data)})")
