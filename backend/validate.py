"""`servesim validate`: replay one trace on the real backend and in the simulator, and write
how far apart they are (`DIR/validation.json`, see `sim.validation`).

    warm-up replay (untimed: first torch calls allocate and dispatch slowly)
    calibration (given, or profiled and fitted here: once, or before every repeat)
    repeat N times:  real replay, arrivals on the wall (or CPU) clock  ->  DIR/real/rN/
                     simulation of the same trace                      ->  DIR/sim/rN/
    errors per repeat -> medians and spread -> DIR/validation.json, per_request.csv, cdf.*

Both sides run the same `SimConfig`: the same trace (lengths optionally capped), the same
policies, the same KV pool (the real run's block count is handed to the simulator). With a
speculator the simulator replays the acceptance the real run measured (its acceptance.txt),
so what is validated is the timing model, not an acceptance guess. The simulator is
deterministic, so the spread over repeats is the real runs' variability. A speed probe (a
fixed workload, `backend.profile.speed_probe_s`) is read before and after the profile and each
real run, so a machine that changed speed between calibration and replay shows in the report.
With `speed_replay`, a speed meter read before every step (`backend.speed`) goes further:
each repeat is also simulated at the speed its real run measured, with a fit at the meter's
reference speed (`sim.machine_speed`), and those errors lead the report.
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

from backend.clocks import timer_for
from backend.profile import ProfileGrid, machine_info, profile_real, speed_probe_s
from backend.replay import pick_device, replay_real, write_acceptance
from backend.speed import Reading, SpeedMeter
from sim.config import ReplayOptions, SimConfig, resolve
from sim.cost.calibrate import FitResult, fit
from sim.cost.coefficients import load_coefficients, write_coefficients
from sim.cost.profiles import TimingSample, profile_from_json
from sim.machine_speed import (Reference, fit_at_reference_speed, reference_of, speed_trace,
                                write_speed_trace)
from sim.results import Results, write_results
from sim.validation import PER_REQUEST_METRICS, per_request_errors, validation_report
from traces import Trace, cap_lengths

WARM_UP_TRACE = "synthetic:n=4,arrivals=poisson:1000,prompt=fixed:64,output=fixed:8"

Simulate = Callable[[SimConfig], Results]
"""The simulator (`sim.api.simulate`), handed in by the command that runs a validation: the
backend never imports the SimPy harness (pyproject.toml's `[tool.importlinter]`)."""

REAL_ONLY_DEFAULTS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "weights": None}
"""Options the simulator refuses (they only mean something to the real executor)."""


@dataclass(frozen=True, slots=True)
class ValidateSettings:
    repeats: int = 3
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    grid: ProfileGrid = ProfileGrid()
    """The profile grid when no calibration is given (only its points the replay's options
    can produce are profiled: `ProfileGrid.for_options`)."""
    profile_each_repeat: bool = False
    """Profile and fit anew before every repeat (no `--calibration`): each real run is then
    compared with a calibration of the machine as it was minutes, not an hour, before."""
    pool_profiles: bool = False
    """With `profile_each_repeat`: fit one calibration to every repeat's profile together
    and simulate every repeat with it. A profile takes half a minute and catches the machine
    in whatever speed state it is in; the real runs span the whole validation, so a fit over
    all the profiles prices the states they passed through, where each repeat's own fit
    prices one."""
    clock: str = "wall"
    """What the real runs and the profile are timed by (`backend.bench`): `wall`, or `cpu`
    (this thread's CPU time: what the backend costs, without other processes' share)."""
    speed_replay: bool = False
    """Also fit to the profile at reference speed and simulate each repeat replaying the
    machine speed its real run measured (`sim.machine_speed`); the report's errors are then
    those, and `without_speed_replay` holds the plain ones, from the same real runs."""

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")
        if self.pool_profiles and not self.profile_each_repeat:
            raise ValueError("--pool-profiles pools the profiles of --profile-each-repeat: "
                             "add it")


def validate(options: ReplayOptions, out_dir: str | Path, settings: ValidateSettings,
             simulate: Simulate, say: Callable[[str], None] = lambda text: None
             ) -> dict[str, Any]:
    """Run the validation and write its files into `out_dir`; returns validation.json.
    `simulate` runs the simulated side (`sim.api.simulate`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = dataclasses.replace(options, executor="real")
    if settings.profile_each_repeat and options.calibration:
        raise ValueError("--profile-each-repeat fits its own calibration per repeat: drop "
                         "--calibration")
    if settings.speed_replay and options.calibration:
        raise ValueError("--speed-replay fits to a profile at the speed meter's reference "
                         "speed, which it takes here: drop --calibration")
    # The warm-up also fails fast on options the real backend refuses, before any profiling.
    say("warming up the real backend")
    replay_real(resolve(dataclasses.replace(options, trace=WARM_UP_TRACE, pace="asap",
                                            num_gpu_blocks=64, calibration=None)))
    calibration = None
    if not settings.profile_each_repeat:
        calibration = _calibration(options, out, settings, say)
    configs, reals, real_dirs, calibrations, runs, readings = [], [], [], [], [], []
    for repeat in range(settings.repeats):
        if settings.profile_each_repeat:
            calibration = _calibration(options, out / "calibration" / f"r{repeat}", settings,
                                       say)
        calibrations.append(calibration)
        config = _capped(resolve(dataclasses.replace(options, calibration=calibration["path"])),
                         settings)
        real, real_dir, run, run_readings = _real_run(config, settings, out, repeat, say)
        configs.append(config)
        reals.append(real)
        real_dirs.append(real_dir)
        runs.append(run)
        readings.append(run_readings)
    if settings.pool_profiles:
        calibration = _pooled_calibration(options, calibrations, out / "calibration" / "pooled",
                                          say)
    sims, plain_sims = [], []
    for repeat, (config, real, real_dir, run) in enumerate(zip(configs, reals, real_dirs, runs)):
        used = calibration if settings.pool_profiles else calibrations[repeat]
        say(f"repeat {repeat + 1}/{settings.repeats}: simulation")
        sim_options = _sim_options(dataclasses.replace(config.options, calibration=used["path"]),
                                   real, real_dir)
        sim = simulate(_capped(resolve(sim_options), settings))
        write_results(sim, out / "sim" / f"r{repeat}")
        run["sim_busy_share"] = _busy_share(sim)
        run["sim_calibration"] = used["path"]
        plain_sims.append(sim)
        if settings.speed_replay:
            speed = used["speed"]
            rows = speed_trace(readings[repeat], Reference(*speed["reference_probe_s"]))
            trace_path = write_speed_trace(real_dir / "speed.csv", rows)
            sim = simulate(_capped(resolve(dataclasses.replace(
                sim_options, calibration=speed["path"], speed_trace=str(trace_path))), settings))
            write_results(sim, out / "sim_speed" / f"r{repeat}")
            run["sim_speed_busy_share"] = _busy_share(sim)
            run["speed_factor"] = {"overhead": _spread([row[3] for row in rows]),
                                   "roofline": _spread([row[4] for row in rows])}
        sims.append(sim)
    real_rows = [r.request_rows() for r in reals]
    sim_rows = [s.request_rows() for s in sims]
    report = validation_report([s.summary for s in sims], [r.summary for r in reals],
                               [per_request_errors(s, r) for s, r in zip(sim_rows, real_rows)])
    if settings.speed_replay:
        plain = validation_report(
            [s.summary for s in plain_sims], [r.summary for r in reals],
            [per_request_errors(s.request_rows(), r) for s, r in zip(plain_sims, real_rows)])
        report["without_speed_replay"] = {key: plain[key] for key in (
            "median_abs_rel_error", "median_abs_rel_error_spread", "rel_error")}
    trace = reals[0].config.trace
    report.update({
        "utilization": _median(r["sim_busy_share"] for r in runs),
        "runs": runs,
        "calibration": calibration if settings.pool_profiles else calibrations[0],
        "calibrations": calibrations,
        "trace": {"name": trace.name, "requests": trace.num_rows, "notes": list(trace.notes)},
        "options": dataclasses.asdict(options),
        "settings": {"repeats": settings.repeats, "clock": settings.clock,
                     "profile_each_repeat": settings.profile_each_repeat,
                     "pool_profiles": settings.pool_profiles,
                     "speed_replay": settings.speed_replay,
                     "max_prompt_tokens": settings.max_prompt_tokens,
                     "max_output_tokens": settings.max_output_tokens},
        "machine": machine_info(pick_device()),
    })
    table_rows = [row for repeat, (r, s) in enumerate(zip(real_rows, sim_rows))
                  for row in _joined_rows(repeat, r, s)]
    _write_rows(out / "per_request.csv", table_rows)
    from sim.validation_plot import write_cdf_plots

    report["plots"] = [str(p) for p in write_cdf_plots(table_rows, out)]
    (out / "validation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _real_run(config: SimConfig, settings: ValidateSettings, out: Path, repeat: int,
              say: Callable[[str], None]
              ) -> tuple[Results, Path, dict[str, Any], list[Reading]]:
    """One real run of `config`, written under `out`, with the machine's state around it and
    its speed meter's readings."""
    say(f"repeat {repeat + 1}/{settings.repeats}: real run ({config.trace.num_rows} requests, "
        f"arrivals on the {settings.clock} clock)")
    load_before, probe_s = os.getloadavg()[0], speed_probe_s()
    meter = SpeedMeter(timer_for(settings.clock, pick_device()))
    start_s = time.perf_counter()
    real = replay_real(config, clock=settings.clock, speed_meter=meter)[0]
    real_wall_s = time.perf_counter() - start_s
    real_dir = write_results(real, out / "real" / f"r{repeat}")
    run = {"repeat": repeat, "real_wall_s": real_wall_s, "real_execute_share": _busy_share(real),
           "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
           "speed_probe_s": [probe_s, speed_probe_s()],
           "speed_meter_probe_s": {
               "dispatch": _spread([reading.dispatch_s for reading in meter.readings]),
               "compute": _spread([reading.compute_s for reading in meter.readings])}}
    return real, real_dir, run, meter.readings


def _empty_trace() -> Trace:
    return Trace("validate", [], [], [])


def _calibration(options: ReplayOptions, out: Path, settings: ValidateSettings,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """The coefficients to simulate with: `--calibration` as given, else a profile of this
    configuration on this machine fitted now (OUT/profile.json, OUT/calibration.json)."""
    out.mkdir(parents=True, exist_ok=True)
    config = resolve(options, trace=_empty_trace())
    if options.calibration:
        coefficients = load_coefficients(options.calibration, config.hardware.coefficients_name)
        return {"path": options.calibration, "profiled_here": False,
                "provenance": coefficients.provenance}
    grid = settings.grid.for_options(options)
    say(f"profiling {config.model.name} on the real backend ({grid.passes} passes, "
        f"{settings.clock} clock)")
    profile = profile_real(options, grid,
                           lambda done, total: say(f"  pass {done}/{total}"), settings.clock)
    profile_path = out / "profile.json"
    profile_path.write_text(json.dumps(profile, indent=1) + "\n")
    samples = profile_from_json(profile, str(profile_path)).timing_samples(profile_path.name)
    calibration = {**_fit(samples, out, config, say), "profiled_here": True,
                   "profile": str(profile_path),
                   "speed_probe_s": profile["machine"]["speed_probe_s"]}
    if settings.speed_replay:
        calibration["speed"] = _speed_fit([profile_path], out / "speed", config, say)
    return calibration


def _pooled_calibration(options: ReplayOptions, calibrations: list[dict[str, Any]], out: Path,
                        say: Callable[[str], None]) -> dict[str, Any]:
    """One fit to every repeat's profile (each file weighted alike), in OUT/calibration.json."""
    out.mkdir(parents=True, exist_ok=True)
    samples = []
    for repeat, calibration in enumerate(calibrations):
        path = Path(calibration["profile"])
        profile = profile_from_json(json.loads(path.read_text()), str(path))
        samples += profile.timing_samples(f"r{repeat}/{path.name}")
    say(f"fitting one calibration to the {len(calibrations)} repeats' profiles")
    config = resolve(options, trace=_empty_trace())
    pooled = {**_fit(samples, out, config, say), "profiled_here": True,
              "pooled_from": [c["profile"] for c in calibrations]}
    if "speed" in calibrations[0]:
        pooled["speed"] = _speed_fit([Path(c["profile"]) for c in calibrations], out / "speed",
                                     config, say)
    return pooled


def _speed_fit(profile_paths: list[Path], out: Path, config: SimConfig,
               say: Callable[[str], None]) -> dict[str, Any]:
    """Fit `profile_paths` together at their median probe times, the reference speed
    (`sim.machine_speed.fit_at_reference_speed`); OUT/profile_N.json hold the normalized
    copies."""
    out.mkdir(parents=True, exist_ok=True)
    profiles = [json.loads(path.read_text()) for path in profile_paths]
    reference = reference_of(profiles)
    names = [f"profile_{index}.json" for index in range(len(profiles))]
    result, normalized = fit_at_reference_speed(list(zip(names, profiles)), reference)
    for name, profile in zip(names, normalized):
        (out / name).write_text(json.dumps(profile, indent=1) + "\n")
    say(f"at reference speed (probes {1e3 * reference.dispatch_s:.3f} ms dispatch, "
        f"{1e3 * reference.compute_s:.3f} ms compute):")
    return {**_written(result, out, config, say), "reference_probe_s": list(reference)}


def _fit(samples: list[TimingSample], out: Path, config: SimConfig,
         say: Callable[[str], None]) -> dict[str, Any]:
    """Fit `samples`, write OUT/calibration.json, and describe the fit."""
    return _written(fit(samples), out, config, say)


def _written(result: FitResult, out: Path, config: SimConfig,
             say: Callable[[str], None]) -> dict[str, Any]:
    """Write a fit to OUT/calibration.json, and describe it."""
    path = write_coefficients(out / "calibration.json",
                              {config.hardware.coefficients_name: result.coefficients.to_json()})
    held = result.report.stats(split="held-out")
    every = result.report.stats(split="all")
    say(f"calibrated: held-out MAPE {held.mape_pct:.1f}% (max {held.max_error_pct:.1f}%)")
    return {"path": str(path), "provenance": result.coefficients.provenance,
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
                                   hardware=real.config.options.hardware)
    if options.speculator != "none":
        changes["spec_acceptance"] = str(write_acceptance(real, real_dir))
    return dataclasses.replace(options, **changes)


def _busy_share(results: Results) -> float | None:
    """Share of the run's span the engine spent in steps (for the real run: in `execute`,
    without the scheduling and commit around it)."""
    span_s = results.summary.get("simulated_span_s")
    busy_s = sum(sum(engine.log.duration_s) for engine in results.engines)
    return busy_s / span_s if span_s else None


def _spread(values: list[float]) -> dict[str, float | int | None]:
    """Count, median and 10th/90th percentiles (nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p10": None, "median": None, "p90": None}

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"count": len(ordered), "p10": rank(0.1), "median": _median(ordered),
            "p90": rank(0.9)}


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
