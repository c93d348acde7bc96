"""Achieved memory bandwidth of the Triton paged decode kernel against the card's measured
copy bandwidth (CUDA only; on a machine without a GPU it says so and exits 0).

    python bench/kernel_bandwidth.py [--batch 64] [--context 4096] [--out FILE.json]

Decode attention reads every cached K/V byte once, so its bandwidth is (K + V bytes of the
batch's contexts) / kernel time. The reference is a device-to-device copy of a buffer larger
than the L2 cache (bytes read + bytes written) / time. Times are medians of CUDA-event timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def median_cuda_ms(fn, repeats: int = 50, warmup: int = 5) -> float:
    """Median CUDA-event time of `fn()` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--out")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the kernel bandwidth benchmark needs a GPU")
        return 0
    from backend.kernels.triton_paged import paged_decode_attention

    dtype, device = torch.bfloat16, "cuda"
    pages_per_seq = args.context // args.block_size
    num_pages = args.batch * pages_per_seq
    k = torch.randn(num_pages, args.block_size, args.kv_heads, args.head_dim, dtype=dtype,
                    device=device)
    v = torch.randn_like(k)
    tables = torch.randperm(num_pages, device=device, dtype=torch.int32).view(args.batch, -1)
    q = torch.randn(args.batch, args.heads, args.head_dim, dtype=dtype, device=device)
    context_lens = torch.full((args.batch,), args.context, device=device, dtype=torch.int32)
    kernel_ms = median_cuda_ms(lambda: paged_decode_attention(
        q, k, v, tables, context_lens, args.head_dim ** -0.5))
    kv_bytes = 2 * k.numel() * k.element_size()
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_ms = median_cuda_ms(lambda: dst.copy_(src), repeats=20)
    result = {
        "device": torch.cuda.get_device_name(), "batch": args.batch, "context": args.context,
        "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
        "block_size": args.block_size, "dtype": "bf16",
        "kernel_ms": round(kernel_ms, 4), "kv_bytes": kv_bytes,
        "kernel_gb_s": round(kv_bytes / kernel_ms / 1e6, 1),
        "copy_gb_s": round(2 * src.numel() / copy_ms / 1e6, 1),
    }
    result["kernel_share_of_copy"] = round(result["kernel_gb_s"] / result["copy_gb_s"], 3)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
