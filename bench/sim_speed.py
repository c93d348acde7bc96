"""Simulator speed: simulated requests per wall-second and peak RSS, one fresh process per case.

    python bench/sim_speed.py [--only SUBSTRING] [--max-requests N] [--million] [--out FILE.json]

Cases: the full Azure conv and code traces (and, with --million, a 1,000,000-request synthetic
trace), each with continuous+paged, chunked+paged-prefix and draft speculation on
Llama-3-8B/H100; and every workload in ../shared/traces/vidur_workloads with Llama-2-70B, TP 2,
A100, block 16, batch cap 128. Each case runs in its own interpreter so its peak RSS
(ru_maxrss) is its own; wall time covers trace loading, resolve and simulate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACES = ROOT.parent / "shared" / "traces"
AZURE = SHARED_TRACES / "azure_llm_inference_2023"
MILLION = ("synthetic:n=1000000,arrivals=poisson:50,prompt=uniform:64:2048,"
           "output=uniform:16:512")
POLICIES = {
    "continuous+paged": {"scheduler": "continuous", "allocator": "paged"},
    "chunked+paged-prefix": {"scheduler": "chunked", "allocator": "paged-prefix"},
    "draft": {"speculator": "draft", "draft_model": "llama-3.2-1b"},
}
VIDUR = {"model": "llama-2-70b", "tp": 2, "hardware": "a100", "block_size": 16,
         "max_num_seqs": 128}

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from sim.api import simulate
from sim.config import ReplayOptions, resolve
start, cpu_start = time.perf_counter(), time.process_time()
summary = simulate(resolve(ReplayOptions(**json.loads({options!r})))).summary
wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({{"wall_s": wall_s, "cpu_s": cpu_s, "requests": summary["requests_total"],
                  "finished": summary["requests_finished"],
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
    result["requests_per_s"] = result["requests"] / result["wall_s"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--max-requests", type=int, help="cap file traces at N rows")
    parser.add_argument("--million", action="store_true", help="add the 1M-request trace")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    results = {}
    print(f"{'case':<44} {'requests':>9} {'wall s':>8} {'req/s':>9} {'peak MiB':>9}")
    for name, options in cases(args.million).items():
        if args.only not in name:
            continue
        if args.max_requests and not options["trace"].startswith("synthetic:"):
            options = {**options, "max_requests": args.max_requests}
        result = results[name] = run_case(options)
        if "error" in result:
            print(f"{name:<44} error: {result['error']}")
            continue
        print(f"{name:<44} {result['requests']:>9} {result['wall_s']:>8.2f} "
              f"{result['requests_per_s']:>9.0f} {result['peak_rss_mib']:>9.0f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
