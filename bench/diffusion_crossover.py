"""Block diffusion against autoregressive decoding over batch size: when does it pay?

Llama-3-8B on one H100, requests of 512 prompt and 256 output tokens, continuous batching,
closed-loop load: B requests arrive together and run as one batch of B (the batch size is the
load). Block diffusion runs blocks of 32 positions in S = 32, 16, 8 steps (1, 2, 4 positions
committed per step, `--diffusion-commit fixed`); its quality at each S is the model's business,
not the simulator's. Priced by the fitted H100 roofline with the engine's CPU overheads
overlapped (`bench/h100_gpu_bound.json`, as bench/spec_crossover.py), so the table shows the
GPU arithmetic; `--measured` prices the same runs with the measured model (vLLM's kernel
latencies on H100 and its engine's fitted per-step overheads). Regenerate the tables in
docs/diffusion.md with

    .venv/bin/python bench/diffusion_crossover.py [--measured]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.types import Request  # noqa: E402
from sim.api import simulate  # noqa: E402
from sim.config import ReplayOptions, resolve  # noqa: E402
from traces import Trace  # noqa: E402

BATCH_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)
PROMPT_TOKENS, OUTPUT_TOKENS = 512, 256
BLOCK = 32
STEPS = (32, 16, 8)
GPU_BOUND = str(Path(__file__).with_name("h100_gpu_bound.json"))
ROOFLINE = dict(cost_model="roofline", calibration=GPU_BOUND)
MEASURED = dict(cost_model="measured")
BASE = dict(model="llama-3-8b", hardware="h100", max_num_seqs=1024, max_num_batched_tokens=16384)


def closed_loop_trace(batch_size: int) -> Trace:
    requests = [Request(i, 0.0, PROMPT_TOKENS, OUTPUT_TOKENS) for i in range(batch_size)]
    return Trace(name=f"closed-loop x{batch_size}", requests=requests, invalid_rows=[], notes=[])


def latency_and_throughput(batch_size: int, pricing: dict, **options) -> tuple[float, float]:
    """(mean end-to-end latency in s, output tokens/s) of the batch (the prefills, the same
    work either way, are included in both)."""
    summary = simulate(resolve(ReplayOptions(**(BASE | pricing | options)),
                               closed_loop_trace(batch_size))).summary
    return summary["e2e_mean_s"], summary["output_throughput_tok_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", action="store_true",
                        help="price with the measured model instead of the GPU-bound roofline")
    pricing = MEASURED if parser.parse_args().measured else ROOFLINE
    header = ["batch", "AR e2e (s)", "AR tok/s"]
    for steps in STEPS:
        header += [f"BD {BLOCK // steps}/step e2e (s)", "tok/s (x AR)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for batch in BATCH_SIZES:
        ar_e2e_s, ar_tok_s = latency_and_throughput(batch, pricing)
        row = [str(batch), f"{ar_e2e_s:.2f}", f"{ar_tok_s:,.0f}"]
        for steps in STEPS:
            e2e_s, tok_s = latency_and_throughput(batch, pricing, decoding="block-diffusion",
                                                  diffusion_block=BLOCK, diffusion_steps=steps)
            row += [f"{e2e_s:.2f}", f"{tok_s:,.0f} ({tok_s / ar_tok_s:.2f})"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
