"""Efficiency coefficients of the roofline: data, with provenance, never constants in code.

A roofline term is `max(flops / (peak * compute_eff), bytes / (bandwidth * memory_eff))`. The
efficiencies say what fraction of the datasheet peaks real kernels reach, and the `_s` fields
are fixed times the throughput terms miss (engine overheads, launch and link latency); all are
fitted (`sim.cost.calibrate`) to measured timings and stored as JSON so a run names the fit
it used.
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
    # Added with the first fits; after `provenance` so positional construction is unchanged,
    # with defaults so older JSON still loads.
    allreduce_latency_s: float | None = None
    """Latency of one step of a tensor-parallel all-reduce; a call over tp ranks takes
    ceil(log2 tp) steps. None takes the hardware table's `interconnect_latency_s` per step.
    Fitted because measured small all-reduces on 4-8 GPUs take 35-60 us, not the table's 5 us,
    and whole-model decode steps grow from TP 2 to 4 to 8 by tens of microseconds per call
    (160 calls an iteration for Llama-2-70B)."""
    layer_overhead_s: float = 0.0
    """Fixed time per layer per iteration, booked to the linear group: the launch and tail
    latency of a layer's kernels. It is why small GEMMs miss the bandwidth roofline: one token
    through a Llama-2-7B layer streams weights at 75% of peak bandwidth at TP 1 but at 46-50%
    at TP 8 (vidur's A100 and H100 profiles)."""
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


BUILTIN_CALIBRATIONS: dict[str, str] = {"shared-fit": "data/shared_fit.json"}
"""Calibrations shipped with servesim, usable by name with `--calibration NAME`.

`shared-fit` holds the a100/h100 sets fitted to the GPU profiles in shared/calibration (Vidur,
Splitwise, Sarathi-Serve; see docs/calibration.md). They are not the default: those profiles
come from 2023 research engines whose per-sequence and per-layer overheads are several times
a current engine's, so for capacity planning on today's engines the datasheet fractions in
`default_coefficients.json` are the better prior until a profile of the target engine exists.
"""


def _package_table(relative: str) -> dict[str, dict]:
    return json.loads(resources.files("sim.cost").joinpath(relative).read_text())


def default_coefficients(hardware: str) -> Coefficients:
    """The default coefficients for one hardware name (datasheet fractions unless listed)."""
    table = _package_table("data/default_coefficients.json")
    return Coefficients.from_json(table.get(hardware, table["_generic"]))


def load_coefficients(path: str | Path, hardware: str | None = None) -> Coefficients:
    """Read a calibration: a builtin name (`shared-fit`) or a file holding either one
    coefficient set or a table keyed by hardware name."""
    name = str(path)
    if name in BUILTIN_CALIBRATIONS:
        data = _package_table(BUILTIN_CALIBRATIONS[name])
    else:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"cannot read calibration {path}: {exc} (builtin names: "
                f"{', '.join(BUILTIN_CALIBRATIONS)})"
            ) from exc
    if "linear_compute_eff" in data:
        return Coefficients.from_json(data)
    if "coefficients" in data:
        return Coefficients.from_json(data["coefficients"])
    if hardware is not None and hardware in data:
        return Coefficients.from_json(data[hardware])
    raise ValueError(f"{path}: no coefficients for hardware {hardware!r} (keys: {sorted(data)})")


def write_coefficients(path: str | Path, entries: dict[str, dict]) -> Path:
    """Write `{hardware: coefficients}` into `path`, keeping other hardware keys there."""
    path = Path(path)
    table: dict = {}
    if path.exists():
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: exists but is not valid JSON ({exc})") from None
        if not isinstance(table, dict) or "linear_compute_eff" in table:
            raise ValueError(f"{path}: exists but is not a table keyed by hardware; "
                             "choose another --out")
    table.update(entries)
    path.write_text(json.dumps(table, indent=2) + "\n")
    return path
