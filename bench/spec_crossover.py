"""Speculative decoding's batch-size crossover: TPOT without / with speculation against load.

Llama-3-8B on one H100 with a Llama-3.2-1B draft model (`--speculator draft`), k = 4, i.i.d.
acceptance 0.8, requests of 128 prompt and 128 output tokens, continuous batching, two engine
cost models: `bench/h100_gpu_bound.json` (the fitted H100 roofline with the engine's CPU
overheads overlapped, i.e. zero) and `--calibration shared-fit` (the same fit with its CPU
overhead: 5.4 ms per step plus 0.23 ms per sequence, from vLLM v0-era profiles).

Load is closed-loop concurrency: B requests arrive together and run as one batch of B, so the
batch size is the load and TPOT compares the two at the same batch (an open-loop Poisson load
would mix in queueing: plain decoding saturates first, which flatters speculation). Each row
runs the same requests without and with speculation, repeated over max(1, 64 / B) seeds
(acceptance streams) so that every row averages at least 64 requests. Regenerate the tables
in docs/speculative.md with

    .venv/bin/python bench/spec_crossover.py
    .venv/bin/python bench/spec_crossover.py --speculators   # draft vs ngram vs lookahead

The `--speculators` table puts the three side by side on the GPU-bound engine. Lookahead's
pass carries 1 + (W + G)(N - 1) tokens per request against draft's and ngram's 1 + k, so its
linear layers reach the roofline's ridge (compute-bound) at a batch (W + G)(N - 1) / k times
smaller; the table states each one's pass tokens at the crossover and the ridge. Acceptance:
draft 0.8 (as above); ngram and lookahead 0.45 i.i.d. at k = N - 1 = 4 (1.8 tokens per step, the
step compression Fu et al. report for lookahead on MT-bench with Llama-2-7B-chat; prompt lookup
on chat is lower still, so ngram is shown at the same rate only for the cost comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.types import Request  # noqa: E402
from sim.api import simulate  # noqa: E402
from sim.assembly import build_cost_model  # noqa: E402
from sim.config import ReplayOptions, resolve  # noqa: E402
from traces import Trace  # noqa: E402

BATCH_SIZES = (1, 4, 16, 64, 128, 256, 512, 1024)
PROMPT_TOKENS, OUTPUT_TOKENS = 128, 128
GPU_BOUND = str(Path(__file__).with_name("h100_gpu_bound.json"))
BASE = dict(model="llama-3-8b", hardware="h100", max_num_seqs=1024, seed=0)
SPEC = dict(speculator="draft", draft_model="llama-3.2-1b", spec_k=4, spec_acceptance="0.8")


def closed_loop_trace(batch_size: int) -> Trace:
    requests = [Request(i, 0.0, PROMPT_TOKENS, OUTPUT_TOKENS) for i in range(batch_size)]
    return Trace(name=f"closed-loop x{batch_size}", requests=requests, invalid_rows=[], notes=[])


def run(batch_size: int, **options) -> dict:
    """Summary keys used below, averaged over the seeds (every run has the same weight:
    its requests all have the same length)."""
    runs = []
    for seed in range(max(1, 64 // batch_size)):
        config = resolve(ReplayOptions(**(BASE | options | {"seed": seed})),
                         closed_loop_trace(batch_size))
        runs.append(simulate(config).summary)
    keys = ("tpot_mean_s", "spec_tokens_per_step_mean", "spec_k_mean", "spec_draft_time_share")
    return {key: (sum(r[key] for r in runs) / len(runs) if key in runs[0] else None)
            for key in keys}


def crossover(batch_sizes=BATCH_SIZES, calibration: str | None = GPU_BOUND,
              **spec_overrides) -> list[dict]:
    rows = []
    for batch in batch_sizes:
        plain = run(batch, calibration=calibration)
        spec = run(batch, calibration=calibration, **(SPEC | spec_overrides))
        rows.append({
            "batch": batch,
            "tpot_plain_s": plain["tpot_mean_s"],
            "tpot_spec_s": spec["tpot_mean_s"],
            "speedup": plain["tpot_mean_s"] / spec["tpot_mean_s"],
            "tokens_per_step": spec["spec_tokens_per_step_mean"],
            "k_mean": spec["spec_k_mean"],
            "draft_share": spec["spec_draft_time_share"],
        })
    return rows


def roofline_terms(batch_sizes=BATCH_SIZES, k: int = 4) -> list[str]:
    """Per-step terms of the target at batch B: a decode of B tokens vs a verify of B (1+k)."""
    options = ReplayOptions(**(BASE | {"calibration": GPU_BOUND}))
    cost = build_cost_model(resolve(options, closed_loop_trace(1)))
    ctx = PROMPT_TOKENS + OUTPUT_TOKENS // 2
    lines = []
    for batch in batch_sizes:
        for label, new in (("decode", 1), ("verify", 1 + k)):
            b = cost.breakdown([new] * batch, [ctx] * batch, batch * new)
            lin, attn, _ = b.groups
            lines.append(
                f"| {batch} | {label} | {batch * new} | {lin.compute_s * 1e3:.2f} | "
                f"{lin.memory_s * 1e3:.2f} | {attn.compute_s * 1e3:.2f} | "
                f"{attn.memory_s * 1e3:.2f} | {b.overhead_s * 1e3:.2f} | {b.time_s * 1e3:.2f} |")
    return lines


SPECULATOR_ROWS = (
    ("draft, k=4", SPEC),
    ("ngram, k=4", dict(speculator="ngram", spec_k=4, spec_acceptance="0.45")),
    ("lookahead W=5 N=5 G=5", dict(speculator="lookahead", lookahead_window=5,
                                   lookahead_ngram=5, lookahead_guesses=5,
                                   spec_acceptance="0.45")),
    ("lookahead W=15 N=5 G=15", dict(speculator="lookahead", lookahead_window=15,
                                     lookahead_ngram=5, lookahead_guesses=15,
                                     spec_acceptance="0.45")),
)


def pass_tokens(options: dict) -> int:
    """Tokens one request's verify pass carries."""
    if options["speculator"] == "lookahead":
        return 1 + (options["lookahead_window"] + options["lookahead_guesses"]) * (
            options["lookahead_ngram"] - 1)
    return 1 + options["spec_k"]


def ridge_tokens() -> int:
    """The fewest tokens per step at which the target's linear layers are compute-bound."""
    cost = build_cost_model(resolve(ReplayOptions(**(BASE | {"calibration": GPU_BOUND})),
                                    closed_loop_trace(1)))
    ctx = PROMPT_TOKENS + OUTPUT_TOKENS // 2
    tokens = 1
    while True:
        lin = cost.breakdown([tokens], [ctx], tokens).groups[0]
        if lin.compute_s >= lin.memory_s:
            return tokens
        tokens += 1


def speculator_table(batch_sizes=BATCH_SIZES) -> None:
    """Speedup of each speculator against plain decoding per batch, and its crossover."""
    print(f"Linear layers turn compute-bound at {ridge_tokens()} tokens per step.\n")
    print("| speculator | pass tokens / request | " +
          " | ".join(f"B={b}" for b in batch_sizes) + " | stops paying at B | "
          "pass tokens per step there |")
    print("|---|---:|" + "---:|" * (len(batch_sizes) + 2))
    plain = {b: run(b, calibration=GPU_BOUND)["tpot_mean_s"] for b in batch_sizes}
    for label, options in SPECULATOR_ROWS:
        speedups = {b: plain[b] / run(b, calibration=GPU_BOUND, **options)["tpot_mean_s"]
                    for b in batch_sizes}
        stop = next((b for b in batch_sizes if speedups[b] < 1.0), None)
        tokens = pass_tokens(options)
        print(f"| {label} | {tokens} | " +
              " | ".join(f"{speedups[b]:.2f}x" for b in batch_sizes) +
              f" | {_fmt(stop, 'd')} | {_fmt(stop and stop * tokens, 'd')} |")
    print()


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_table(rows: list[dict], dynamic: list[dict] | None) -> None:
    columns = ["batch (concurrent requests)", "TPOT plain (ms)", "TPOT spec k=4 (ms)", "speedup",
               "tokens/verify", "draft time share"]
    if dynamic:
        columns += ["speedup, --spec-dynamic", "mean k, dynamic"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---:|" * len(columns))
    for i, r in enumerate(rows):
        cells = [f"{r['batch']}", f"{r['tpot_plain_s'] * 1e3:.2f}", f"{r['tpot_spec_s'] * 1e3:.2f}",
                 f"{r['speedup']:.2f}x", _fmt(r["tokens_per_step"], ".2f"),
                 _fmt(r["draft_share"], ".0%")]
        if dynamic:
            d = dynamic[i]
            cells += [f"{d['speedup']:.2f}x", _fmt(d["k_mean"], ".2f")]
        print("| " + " | ".join(cells) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speculators", action="store_true",
                        help="only the draft / ngram / lookahead comparison table")
    if parser.parse_args().speculators:
        speculator_table()
        return
    for title, calibration in (("GPU-bound engine (bench/h100_gpu_bound.json)", GPU_BOUND),
                               ("fitted H100 coefficients with CPU overhead (--calibration "
                                "shared-fit)", "shared-fit")):
        print(f"### {title}\n")
        rows = crossover(calibration=calibration)
        print_table(rows, crossover(calibration=calibration, spec_dynamic=True))
    print("### Target roofline terms per step, GPU-bound engine, context 192 tokens\n")
    print("| batch | pass | tokens | linear compute (ms) | linear memory (ms) | "
          "attention compute (ms) | attention memory (ms) | overheads (ms) | total (ms) |")
    print("|" + "---:|" * 9)
    print("\n".join(roofline_terms()))


if __name__ == "__main__":
    main()
