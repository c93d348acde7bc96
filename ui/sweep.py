"""Sweeps over request rate, and the capacity answer: the highest rate that meets the SLOs.

A configuration is the dashboard's base options plus overrides written as the CLI's option
names, one configuration per line: `scheduler=static` or `allocator=contiguous, reserve=oracle`
(an empty line is the base itself). The capacity of a configuration is the highest swept rate
whose SLO attainment (share of all requests finished within the TTFT and TPOT SLOs) reaches the
target; rates are swept in increasing order and the answer is the last passing rate before the
first failure, since beyond saturation a queue only grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd

from sim.public import ReplayOptions, looks_like_path
from ui.data import RunView, slo_attainment

_CONVERTERS = {"int": int, "float": float, "str": str}
MODEL_OPTIONS = ("model", "draft_model", "tiny_draft_model")
"""Options naming models: catalog names only in sweep lines (no server paths)."""


@dataclass(frozen=True, slots=True)
class SweepConfig:
    label: str
    overrides: dict[str, Any]


def _convert(name: str, text: str) -> Any:
    field = next(f for f in fields(ReplayOptions) if f.name == name)
    kinds = [part.strip() for part in str(field.type).split("|")]
    if "None" in kinds and text.lower() in ("none", ""):
        return None
    try:
        return _CONVERTERS[kinds[0]](text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected {kinds[0]}") from None


def parse_configs(text: str) -> list[SweepConfig]:
    """One `SweepConfig` per line of `name=value[, name=value...]`; ValueError names the line."""
    configs: list[SweepConfig] = []
    names = set(ReplayOptions.names())
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        overrides: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in line.split(","))):
            key, equals, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not equals or key not in names:
                raise ValueError(f"line {number}: {item!r} is not OPTION=VALUE with a replay option "
                                 f"name (e.g. scheduler=static)")
            if key in ("rate_scale", "trace"):
                raise ValueError(f"line {number}: {key} is set by the sweep itself")
            if key in MODEL_OPTIONS and looks_like_path(value.strip()):
                raise ValueError(f"line {number}: {key} takes a catalog name here; upload a "
                                 f"config.json as the model in the sidebar instead")
            overrides[key] = _convert(key, value.strip())
        label = line or "base"
        if label in (c.label for c in configs):
            continue
        configs.append(SweepConfig(label, overrides))
    if not configs:
        configs.append(SweepConfig("base", {}))
    return configs


def parse_rates(text: str) -> list[float]:
    """Comma-separated positive rate scales, sorted and deduplicated."""
    try:
        rates = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"rate scales {text!r}: expected numbers separated by commas") from None
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise ValueError(f"rate scales {text!r}: expected one or more positive numbers")
    return rates


def sweep_row(label: str, rate_scale: float, view: RunView) -> dict[str, Any]:
    s = view.summary
    span_s = s["simulated_span_s"]
    arrivals = view.requests["arrival_s"].dropna()
    offered = (len(arrivals) - 1) / float(arrivals.max()) if len(arrivals) > 1 and arrivals.max() > 0 else None
    return {
        "config": label,
        "rate_scale": rate_scale,
        "offered_req_s": offered,
        "request_throughput_req_s": s["request_throughput_req_s"],
        "output_throughput_tok_s": s["output_throughput_tok_s"],
        "goodput_req_s": s["goodput_req_s"],
        "slo_attainment": slo_attainment(s),
        "ttft_p99_s": s["ttft_p99_s"],
        "tpot_p99_s": s["tpot_p99_s"],
        "e2e_p50_s": s["e2e_p50_s"],
        "simulated_span_s": span_s,
    }


def capacity(points: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per config: the highest rate scale before the first one whose attainment misses `target`."""
    rows = []
    for label, group in points.groupby("config", sort=False):
        best = None
        for point in group.sort_values("rate_scale").itertuples(index=False):
            if pd.isna(point.slo_attainment) or point.slo_attainment < target:
                break
            best = point
        rows.append({
            "config": label,
            "max_rate_scale": None if best is None else best.rate_scale,
            "max_offered_req_s": None if best is None else best.offered_req_s,
            "goodput_req_s": None if best is None else best.goodput_req_s,
        })
    return pd.DataFrame(rows)
