"""`servesim validate --recorded DIR`: replay recorded inference-perf runs of a real engine and
compare the simulator's per-stage latencies with the measured ones.

A run is a folder holding `exp-config.yaml` (the engine: `model`, `tensor_parallelism`,
`max_model_len`, `max_num_batched_tokens`, `max_num_seqs`), the workload inference-perf read
(`results/config.yaml`, else `profile.yaml`) and `results/stage_<i>_lifecycle_metrics.json`.
Each run replays as vLLM ran it: chunked prefill, paged KV with prefix caching, the run's
token budget, sequence cap, context limit and TP degree, on H100 unless `--hardware` says
otherwise; any replay flag given on the command line overrides the run's own setting.

Measurement caveats (`shared/ground_truth/README.md`), handled here:
- `output_len` is counted by the client from streamed text and can fall short of what the
  server generated (`ignore_eos`): the requested output length from the workload config is used.
- `inter_token_latency` is over streamed chunks, not tokens. The recorded per-token decode time
  ("itl" here) is (request_latency - ttft) / (requested output tokens - 1): exact for the mean
  (means are linear); for p90/p99 it is (request_latency pXX - ttft pXX) / (out - 1), an
  approximation (a difference of percentiles is not the percentile of the difference). The
  simulator's side is each finished request's tpot of the same definition, and its mean/p90/p99.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.config import ReplayOptions, SimConfig
from traces.inference_perf.schema import RateStage, read_config
from traces.trace import Trace

STATS = ("mean", "p90", "p99")
METRICS = ("ttft", "e2e", "itl")
CSV_COLUMNS = ("run", "stage", "metric", "measured", "simulated", "rel_error")
OVERLOAD_TTFT_S = 10.0
"""A stage whose TTFT p90 exceeds this is overloaded (recorded or simulated)."""
OVERLOAD_SHARE = 0.01
"""A run is overloaded when more than this share of its requests failed (recorded: timeouts)
or were unfinished at the horizon (simulated)."""
HORIZON_MARGIN_S = 600.0
"""Default horizon: the end of the last stage's load plus this. A run that keeps up drains in
seconds; a collapsed one stops here, its backlog counted as unfinished."""
RUN_DEFAULTS = {"scheduler": "chunked", "allocator": "paged-prefix", "hardware": "h100"}
_EXP_KEYS = {"tensor_parallelism": "tp", "max_model_len": "max_model_len",
             "max_num_batched_tokens": "max_num_batched_tokens", "max_num_seqs": "max_num_seqs"}


@dataclass(frozen=True, slots=True)
class RecordedRun:
    """One recorded run: its engine settings, workload file and per-stage measurements."""

    name: str
    model_name: str
    engine: dict[str, int]
    workload_path: Path
    stages: list[dict[str, Any]]


def find_runs(root: Path) -> list[Path]:
    """Every folder at or under `root` that holds an `exp-config.yaml`, sorted."""
    if not root.is_dir():
        raise ValueError(f"--recorded {root}: not a directory")
    runs = sorted(Path(folder) for folder, _, files in os.walk(root, followlinks=True)
                  if "exp-config.yaml" in files)
    if not runs:
        raise ValueError(f"--recorded {root}: no run found (no exp-config.yaml at or under it)")
    return runs


def read_run(path: Path) -> RecordedRun:
    """The run in folder `path`; a missing file or field is a one-line ValueError."""
    import yaml

    exp_path = path / "exp-config.yaml"
    try:
        exp = yaml.safe_load(exp_path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{exp_path}: unreadable YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(exp, dict):
        raise ValueError(f"{exp_path}: must be a mapping of engine settings, got {exp!r}")
    model = exp.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError(f"{exp_path}: 'model' must name the served model, got {model!r}")
    engine: dict[str, int] = {}
    for key in _EXP_KEYS:
        value = exp.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{exp_path}: {key!r} must be a positive integer, got {value!r}")
        engine[key] = value
    workload = path / "results" / "config.yaml"
    if not workload.is_file():
        workload = path / "profile.yaml"
    if not workload.is_file():
        raise ValueError(f"{path}: neither results/config.yaml nor profile.yaml exists")
    stages = []
    while (stage_path := path / "results" / f"stage_{len(stages)}_lifecycle_metrics.json").is_file():
        stages.append(_read_stage(stage_path))
    if not stages:
        raise ValueError(f"{path}: no results/stage_0_lifecycle_metrics.json")
    return RecordedRun(path.name, model, engine, workload, stages)


def _read_stage(path: Path) -> dict[str, Any]:
    try:
        stage = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: unreadable JSON ({error})") from None
    try:
        latency = stage["successes"]["latency"]
        for key in ("time_to_first_token", "request_latency"):
            for stat in STATS:
                float(latency[key][stat])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: needs successes.latency.{{time_to_first_token,"
                         f"request_latency}}.{{mean,p90,p99}} in seconds ({error!r} missing "
                         "or not a number)") from None
    return stage


def model_path(run: RecordedRun, root: Path) -> Path:
    """`root/model_configs/<name>` for the run's `org/name` model, the name's case ignored."""
    wanted = run.model_name.rsplit("/", 1)[-1].lower()
    configs = root / "model_configs"
    found = [p for p in configs.iterdir() if p.name.lower() == wanted] if configs.is_dir() else []
    if not found or not (found[0] / "config.json").is_file():
        raise ValueError(f"run {run.name}: no {configs}/{wanted}/config.json for model "
                         f"{run.model_name!r}; pass --model")
    return found[0]


def run_options(run: RecordedRun, root: Path, given: dict[str, Any]) -> ReplayOptions:
    """The replay of `run` as its engine ran it; `given` (flags on the command line) win."""
    values: dict[str, Any] = dict(RUN_DEFAULTS)
    values.update({_EXP_KEYS[key]: value for key, value in run.engine.items()})
    values["token_budget"] = run.engine["max_num_batched_tokens"]
    values["trace"] = f"inference-perf:{run.workload_path}"
    if "model" not in given:
        values["model"] = str(model_path(run, root))
    if "horizon_s" not in given:
        stages = read_config(run.workload_path).stages
        if all(isinstance(s, RateStage) for s in stages):
            values["horizon_s"] = sum(s.duration_s for s in stages) + HORIZON_MARGIN_S
    values.update(given)
    return ReplayOptions().updated(values)


def first_per_stage(config: SimConfig, max_requests_per_stage: int | None) -> SimConfig:
    """`config` keeping each stage's first N requests (they keep their send times)."""
    if max_requests_per_stage is None:
        return config
    if max_requests_per_stage < 1:
        raise ValueError(f"--max-requests-per-stage must be >= 1, got {max_requests_per_stage}")
    if config.trace.closed_loop:
        raise ValueError("--max-requests-per-stage applies to rate stages, not concurrent ones")
    kept, seen = [], {}
    for request in config.trace.requests:
        seen[request.stage] = seen.get(request.stage, 0) + 1
        if seen[request.stage] <= max_requests_per_stage:
            kept.append(request)
    note = f"kept the first {max_requests_per_stage} requests of each stage"
    trace = Trace(config.trace.name, kept, list(config.trace.invalid_rows),
                  [*config.trace.notes, note])
    return dataclasses.replace(config, trace=trace)


def recorded_stats(stage: dict[str, Any], output_tokens: float) -> dict[str, float]:
    """`ttft_mean`, ..., `itl_p99` of a recorded stage (see the module docstring for itl)."""
    latency = stage["successes"]["latency"]
    stats: dict[str, float] = {}
    for stat in STATS:
        ttft = float(latency["time_to_first_token"][stat])
        e2e = float(latency["request_latency"][stat])
        stats[f"ttft_{stat}"] = ttft
        stats[f"e2e_{stat}"] = e2e
        if output_tokens > 1:
            stats[f"itl_{stat}"] = (e2e - ttft) / (output_tokens - 1)
    return stats


def simulated_stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The same keys over the finished requests `rows` (itl: each request's tpot_s)."""
    stats: dict[str, float] = {}
    for metric, column in (("ttft", "ttft_s"), ("e2e", "e2e_s"), ("itl", "tpot_s")):
        values = np.array([r[column] for r in rows if r[column] is not None], dtype=float)
        if values.size:
            stats[f"{metric}_mean"] = float(values.mean())
            stats[f"{metric}_p90"] = float(np.percentile(values, 90))
            stats[f"{metric}_p99"] = float(np.percentile(values, 99))
    return stats


def recorded_overloaded(run: RecordedRun) -> dict[str, Any]:
    """Recorded verdict: failures (timeouts) over OVERLOAD_SHARE, or a stage TTFT p90 > 10 s."""
    failures = sum(int(s.get("failures", {}).get("count") or 0) for s in run.stages)
    successes = sum(int(s["successes"].get("count") or 0) for s in run.stages)
    ttft_p90 = max(float(s["successes"]["latency"]["time_to_first_token"]["p90"])
                   for s in run.stages)
    share = failures / max(failures + successes, 1)
    return {"overloaded": share > OVERLOAD_SHARE or ttft_p90 > OVERLOAD_TTFT_S,
            "failed_share": share, "ttft_p90_max_s": ttft_p90}


def simulated_overloaded(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Simulated verdict: requests not finished at the horizon (unfinished or rejected) over
    OVERLOAD_SHARE, or a stage's TTFT p90 (finished requests) > 10 s."""
    unfinished = sum(1 for r in rows if r["status"] != "finished")
    ttft_p90 = 0.0
    for stage in sorted({r["stage"] for r in rows}):
        ttfts = [r["ttft_s"] for r in rows if r["stage"] == stage and r["ttft_s"] is not None
                 and r["status"] == "finished"]
        if ttfts:
            ttft_p90 = max(ttft_p90, float(np.percentile(ttfts, 90)))
    share = unfinished / max(len(rows), 1)
    return {"overloaded": share > OVERLOAD_SHARE or ttft_p90 > OVERLOAD_TTFT_S,
            "unfinished_share": share, "ttft_p90_max_s": ttft_p90}


def compare_run(run: RecordedRun, config: SimConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's CSV rows and its overload verdicts, from the simulator's request rows."""
    num_stages = len({r.stage for r in config.trace.requests})
    if num_stages != len(run.stages):
        raise ValueError(f"run {run.name}: the workload has {num_stages} stages but results/ "
                         f"holds {len(run.stages)} stage_<i>_lifecycle_metrics.json")
    csv_rows = []
    for index, stage in enumerate(run.stages):
        requested = [r.output_tokens for r in config.trace.requests if r.stage == index]
        measured = recorded_stats(stage, float(np.mean(requested)))
        finished = [r for r in rows if r["stage"] == index and r["status"] == "finished"]
        simulated = simulated_stats(finished)
        for metric in (f"{m}_{s}" for m in METRICS for s in STATS):
            if metric not in measured:
                continue
            sim_value = simulated.get(metric)
            error = (None if sim_value is None or measured[metric] == 0
                     else (sim_value - measured[metric]) / measured[metric])
            csv_rows.append({"run": run.name, "stage": index, "metric": metric,
                             "measured": measured[metric], "simulated": sim_value,
                             "rel_error": error})
    recorded = recorded_overloaded(run)
    simulated_verdict = simulated_overloaded(rows)
    overload = {"recorded": recorded, "simulated": simulated_verdict,
                "agree": recorded["overloaded"] == simulated_verdict["overloaded"]}
    return {"rows": csv_rows, "overload": overload}


def median_errors(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median |rel_error| per metric family and over all rows (fractions)."""
    result: dict[str, float | None] = {}
    for family in (*METRICS, "all"):
        errors = [abs(r["rel_error"]) for r in rows if r["rel_error"] is not None
                  and (family == "all" or r["metric"].startswith(family + "_"))]
        result[family] = float(np.median(errors)) if errors else None
    return result


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
