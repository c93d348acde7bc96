"""Simulator speed: requests per second and peak RSS, fast-forward on against off, one run.

    python bench/sim_speed.py [--only SUBSTRING ...] [--max-requests N] [--million]
                              [--baseline-cap N] [--out FILE.json] [--targets | --configurations]

Cases: the full Azure conv and code traces (and, with --million, a 1,000,000-request synthetic
trace drawn like Azure conv: lognormal prompt and output lengths with its medians, Poisson
arrivals at its mean rate of 5.4 requests/s), each with continuous+paged, chunked+paged-prefix
and draft speculation on Llama-3-8B/H100; and every workload in
../shared/traces/vidur_workloads with Llama-2-70B, TP 2, A100, block 16, batch cap 128. These
cases use the replay's default cost model (`auto`: the measured kernels on H100 and A100;
summaries name it in `cost_model`).

Each case runs twice, each time in a fresh interpreter (so peak RSS, ru_maxrss, is its own):
with the decode fast-forward (the default) and without it (the baseline: one SimPy event per
iteration); the two summaries must agree (the run fails otherwise) and the table reports
their speed ratio. Times cover trace loading, resolve and simulate; CPU seconds (of the one
thread the simulator runs on) are reported beside wall seconds because this machine is shared.
The baseline of a case larger than --baseline-cap requests runs on its first --baseline-cap
requests instead, and the ratio compares requests per CPU-second.

`--targets` runs only the issue's speed targets instead (#17): the full Azure conv trace
(Llama-3-8B/H100, the default cost model `auto`, measured on H100) under each policy mix, the
1,000,000-request synthetic trace, Vidur's synth_10k workload as a whole `servesim replay`
process, and two whole `servesim replay` commands (wall clock, best of 3, startup included);
each row prints its measurement, the target and their ratio (targets are not asserted).

`--configurations` runs a survey instead: every scheduler, allocator, speculator, decoding,
preemption, sampling and cluster configuration in `CONFIGURATIONS`, once each on the full Azure
conv trace (or its first --max-requests), each row's CPU seconds also as a multiple of
continuous + paged measured in the same run, so that a slow path stands out whatever the
host's speed (`--only` picks rows; the first always runs as the unit).

Last, the cost models on the bundled trace (Llama-3-8B/H100, fast-forward on): the roofline
and the measured model (`--cost-model measured`), each the fastest of --repeats fresh runs by
CPU time, and the measured model's CPU time as a multiple of the roofline's (target: at most
1.5x).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACES = next((folder / "shared" / "traces" for folder in ROOT.parents
                      if (folder / "shared" / "traces").is_dir()),
                     ROOT.parent / "shared" / "traces")
"""../shared/traces beside the checkout (or beside a folder above it: a git worktree)."""
AZURE = SHARED_TRACES / "azure_llm_inference_2023"
MILLION = ("synthetic:n=1000000,arrivals=poisson:5.4,prompt=lognormal:1020:0.5,"
           "output=lognormal:129:1.0")
POLICIES = {
    "continuous+paged": {"scheduler": "continuous", "allocator": "paged"},
    "chunked+paged-prefix": {"scheduler": "chunked", "allocator": "paged-prefix"},
    "draft": {"speculator": "draft", "draft_model": "llama-3.2-1b"},
}
VIDUR = {"model": "llama-2-70b", "tp": 2, "hardware": "a100", "block_size": 16,
         "max_num_seqs": 128}
BUNDLED = {"model": "llama-3-8b", "hardware": "h100"}
"""The bundled trace (no `trace` option) with the replay defaults."""
COST_MODELS_CASE = "bundled cost models"
CONV = {"trace": str(AZURE / "AzureLLMInferenceTrace_conv.csv"), "model": "llama-3-8b",
        "hardware": "h100"}
CPU_TARGETS = {  # case: (options, CPU seconds of trace loading, resolve and simulate)
    "conv continuous+paged": (CONV, 3.0),
    "conv chunked+paged-prefix": ({**CONV, **POLICIES["chunked+paged-prefix"]}, 5.0),
    "conv draft speculation": ({**CONV, **POLICIES["draft"]}, 8.0),
    "conv radix": ({**CONV, "allocator": "radix"}, 6.0),
    "conv 4 replicas prefix-affinity": ({**CONV, "replicas": 4, "router": "prefix-affinity",
                                         "allocator": "paged-prefix"}, 8.0),
    "conv disaggregated 1:3": ({**CONV, "disaggregate": "1:3"}, 8.0),
    "synthetic-1M continuous+paged": ({**CONV, "trace": MILLION}, 120.0),
}
MILLION_PEAK_MIB = 3 * 1024
VIDUR_SYNTH_10K = ["--trace", str(SHARED_TRACES / "vidur_workloads" / "synth_10k.csv"),
                   "--model", "llama-2-70b", "--tp", "2", "--hardware", "a100",
                   "--num-gpu-blocks", "3328", "--scheduler", "chunked"]
"""Vidur's own event loop takes 24 s on it; servesim's whole process: <= 1 CPU s."""
CONV_ARGS = ["--trace", CONV["trace"], "--model", "llama-3-8b", "--hardware", "h100"]
COMMAND_TARGETS = {  # case: (replay arguments, wall seconds of the whole command, best of 3)
    "command: conv chunked+paged-prefix": (CONV_ARGS + ["--scheduler", "chunked",
                                                        "--allocator", "paged-prefix"], 8.0),
    "command: conv draft speculation": (CONV_ARGS + ["--speculator", "draft",
                                                     "--draft-model", "llama-3.2-1b"], 12.0),
}

CONFIGURATIONS = {  # --configurations: label -> options on top of CONV (the first is the unit)
    "continuous + paged": {},
    "continuous + paged-prefix": {"allocator": "paged-prefix"},
    "continuous + radix": {"allocator": "radix"},
    "continuous + contiguous": {"allocator": "contiguous"},
    "static": {"scheduler": "static"},
    "orca + contiguous": {"scheduler": "orca", "allocator": "contiguous"},
    "chunked + paged": {"scheduler": "chunked"},
    "chunked + paged-prefix": POLICIES["chunked+paged-prefix"],
    "chunked + radix": {"scheduler": "chunked", "allocator": "radix"},
    "1,500 blocks, recompute": {"num_gpu_blocks": 1500},
    "1,500 blocks, swap": {"num_gpu_blocks": 1500, "preemption": "swap"},
    "priority queue, 2 classes": {"priority_mix": "0.3,0.7", "queue_policy": "priority"},
    "draft speculation": POLICIES["draft"],
    "draft speculation + chunked": {**POLICIES["draft"], "scheduler": "chunked"},
    "tree speculation": {"speculator": "tree"},
    "ngram speculation": {"speculator": "ngram"},
    "cascade speculation": {"speculator": "cascade", "draft_model": "llama-3.2-1b"},
    "lookahead decoding": {"speculator": "lookahead"},
    "block diffusion": {"decoding": "block-diffusion"},
    "n = 2 samples": {"n": 2},
    "beam search, width 2": {"beam_width": 2},
    "4 replicas, least-outstanding": {"replicas": 4, "router": "least-outstanding"},
    "4 replicas, prefix-affinity": {"replicas": 4, "router": "prefix-affinity",
                                    "allocator": "paged-prefix"},
    "disaggregated 1:3": {"disaggregate": "1:3"},
    "disaggregated 1:3, chunked": {"disaggregate": "1:3", "scheduler": "chunked"},
    "roofline cost model": {"cost_model": "roofline"},
    "llama-2-70b, TP 2": {"model": "llama-2-70b", "tp": 2},
    "mixtral-8x7b, TP 2": {"model": "mixtral-8x7b", "tp": 2},
}
"""`--configurations`: one run of each on the full Azure conv trace (Llama-3-8B/H100 unless
named), reported as a multiple of the first measured in the same run (host-speed neutral)."""

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from sim.api import simulate
from sim.config import ReplayOptions, resolve
start, cpu_start = time.perf_counter(), time.process_time()
summary = simulate(resolve(ReplayOptions(**json.loads({options!r})))).summary
wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({{"wall_s": wall_s, "cpu_s": cpu_s, "summary": summary,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def cases(million: bool) -> dict[str, dict]:
    traces = {"azure-conv": str(AZURE / "AzureLLMInferenceTrace_conv.csv"),
              "azure-code": str(AZURE / "AzureLLMInferenceTrace_code.csv")}
    if million:
        traces["synthetic-1M"] = MILLION
    found = {f"{name} {label}": {"trace": trace, "model": "llama-3-8b", "hardware": "h100", **policy}
             for name, trace in traces.items() for label, policy in POLICIES.items()}
    for path in sorted((SHARED_TRACES / "vidur_workloads").glob("*.csv")):
        found[f"vidur {path.stem}"] = {"trace": str(path), **VIDUR}
    return found


def run_case(options: dict) -> dict:
    code = CHILD.format(root=str(ROOT), options=json.dumps(options))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1]}
    result = json.loads(done.stdout)
    requests = result["summary"]["requests_total"]
    result.update(requests=requests, requests_per_s=requests / result["wall_s"],
                  requests_per_cpu_s=requests / result["cpu_s"])
    return result


def same_summary(a: dict, b: dict) -> bool:
    """Equal keys, and values equal within 1e-9 relative (the fast-forward's guarantee)."""
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0):
                return False
        elif x != y:
            return False
    return True


def limited(options: dict, max_requests: int | None) -> dict:
    """`options` on at most `max_requests` requests of its trace."""
    if not max_requests:
        return options
    trace = options["trace"]
    if trace.startswith("synthetic:"):
        return {**options, "trace": trace.replace("n=1000000", f"n={max_requests}")}
    return {**options, "max_requests": max_requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[],
                        help="run only cases whose name contains this (repeatable: any of them)")
    parser.add_argument("--max-requests", type=int, help="cap file traces at N rows")
    parser.add_argument("--million", action="store_true", help="add the 1M-request trace")
    parser.add_argument("--baseline-cap", type=int, default=100_000,
                        help="run the baseline of bigger cases on their first N requests")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each cost model on the bundled trace (fastest kept)")
    parser.add_argument("--targets", action="store_true",
                        help="run only the speed targets of issue #17 (see above)")
    parser.add_argument("--configurations", action="store_true",
                        help="run only the survey of configurations (see above)")
    args = parser.parse_args()
    if args.targets or args.configurations:
        results = (run_targets(args.only, args.million) if args.targets
                   else run_configurations(args.only, args.max_requests))
        if args.out:
            write_results(results, Path(args.out))
        return 0
    results = {}
    print(f"{'case':<38} {'requests':>9} {'wall s':>7} {'cpu s':>7} {'req/cpu-s':>9} "
          f"{'peak MiB':>8} {'off cpu s':>9} {'speedup':>7}")
    for name, options in cases(args.million).items():
        if args.only and not any(part in name for part in args.only):
            continue
        if args.max_requests and not options["trace"].startswith("synthetic:"):
            options = {**options, "max_requests": args.max_requests}
        fast = run_case(options)
        if "error" in fast:
            print(f"{name:<38} error: {fast['error']}")
            results[name] = fast
            continue
        capped = fast["requests"] > args.baseline_cap
        base_options = limited(options, args.baseline_cap if capped else None)
        base = run_case({**base_options, "fast_forward": False})
        if "error" in base:
            print(f"{name:<38} baseline error: {base['error']}")
            results[name] = {"fast_forward": fast, "baseline": base}
            continue
        if not capped and not same_summary(fast["summary"], base["summary"]):
            raise SystemExit(f"{name}: fast-forward changed the summary")
        speedup = fast["requests_per_cpu_s"] / base["requests_per_cpu_s"]
        results[name] = {"fast_forward": fast, "baseline": base, "speedup": speedup,
                         "baseline_requests": base["requests"]}
        if args.out:  # after every case: a long run that is stopped keeps what it measured
            write_results(results, Path(args.out))
        print(f"{name:<38} {fast['requests']:>9} {fast['wall_s']:>7.2f} {fast['cpu_s']:>7.2f} "
              f"{fast['requests_per_cpu_s']:>9.0f} {fast['peak_rss_mib']:>8.0f} "
              f"{base['cpu_s']:>9.2f}{'*' if capped else ' '} {speedup:>6.1f}x", flush=True)
    print("* baseline on the first --baseline-cap requests; speedup in requests per CPU-second")
    if not args.only or any(part in COST_MODELS_CASE for part in args.only):
        results[COST_MODELS_CASE] = compare_cost_models(args.repeats)
    if args.out:
        write_results(results, Path(args.out))
    return 0


def run_configurations(only: list[str], max_requests: int | None) -> dict:
    """Each of `CONFIGURATIONS` once, with its CPU seconds as a multiple of the first's."""
    print(f"{'configuration (Azure conv)':<38} {'iterations':>10} {'cpu s':>7} {'ratio':>6}")
    results, unit_cpu_s = {}, None
    for name, extra in CONFIGURATIONS.items():
        if unit_cpu_s is not None and only and not any(part in name for part in only):
            continue
        run = run_case(limited({**CONV, **extra}, max_requests))
        if "error" in run:
            print(f"{name:<38} error: {run['error']}")
            results[name] = run
            continue
        unit_cpu_s = unit_cpu_s or run["cpu_s"]
        results[name] = {"options": extra, "cpu_s": run["cpu_s"],
                         "ratio": run["cpu_s"] / unit_cpu_s,
                         "iterations": run["summary"]["iterations"]}
        print(f"{name:<38} {run['summary']['iterations']:>10} {run['cpu_s']:>7.2f} "
              f"{run['cpu_s'] / unit_cpu_s:>5.1f}x", flush=True)
    return results


def run_targets(only: list[str], million: bool) -> dict:
    """Each target row once (the commands best of 3), printed against its target."""
    print(f"{'target (issue #17)':<38} {'measured':>9} {'target':>7} {'ratio':>6}")
    results = {}

    def report(name: str, value: float, target: float, unit: str, extra: str = "") -> None:
        verdict = "ok" if value <= target else "MISSED"
        print(f"{name:<38} {value:>8.2f}{unit} {target:>6.1f}{unit} {value / target:>5.2f}x "
              f"{verdict}{extra}", flush=True)
        results[name] = {"measured": value, "target": target, "unit": unit}

    for name, (options, target_cpu_s) in CPU_TARGETS.items():
        if (only and not any(part in name for part in only)) or ("1M" in name and not million):
            continue
        run = run_case(options)
        if "error" in run:
            print(f"{name:<38} error: {run['error']}")
            continue
        extra = ""
        if "1M" in name:
            extra = f"  peak {run['peak_rss_mib']:.0f} MiB (target {MILLION_PEAK_MIB})"
        report(name, run["cpu_s"], target_cpu_s, "s", extra)
    if not only or any(part in "vidur synth_10k whole process" for part in only):
        report("vidur synth_10k whole process (cpu)", replay_command(VIDUR_SYNTH_10K)[1], 1.0, "s")
    for name, (arguments, target_wall_s) in COMMAND_TARGETS.items():
        if only and not any(part in name for part in only):
            continue
        report(name, min(replay_command(arguments)[0] for _ in range(3)), target_wall_s, "s")
    return results


def replay_command(arguments: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole `servesim replay` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sim.cli", "replay", *arguments], cwd=ROOT,
                          capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"servesim replay {' '.join(arguments)} failed: {done.stderr.strip()}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall_s, cpu_s


def compare_cost_models(repeats: int) -> dict:
    """CPU time of the roofline and the measured model on the bundled trace, and their ratio."""
    print(f"\n{'cost model (bundled trace)':<38} {'requests':>9} {'iterations':>10} {'cpu s':>7} "
          f"{'ratio':>7}")
    fastest = {}
    for cost_model in ("roofline", "measured"):
        runs = [run_case({**BUNDLED, "cost_model": cost_model}) for _ in range(max(1, repeats))]
        errors = [run["error"] for run in runs if "error" in run]
        if errors:
            print(f"{cost_model:<38} error: {errors[0]}")
            return {"error": errors[0]}
        fastest[cost_model] = min(runs, key=lambda run: run["cpu_s"])
    roofline_cpu_s = fastest["roofline"]["cpu_s"]
    for cost_model, run in fastest.items():
        print(f"{run['summary']['cost_model']:<38} {run['requests']:>9} "
              f"{run['summary']['iterations']:>10} {run['cpu_s']:>7.2f} "
              f"{run['cpu_s'] / roofline_cpu_s:>6.2f}x", flush=True)
    per_iteration = ((fastest["measured"]["cpu_s"] / fastest["measured"]["summary"]["iterations"])
                     / (roofline_cpu_s / fastest["roofline"]["summary"]["iterations"]))
    print(f"{'measured / roofline per iteration':<38} {'':>9} {'':>10} {'':>7} "
          f"{per_iteration:>6.2f}x  (the measured model's faster steps are more iterations)")
    return {**fastest, "measured_cpu_ratio": fastest["measured"]["cpu_s"] / roofline_cpu_s,
            "measured_cpu_ratio_per_iteration": per_iteration}


def write_results(results: dict, path: Path) -> None:
    """The results as JSON, without the (long) summaries the runs were checked with."""
    slim = {name: {key: ({k: v for k, v in value.items() if k != "summary"}
                         if isinstance(value, dict) else value)
                   for key, value in entry.items()}
            for name, entry in results.items()}
    path.write_text(json.dumps(slim, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
