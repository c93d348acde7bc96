"""The PagedAttention comparison at a fixed KV budget, as a markdown table.

    python bench/kv_memory_table.py [--shared ../shared]

Workloads: the bundled Azure conv slice at 4x its rate; ShareGPT lengths (Llama-2 tokenizer)
with Poisson arrivals; and a multi-turn sessions workload with a shared system prompt (where
prefix caching has something to share). Llama-3-8B on one H100, continuous batching, a pool of
2,500 blocks of 16 tokens (40,000 token slots) for every allocator.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.api import simulate
from sim.config import ReplayOptions, resolve

ALLOCATORS = [("contiguous (reserve max)", dict(allocator="contiguous", reserve="max")),
              ("contiguous (reserve oracle)", dict(allocator="contiguous", reserve="oracle")),
              ("paged", dict(allocator="paged")),
              ("paged-prefix", dict(allocator="paged-prefix")),
              ("radix", dict(allocator="radix"))]


def workloads(shared: Path) -> list[tuple[str, dict]]:
    found = [("bundled Azure conv, 4x rate", dict(rate_scale=4.0))]
    sharegpt = shared / "traces/request_lengths/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
    if sharegpt.exists():
        found.append(("ShareGPT lengths, Poisson 3 req/s",
                      dict(trace=str(sharegpt), arrivals="poisson:3", max_requests=2000)))
    found.append(("sessions: 1k-token system prompt, 4 turns",
                  dict(trace="sessions:n=400,turns=4,system=1024,user=lognormal:150:0.6,"
                             "answer=lognormal:200:0.6,arrivals=poisson:2,think=15")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    print("| workload | allocator | mean batch | output tok/s | P99 TTFT (s) | P99 E2E (s) "
          "| KV held | held but empty | prefix hit | preemptions |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workload, trace_options in workloads(args.shared):
        for name, alloc_options in ALLOCATORS:
            options = ReplayOptions(model="llama-3-8b", hardware="h100", num_gpu_blocks=2500,
                                    **trace_options, **alloc_options)
            s = simulate(resolve(options)).summary
            hit = "-" if s["prefix_hit_rate"] is None else f"{s['prefix_hit_rate']:.0%}"
            print(f"| {workload} | {name} | {s['batch_size_mean']:.1f} | "
                  f"{s['output_throughput_tok_s']:,.0f} | {s['ttft_p99_s']:.1f} | "
                  f"{s['e2e_p99_s']:.1f} | {s['kv_util_mean']:.0%} | {s['kv_frag_mean']:.0%} | "
                  f"{hit} | {s['preemptions']} |")


if __name__ == "__main__":
    main()
