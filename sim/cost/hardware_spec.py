"""Hardware spec files: any accelerator described in YAML or JSON (`--hardware FILE`), and any
catalog GPU written out in that format (`servesim list hardware --spec NAME`).

The keys are `HardwareSpec`'s fields, units in their names (FLOP/s, bytes, bytes/s, seconds),
and numbers are written in the shortest form that reads back to the same float, so a catalog
GPU written out and passed back as a file prices every run exactly as its name does (its
`kernel_tables` and `coefficients` keys carry the lookups that are keyed by name).

Every bad file is one `ValueError` naming the file and the field: `FILE: FIELD: what is wrong`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sim.cost.specs import DTYPE_BYTES, HardwareSpec

REQUIRED_FIELDS = ("name", "peak_flops", "mem_capacity_bytes", "mem_bandwidth_bytes_s",
                   "interconnect_bandwidth_bytes_s", "host_link_bandwidth_bytes_s")
OPTIONAL_FIELDS = ("description", "interconnect_latency_s", "price_per_hour", "kernel_tables",
                   "coefficients", "cuda_total_mem_bytes")
POSITIVE_FIELDS = ("mem_capacity_bytes", "mem_bandwidth_bytes_s",
                   "interconnect_bandwidth_bytes_s", "host_link_bandwidth_bytes_s")
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def looks_like_spec_path(name: str) -> bool:
    """A `--hardware` value meant as a file rather than a catalog name."""
    return ("/" in name or "\\" in name or name.startswith((".", "~"))
            or name.lower().endswith(SPEC_SUFFIXES))


def load_hardware_spec(path: str | Path) -> HardwareSpec:
    """The `HardwareSpec` a YAML or JSON file describes (JSON when the name ends in .json)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: cannot read the hardware spec ({exc})") from None
    return hardware_from_dict(_parse(file, text), str(file))


def _parse(file: Path, text: str) -> Any:
    if file.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}: not valid JSON ({exc})") from None
    import yaml  # only YAML spec files need it, not every start

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"{file}: not valid YAML{line} "
                         f"({getattr(exc, 'problem', None) or exc})") from None


def hardware_from_dict(data: Any, source: str) -> HardwareSpec:
    """Check every field of a parsed spec and build it; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of hardware fields "
                         f"({', '.join(REQUIRED_FIELDS)}), got {type(data).__name__}")
    known = REQUIRED_FIELDS + OPTIONAL_FIELDS
    for key in data:
        if key not in known:
            raise ValueError(f"{source}: {key}: unknown field; known: {', '.join(known)}")
    for key in REQUIRED_FIELDS:
        if key not in data:
            raise ValueError(f"{source}: {key}: missing (required: {', '.join(REQUIRED_FIELDS)})")
    name = _text(data["name"], "name", source)
    values: dict[str, Any] = {key: _number(data[key], key, source, positive=True)
                              for key in POSITIVE_FIELDS}
    if data.get("interconnect_latency_s") is not None:
        values["interconnect_latency_s"] = _number(data["interconnect_latency_s"],
                                                   "interconnect_latency_s", source, positive=False)
    if data.get("price_per_hour") is not None:
        values["price_per_hour"] = _number(data["price_per_hour"], "price_per_hour", source,
                                           positive=True)
    if data.get("cuda_total_mem_bytes") is not None:
        values["cuda_total_mem_bytes"] = _number(data["cuda_total_mem_bytes"],
                                                 "cuda_total_mem_bytes", source, positive=True)
    if data.get("coefficients") is not None:
        values["coefficients"] = _text(data["coefficients"], "coefficients", source)
    if data.get("kernel_tables") is not None:
        values["kernel_tables"] = _kernel_tables(data["kernel_tables"], source)
    description = data.get("description")
    description = name if description is None else _text(description, "description", source)
    return HardwareSpec(name=name, description=description,
                        peak_flops=_peak_flops(data["peak_flops"], source), **values)


def _text(value: Any, field: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{source}: {field}: expected a non-empty string, got {value!r}")
    return value.strip()


def _number(value: Any, field: str, source: str, *, positive: bool) -> float:
    """A finite number; YAML 1.1 reads `3.35e12` (no dot) as text, so numeric text counts."""
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if not math.isfinite(number):
        raise ValueError(f"{source}: {field}: expected a number, got {value!r}")
    if positive and number <= 0:
        raise ValueError(f"{source}: {field}: must be > 0, got {value!r}")
    if number < 0:
        raise ValueError(f"{source}: {field}: must be >= 0, got {value!r}")
    return number


def _peak_flops(value: Any, source: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{source}: peak_flops: expected a mapping of dtype to dense FLOP/s "
                         f"(e.g. bf16: 9.89e+14), got {value!r}")
    peaks = {}
    for dtype, flops in value.items():
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"{source}: peak_flops.{dtype}: unknown dtype; choose among "
                             f"{', '.join(DTYPE_BYTES)}")
        peaks[dtype] = _number(flops, f"peak_flops.{dtype}", source, positive=True)
    if "bf16" not in peaks:
        raise ValueError(f"{source}: peak_flops.bf16: missing (every dtype without its own "
                         "peak computes at the bf16 one)")
    return peaks


def _kernel_tables(value: Any, source: str) -> str:
    from sim.cost.kernel_tables import shipped_hardware

    name = _text(value, "kernel_tables", source)
    if name not in shipped_hardware():
        raise ValueError(f"{source}: kernel_tables: no shipped kernel tables named {name!r}; "
                         f"choose one of {', '.join(shipped_hardware())} or null")
    return name


def _number_text(value: float) -> str:
    """The shortest text YAML reads back as exactly `value` (always with a dot: YAML 1.1
    takes `1e12` for a string)."""
    plain = repr(float(value))
    if "e" not in plain and len(plain) <= 10:
        return plain
    for digits in range(1, 18):
        text = f"{value:.{digits}e}"
        if float(text) == value:
            return text
    return f"{value:.17e}"


def _optional_number(value: float | None) -> str:
    return "null" if value is None else _number_text(value)


def hardware_to_yaml(spec: HardwareSpec) -> str:
    """`spec` as a spec file that `load_hardware_spec` reads back to the same numbers."""
    peaks = "".join(f"  {dtype}: {_number_text(flops)}\n"
                    for dtype, flops in spec.peak_flops.items())
    tables = json.dumps(spec.kernel_tables) if spec.kernel_tables else "null"
    return (
        f"# servesim hardware spec: {spec.description}\n"
        f"# Pass it as --hardware FILE. Units are in the keys: FLOP/s, bytes, bytes/s, seconds.\n"
        f"name: {json.dumps(spec.name)}\n"
        f"description: {json.dumps(spec.description)}\n"
        f"peak_flops:  # dense (no 2:4 sparsity) FLOP/s per compute dtype\n"
        f"{peaks}"
        f"mem_capacity_bytes: {_number_text(spec.mem_capacity_bytes)}\n"
        f"mem_bandwidth_bytes_s: {_number_text(spec.mem_bandwidth_bytes_s)}\n"
        f"cuda_total_mem_bytes: {_optional_number(spec.cuda_total_mem_bytes)}"
        f"  # what the driver reports (vLLM sizes its pool from it); null: the capacity\n"
        f"interconnect_bandwidth_bytes_s: {_number_text(spec.interconnect_bandwidth_bytes_s)}"
        f"  # per direction; tensor-parallel all-reduce\n"
        f"interconnect_latency_s: {_number_text(spec.interconnect_latency_s)}\n"
        f"host_link_bandwidth_bytes_s: {_number_text(spec.host_link_bandwidth_bytes_s)}"
        f"  # per direction; KV swap\n"
        f"price_per_hour: {_optional_number(spec.price_per_hour)}  # USD per GPU-hour\n"
        f"kernel_tables: {tables}"
        f"  # measured kernel tables (null: none; --cost-model auto takes the roofline)\n"
        f"coefficients: {json.dumps(spec.coefficients_name)}"
        f"  # roofline coefficient set (defaults and --calibration tables)\n"
    )
