"""The shipped measured kernel tables against the GPU this runs on, kernel by kernel.

    python bench/kernel_tables_check.py [--hardware NAME] [--out FILE.json]

`--cost-model measured` prices every step on a tabled GPU from aiconfigurator's kernel tables
(measured inside vLLM). This re-times the kernels those tables price, at the per-GPU shapes of
the recorded runs' models, on the card at hand: the dense GEMMs (cuBLAS through torch, as vLLM
runs bf16 linears), decode attention (torch's fused SDPA kernels, FlashAttention, cuDNN and
memory-efficient, on contiguous KV, and servesim's Triton paged kernel) and causal prefill
attention (the SDPA kernels). Each point gives the table's time per call and the measured one
(CUDA-graph replays of calls cycled over enough copies of the operands that none is served
from L2), so a table that is off for this card, or a shape where vLLM's kernel trails what
the card can do, shows as a ratio far from 1.

Without a CUDA device it writes the table side only (how CI checks it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.kernel_bandwidth import median_cuda_ms  # noqa: E402
from sim.assembly import build_cost_model  # noqa: E402
from sim.config import ReplayOptions, resolve  # noqa: E402

CASES = (("llama-2-7b", 1), ("llama-3-8b", 1), ("mixtral-8x7b", 2), ("llama-2-70b", 4))
"""(model, TP degree): the recorded runs' models at their TP, Llama-3-8B as the default."""
DECODE_POINTS = tuple((batch, context) for batch in (1, 8, 32, 128) for context in (256, 700, 2048))
PREFILL_TOKENS = (128, 512, 2048)
GEMM_TOKENS = (1, 16, 128, 1024, 4096)
FLUSH_BYTES = 256 * 1024**2
"""Operands cycled per timed call add up to at least this: several times an H100's 50 MB L2."""
MAX_COPIES = 64
SDPA_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION")
"""torch's fused attention kernels; one that refuses a shape is recorded as an error."""
IMPLEMENTATIONS = ("cublas", "triton_paged", *(f"sdpa_{b.lower()}" for b in SDPA_BACKENDS))
_PLACEHOLDER_TRACE = "synthetic:n=1,arrivals=poisson:1,prompt=fixed:8,output=fixed:8"


def table_points(model: str, tp: int, hardware: str) -> list[dict]:
    """Every point of one case with its table time per call (None where the table does not
    hold the point and the cost model extrapolates)."""
    options = ReplayOptions(model=model, tp=tp, hardware=hardware, cost_model="measured",
                            trace=_PLACEHOLDER_TRACE)
    cost = build_cost_model(resolve(options))
    spec = cost.model
    shape = {"heads": spec.num_heads // tp, "kv_heads": max(1, spec.num_kv_heads // tp),
             "head_dim": spec.attn_head_dim}
    layers = {kind.decode_name: kind.layers for kind in cost._kinds}
    layers |= {kind.prefill_name: kind.layers for kind in cost._kinds}
    gemms = {f"gemm {name}": (n, k, count) for name, n, k, count in cost._gemm_shapes()}
    points: list[dict] = []

    def add(kind: str, kernel, point: dict) -> None:
        per_call_layers = gemms[kernel.name][2] if kind == "gemm" else layers[kernel.name]
        points.append({"model": model, "tp": tp, "kind": kind, "kernel": kernel.name, **point,
                       "table_us": None if kernel.extrapolated
                       else round(kernel.time_s / per_call_layers * 1e6, 3)})

    for batch, context in DECODE_POINTS:
        for kernel in cost.breakdown([1] * batch, [context] * batch).kernels:
            if kernel.name.startswith("decode attention"):
                add("decode", kernel, {"batch": batch, "context": context, **shape})
    for tokens in PREFILL_TOKENS:
        for kernel in cost.breakdown([tokens], [0]).kernels:
            if kernel.name.startswith("prefill attention"):
                add("prefill", kernel, {"tokens": tokens, **shape})
    for tokens in GEMM_TOKENS:
        for kernel in cost.breakdown([tokens], [0]).kernels:
            if kernel.name in gemms and gemms[kernel.name][0] >= 128:
                n, k, _ = gemms[kernel.name]
                add("gemm", kernel, {"m": tokens, "n": n, "k": k})
    return points


def _per_call_us(make_operands: Callable[[], tuple], call: Callable, bytes_per_call: int) -> float:
    """Median time of one call, replayed in a CUDA graph over enough operand copies to keep
    them out of L2 (a plain loop where a kernel cannot be captured)."""
    import torch

    copies = max(1, min(MAX_COPIES, math.ceil(FLUSH_BYTES / max(bytes_per_call, 1))))
    operands = [make_operands() for _ in range(copies)]

    def loop() -> None:
        for args in operands:
            call(*args)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        loop()
        loop()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    replay = loop
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loop()
        replay = graph.replay
    except RuntimeError:
        torch.cuda.synchronize()
    replay_ms = median_cuda_ms(replay, repeats=10, warmup=2)
    del operands
    return replay_ms * 1e3 / copies


def _sdpa(backend_name: str, causal: bool) -> Callable:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def call(q, k, v):
        with sdpa_kernel([backend]):
            torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])
    return call


def measure(point: dict) -> dict:
    """The point's measured time per call, by implementation (an error string where one
    cannot run the shape)."""
    import torch

    dtype, device = torch.bfloat16, "cuda"
    results: dict[str, float | str] = {}

    def attempt(name: str, make: Callable[[], tuple], call: Callable, nbytes: int) -> None:
        try:
            results[name] = round(_per_call_us(make, call, nbytes), 3)
        except (RuntimeError, ValueError) as error:  # a backend that refuses the shape
            results[name] = f"error: {str(error).splitlines()[0][:160]}"
            torch.cuda.synchronize()

    if point["kind"] == "gemm":
        m, n, k = point["m"], point["n"], point["k"]
        attempt("cublas", lambda: (torch.randn(m, k, dtype=dtype, device=device),
                                   torch.randn(n, k, dtype=dtype, device=device)),
                torch.nn.functional.linear, 2 * (m * k + n * k + m * n))
        return results
    heads, kv_heads, dim = point["heads"], point["kv_heads"], point["head_dim"]
    if point["kind"] == "prefill":
        tokens = point["tokens"]
        make = lambda: (torch.randn(1, heads, tokens, dim, dtype=dtype, device=device),  # noqa: E731
                        torch.randn(1, kv_heads, tokens, dim, dtype=dtype, device=device),
                        torch.randn(1, kv_heads, tokens, dim, dtype=dtype, device=device))
        nbytes = 2 * tokens * dim * (2 * heads + 2 * kv_heads)
        for backend in SDPA_BACKENDS:
            attempt(f"sdpa_{backend.lower()}", make, _sdpa(backend, causal=True), nbytes)
        return results
    batch, context = point["batch"], point["context"]
    kv_bytes = 2 * 2 * batch * context * kv_heads * dim
    make = lambda: (torch.randn(batch, heads, 1, dim, dtype=dtype, device=device),  # noqa: E731
                    torch.randn(batch, kv_heads, context, dim, dtype=dtype, device=device),
                    torch.randn(batch, kv_heads, context, dim, dtype=dtype, device=device))
    for backend in SDPA_BACKENDS:
        attempt(f"sdpa_{backend.lower()}", make, _sdpa(backend, causal=False), kv_bytes)
    from backend.kernels.triton_paged import paged_decode_attention

    block = 16
    pages = batch * -(-context // block)

    def make_paged() -> tuple:
        k = torch.randn(pages, block, kv_heads, dim, dtype=dtype, device=device)
        tables = torch.randperm(pages, device=device, dtype=torch.int32).view(batch, -1)
        return (torch.randn(batch, heads, dim, dtype=dtype, device=device), k,
                torch.randn_like(k), tables,
                torch.full((batch,), context, device=device, dtype=torch.int32))

    attempt("triton_paged", make_paged,
            lambda q, k, v, t, lens: paged_decode_attention(q, k, v, t, lens, dim ** -0.5),
            kv_bytes)
    results["kv_bytes"] = kv_bytes
    return results


def copy_bandwidth_gb_s() -> float:
    """Device-to-device copy of 1 GiB: bytes read + written per second."""
    import torch

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    per_call_us = _per_call_us(lambda: (dst, src), lambda d, s: d.copy_(s), 2 << 30)
    return round(2 * src.numel() / per_call_us / 1e3, 1)


def summarize(points: list[dict]) -> list[dict]:
    """Per case and kernel kind: how the best measured implementation compares with the table."""
    groups: dict[tuple, list[float]] = {}
    for point in points:
        best = point.get("best_us")
        if best is not None and point["table_us"]:
            groups.setdefault((point["model"], point["tp"], point["kind"]), []).append(
                best / point["table_us"])
    return [{"model": model, "tp": tp, "kind": kind, "points": len(ratios),
             "measured_over_table_median": round(statistics.median(ratios), 3),
             "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
            for (model, tp, kind), ratios in groups.items()]


def _detected_hardware() -> str:
    """The CUDA card's catalog name (`servesim replay --executor real`'s own detection)."""
    import torch

    if not torch.cuda.is_available():
        return "h100"
    from backend.replay import detect_hardware

    return detect_hardware()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware",
                        help="the catalog hardware whose tables are checked (default: the CUDA "
                             "card's own, h100 without one)")
    parser.add_argument("--out", help="write the points and summary as JSON here")
    args = parser.parse_args()
    import torch

    try:
        hardware = args.hardware or _detected_hardware()
        points = [p for model, tp in CASES for p in table_points(model, tp, hardware)]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result: dict = {"hardware": hardware, "device": None, "points": points}

    def write() -> None:
        result["summary"] = summarize(points)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    if torch.cuda.is_available():
        result["device"] = torch.cuda.get_device_name()
        result["torch"] = torch.__version__
        result["copy_gb_s"] = copy_bandwidth_gb_s()
        for index, point in enumerate(points):
            point.update(measure(point))
            timed = [v for name, v in point.items()
                     if name in IMPLEMENTATIONS and isinstance(v, float)]
            point["best_us"] = min(timed) if timed else None
            if point["table_us"] and point["best_us"]:
                point["measured_over_table"] = round(point["best_us"] / point["table_us"], 3)
            if index + 1 == len(points) or points[index + 1]["model"] != point["model"]:
                write()  # each case as it ends: a run stopped by a time limit keeps those done
    else:
        print("no CUDA device: the table side only")
    write()
    for row in result["summary"]:
        print(json.dumps(row))
    return 0

if __name__ == "__main__":
    sys.exit(main())
