"""`servesim validate`: replay one trace on the real backend and in the simulator, and write
how far apart they are (`DIR/validation.json`, see `sim.validation`).

    warm-up replay (untimed: first torch calls allocate and dispatch slowly)
    calibration (given, or profiled and fitted here first)
    repeat N times:  real replay, wall-clock arrivals  ->  DIR/real/rN/
                     simulation of the same trace      ->  DIR/sim/rN/
    errors per repeat -> medians and spread -> DIR/validation.json, per_request.csv, cdf.*

Both sides run the same `SimConfig`: the same trace (lengths optionally capped), the same
policies, the same KV pool (the real run's block count is handed to the simulator). With a
speculator the simulator replays the acceptance the real run measured (its acceptance.txt),
so what is validated is the timing model, not an acceptance guess. The simulator is
deterministic, so the spread over repeats is the real runs' variability. A speed probe (a
fixed workload, `backend.profile.speed_probe_s`) is read before and after the profile and each
real run, so a machine that changed speed between calibration and replay shows in the report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backend.bench import replay_cpu_clock
from backend.profile import ProfileGrid, machine_info, profile_real, speed_probe_s
from backend.replay import pick_device, replay_real, write_acceptance
from sim.api import simulate
from sim.calibrate_cli import write_coefficients
from sim.config import ReplayOptions, SimConfig, resolve
from sim.cost.calibrate import fit
from sim.cost.coefficients import load_coefficients
from sim.cost.profiles import profile_from_json
from sim.results import Results, write_results
from sim.validation import PER_REQUEST_METRICS, per_request_errors, validation_report
from traces import cap_lengths

WARM_UP_TRACE = "synthetic:n=4,arrivals=poisson:1000,prompt=fixed:64,output=fixed:8"

REAL_ONLY_DEFAULTS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "weights": None}
"""Options the simulator refuses (they only mean something to the real executor)."""


@dataclass(frozen=True, slots=True)
class ValidateSettings:
    repeats: int = 3
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    grid: ProfileGrid = ProfileGrid()
    """The profile grid when no calibration is given."""
    clock: str = "wall"
    """What the real runs and the profile are timed by (`backend.bench`): `wall`, or `cpu`
    (this thread's CPU time: what the backend costs, without other processes' share)."""

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")


def validate(options: ReplayOptions, out_dir: str | Path, settings: ValidateSettings,
             say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Run the validation and write its files into `out_dir`; returns validation.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = dataclasses.replace(options, executor="real")
    # The warm-up also fails fast on options the real backend refuses, before any profiling.
    say("warming up the real backend")
    replay_real(resolve(dataclasses.replace(options, trace=WARM_UP_TRACE, pace="asap",
                                            num_gpu_blocks=64, calibration=None)))
    calibration = _calibration(options, out, settings, say)
    options = dataclasses.replace(options, calibration=calibration["path"])
    real_config = _capped(resolve(options), settings)
    sim_summaries, real_summaries, per_request, runs = [], [], [], []
    table_rows: list[dict[str, Any]] = []
    for repeat in range(settings.repeats):
        say(f"repeat {repeat + 1}/{settings.repeats}: real run "
            f"({real_config.trace.num_rows} requests, arrivals on the {settings.clock} clock)")
        load_before, probe_s = os.getloadavg()[0], speed_probe_s()
        start_s = time.perf_counter()
        if settings.clock == "wall":
            real, _ = replay_real(real_config)
        else:
            real = replay_cpu_clock(real_config)
        real_wall_s = time.perf_counter() - start_s
        real_dir = write_results(real, out / "real" / f"r{repeat}")
        sim_options = _sim_options(options, real, real_dir)
        say(f"repeat {repeat + 1}/{settings.repeats}: simulation")
        sim = simulate(_capped(resolve(sim_options), settings))
        write_results(sim, out / "sim" / f"r{repeat}")
        real_rows, sim_rows = real.request_rows(), sim.request_rows()
        sim_summaries.append(sim.summary)
        real_summaries.append(real.summary)
        per_request.append(per_request_errors(sim_rows, real_rows))
        table_rows.extend(_joined_rows(repeat, real_rows, sim_rows))
        runs.append({"repeat": repeat, "real_wall_s": real_wall_s,
                     "real_execute_share": _busy_share(real),
                     "sim_busy_share": _busy_share(sim),
                     "loadavg_1min_before": load_before,
                     "speed_probe_s": [probe_s, speed_probe_s()],
                     "loadavg_1min_after": os.getloadavg()[0]})
    report = validation_report(sim_summaries, real_summaries, per_request)
    report.update({
        "utilization": _median(r["sim_busy_share"] for r in runs),
        "runs": runs,
        "calibration": calibration,
        "trace": {"name": real_config.trace.name, "requests": real_config.trace.num_rows,
                  "notes": list(real_config.trace.notes)},
        "options": dataclasses.asdict(options),
        "settings": {"repeats": settings.repeats, "clock": settings.clock,
                     "max_prompt_tokens": settings.max_prompt_tokens,
                     "max_output_tokens": settings.max_output_tokens},
        "machine": machine_info(pick_device()),
    })
    (out / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    _write_rows(out / "per_request.csv", table_rows)
    from sim.validation_plot import write_cdf_plots

    report["plots"] = [str(p) for p in write_cdf_plots(table_rows, out)]
    (out / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _empty_trace():
    from traces import Trace

    return Trace("validate", [], [], [])


def _calibration(options: ReplayOptions, out: Path, settings: ValidateSettings,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """The coefficients to simulate with: `--calibration` as given, else a profile of this
    configuration on this machine fitted now (DIR/profile.json, DIR/calibration.json)."""
    config = resolve(options, trace=_empty_trace())
    if options.calibration:
        coefficients = load_coefficients(options.calibration, config.hardware.name)
        return {"path": options.calibration, "profiled_here": False,
                "provenance": coefficients.provenance}
    say(f"profiling {config.model.name} on the real backend ({settings.grid.passes} passes, "
        f"{settings.clock} clock)")
    profile = profile_real(options, settings.grid,
                           lambda done, total: say(f"  pass {done}/{total}"), settings.clock)
    profile_path = out / "profile.json"
    profile_path.write_text(json.dumps(profile, indent=1) + "\n")
    samples = profile_from_json(profile, str(profile_path)).timing_samples(profile_path.name)
    result = fit(samples)
    path = write_coefficients(out / "calibration.json",
                              {config.hardware.name: result.coefficients.to_json()})
    held = result.report.stats(split="held-out")
    every = result.report.stats(split="all")
    say(f"calibrated: held-out MAPE {held.mape_pct:.1f}% (max {held.max_error_pct:.1f}%)")
    return {"path": str(path), "profiled_here": True, "profile": str(profile_path),
            "speed_probe_s": profile["machine"]["speed_probe_s"],
            "provenance": result.coefficients.provenance,
            "fit_held_out_mape_pct": held.mape_pct, "fit_held_out_max_pct": held.max_error_pct,
            "fit_all_mape_pct": every.mape_pct, "fit_all_max_pct": every.max_error_pct}


def _capped(config: SimConfig, settings: ValidateSettings) -> SimConfig:
    if settings.max_prompt_tokens is None and settings.max_output_tokens is None:
        return config
    trace = cap_lengths(config.trace, settings.max_prompt_tokens, settings.max_output_tokens)
    return dataclasses.replace(config, trace=trace)


def _sim_options(options: ReplayOptions, real: Results, real_dir: Path) -> ReplayOptions:
    """The simulator's options for the run `real`: its KV pool, its measured acceptance."""
    changes: dict[str, Any] = dict(REAL_ONLY_DEFAULTS, executor="sim",
                                   num_gpu_blocks=real.config.options.num_gpu_blocks,
                                   hardware=real.config.hardware.name)
    if options.speculator != "none":
        changes["spec_acceptance"] = str(write_acceptance(real, real_dir))
    return dataclasses.replace(options, **changes)


def _busy_share(results: Results) -> float | None:
    """Share of the run's span the engine spent in steps (for the real run: in `execute`,
    without the scheduling and commit around it)."""
    span_s = results.summary.get("simulated_span_s")
    busy_s = sum(sum(engine.log.duration_s) for engine in results.engines)
    return busy_s / span_s if span_s else None


def _median(values) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    return present[mid] if len(present) % 2 else (present[mid - 1] + present[mid]) / 2


def _joined_rows(repeat: int, real_rows: list[dict], sim_rows: list[dict]) -> list[dict]:
    """One row per request finished in both runs: each metric measured and simulated."""
    sim_by_id = {row["request_id"]: row for row in sim_rows if row["status"] == "finished"}
    rows = []
    for row in real_rows:
        other = sim_by_id.get(row["request_id"])
        if row["status"] != "finished" or other is None:
            continue
        joined: dict[str, Any] = {"repeat": repeat, "request_id": row["request_id"],
                                  "prompt_tokens": row["prompt_tokens"],
                                  "output_tokens": row["output_tokens"]}
        for metric in PER_REQUEST_METRICS:
            joined[f"real_{metric}"] = row[metric]
            joined[f"sim_{metric}"] = other[metric]
        rows.append(joined)
    return rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["repeat", "request_id", "prompt_tokens", "output_tokens"] + [
        f"{side}_{metric}" for metric in PER_REQUEST_METRICS for side in ("real", "sim")]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
