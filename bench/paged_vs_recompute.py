"""The paged engine against a plain no-cache recompute loop, on the same requests.

    python bench/paged_vs_recompute.py [--model tiny-llama] [--requests 1] [--prompt-tokens 32]
                                       [--output-tokens 1000] [--repeats 3]

Both generate greedily and must produce the same tokens (checked). Each side's time is the
median over `--repeats` runs, on one torch thread (two threads on a shared 2-core machine make
step times erratic). Prints one JSON object whose `speedup` is recompute time / paged time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.kv_cache import KVCache  # noqa: E402
from backend.model import LlamaModel, init_random  # noqa: E402
from backend.recompute import generate_recompute  # noqa: E402
from backend.runner import RealExecutor, run_wall_clock, seeded_prompt  # noqa: E402
from policies.engine import Engine  # noqa: E402
from policies.kv.paged import PagedAllocator, PagedParams  # noqa: E402
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler  # noqa: E402
from policies.types import Request  # noqa: E402
from sim.cost.catalog import get_model  # noqa: E402

BLOCK_SIZE = 16


def run_paged(model: LlamaModel, requests: list[Request]) -> tuple[float, dict[int, list[int]]]:
    spec = model.spec
    num_blocks = sum(-(-r.total_tokens // BLOCK_SIZE) for r in requests)
    allocator = PagedAllocator(PagedParams(block_size=BLOCK_SIZE, num_blocks=num_blocks))
    kv = KVCache(num_layers=spec.num_layers, num_blocks=num_blocks, block_size=BLOCK_SIZE,
                 num_kv_heads=spec.num_kv_heads, head_dim=spec.attn_head_dim,
                 dtype=torch.float32, device="cpu")
    executor = RealExecutor(model, kv, allocator)
    engine = Engine(ContinuousScheduler(ContinuousParams(), allocator), executor,
                    max_model_len=spec.max_model_len)
    start = time.perf_counter()
    run_wall_clock(engine, requests)
    elapsed = time.perf_counter() - start
    return elapsed, {r.request_id: executor.output_ids(r) for r in requests}


def run_recompute(model: LlamaModel, requests: list[Request], seed: int):
    start = time.perf_counter()
    outputs = {r.request_id: generate_recompute(model, seeded_prompt(r, model.spec.vocab_size,
                                                                     seed), r.output_tokens)
               for r in requests}
    return time.perf_counter() - start, outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--output-tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = get_model(args.model)
    model = init_random(LlamaModel(spec), args.seed).eval()
    requests = [Request(i, 0.0, args.prompt_tokens, args.output_tokens)
                for i in range(args.requests)]
    paged_s, recompute_s = [], []
    for _ in range(args.repeats):
        seconds, paged_out = run_paged(model, requests)
        paged_s.append(seconds)
        seconds, recompute_out = run_recompute(model, requests, seed=0)
        recompute_s.append(seconds)
        if paged_out != recompute_out:
            print("error: the paged engine's tokens differ from the recompute loop's",
                  file=sys.stderr)
            return 1
    paged, recompute = statistics.median(paged_s), statistics.median(recompute_s)
    print(json.dumps({
        "model": spec.name, "requests": args.requests, "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens, "repeats": args.repeats, "torch_threads": 1,
        "paged_median_s": round(paged, 4), "recompute_median_s": round(recompute, 4),
        "paged_tok_s": round(args.requests * args.output_tokens / paged, 1),
        "speedup": round(recompute / paged, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
