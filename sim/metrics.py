"""Summary metrics, defined as vLLM's serving benchmark defines them.

Per finished request (rejected and unfinished ones are counted, not measured):
- TTFT  = first token time - arrival
- TPOT  = (finish - first token) / (output tokens - 1), only for outputs longer than one token
          (so it excludes the first token)
- ITL   = every gap between consecutive output tokens of a request, pooled over requests
- E2E   = finish - arrival
- queue = first time the request was scheduled - arrival
Percentiles use linear interpolation (numpy's default). A metric with no samples is None
(null in JSON).

Throughputs divide by the simulated span from the first arrival to the end of the run (the
last completion, or the horizon). KV utilization is the share of the pool's slots held by
sequences, and fragmentation the share of held slots holding no KV, both weighted by iteration
duration (so over the time the replica computes). Batch size is the mean number of sequences
per iteration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.engine import Engine
from policies.types import SeqStatus
from sim.config import SimConfig

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e", "queue")
STATS = ("mean", "p50", "p90", "p99")


def _stats(name: str, samples: np.ndarray) -> dict[str, float | None]:
    keys = [f"{name}_{s}_s" for s in STATS]
    if samples.size == 0:
        return dict.fromkeys(keys)
    values = [float(samples.mean()), *(float(v) for v in np.percentile(samples, [50, 90, 99]))]
    return dict(zip(keys, values))


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float | None:
    total = float(weights.sum())
    return float((values * weights).sum() / total) if total > 0 else None


def summarize(config: SimConfig, engines: list[Engine], end_s: float) -> dict[str, Any]:
    """Cluster-wide metrics over every replica's requests and iterations."""
    trace = config.trace
    sequences = [s for engine in engines for s in engine.sequences.values()]
    finished = [s for s in sequences if s.status is SeqStatus.FINISHED]
    finished.sort(key=lambda s: s.seq_id)
    rejected = sum(1 for s in sequences if s.status is SeqStatus.REJECTED)
    rejected += len(trace.invalid_rows)
    total = trace.num_rows

    arrival = np.array([s.request.arrival_time_s for s in finished])
    first_token = np.array([s.token_times_s[0] for s in finished])
    finish = np.array([s.finish_s for s in finished])
    outputs = np.array([s.request.output_tokens for s in finished])
    prompts = np.array([s.request.prompt_tokens for s in finished])
    scheduled = np.array([s.first_scheduled_s for s in finished])
    multi = outputs > 1
    tpot = (finish[multi] - first_token[multi]) / (outputs[multi] - 1)
    itl = [np.diff(np.frombuffer(s.token_times_s, dtype=np.float64)) for s in finished]
    itl_all = np.concatenate(itl) if itl else np.empty(0)

    ttft = first_token - arrival
    e2e = finish - arrival
    summary: dict[str, Any] = {
        "requests_total": total,
        "requests_finished": len(finished),
        "requests_rejected": rejected,
        "requests_unfinished": total - len(finished) - rejected,
    }
    for name, samples in (("ttft", ttft), ("tpot", tpot), ("itl", itl_all), ("e2e", e2e),
                          ("queue", scheduled - arrival)):
        summary.update(_stats(name, samples))

    first_arrival = trace.requests[0].arrival_time_s if trace.requests else 0.0
    span = end_s - first_arrival
    per_s = (lambda x: float(x) / span) if span > 0 else (lambda x: None)
    summary["output_throughput_tok_s"] = per_s(outputs.sum())
    summary["total_throughput_tok_s"] = per_s(outputs.sum() + prompts.sum())
    summary["request_throughput_req_s"] = per_s(len(finished))
    summary["goodput_req_s"] = _goodput(config, ttft, finish, first_token, outputs, per_s)

    logs = [engine.log for engine in engines]
    durations = np.concatenate([np.frombuffer(log.duration_s, dtype=np.float64) for log in logs])
    reserved = np.concatenate([np.asarray(log.kv_reserved_slots, dtype=np.float64) for log in logs])
    filled = np.concatenate([np.asarray(log.kv_filled_slots, dtype=np.float64) for log in logs])
    batch = np.concatenate([np.asarray(log.batch_size, dtype=np.float64) for log in logs])
    frag = np.divide(reserved - filled, reserved, out=np.zeros_like(reserved), where=reserved > 0)
    summary["preemptions"] = sum(s.num_preemptions for s in sequences)
    summary["swaps"] = sum(s.num_swaps for s in sequences)
    summary["recomputed_tokens"] = sum(s.num_recomputed_tokens for s in sequences)
    stats = [engine.scheduler.allocator.stats() for engine in engines]
    summary.update(_prefix_stats({k: sum(st.get(k, 0) for st in stats) for k in stats[0]}))
    summary["kv_util_mean"] = _weighted_mean(reserved / engines[0].kv_total_slots, durations)
    summary["kv_frag_mean"] = _weighted_mean(frag, durations)
    summary["batch_size_mean"] = float(batch.mean()) if batch.size else None
    summary["iterations"] = int(batch.size)
    summary["kv_blocks_total"] = engines[0].scheduler.allocator.num_blocks
    summary["replicas"] = len(engines)
    summary["simulated_span_s"] = span
    return summary


def _prefix_stats(stats: dict[str, int]) -> dict[str, Any]:
    """Hit rates over every admission (re-admissions after preemption included); null when the
    allocator does no prefix caching."""
    queried = stats.get("prefix_query_tokens")
    blocks = stats.get("prefix_query_blocks")
    return {
        "prefix_hit_rate": stats["prefix_hit_tokens"] / queried if queried else None,
        "prefix_hit_rate_blocks": stats["prefix_hit_blocks"] / blocks if blocks else None,
        "prefix_hit_tokens": stats.get("prefix_hit_tokens", 0),
        "evictions": stats.get("evictions", 0),
    }


def _goodput(config, ttft, finish, first_token, outputs, per_s) -> float | None:
    o = config.options
    if o.slo_ttft_s is None and o.slo_tpot_s is None:
        return None
    ok = np.ones(len(ttft), dtype=bool)
    if o.slo_ttft_s is not None:
        ok &= ttft <= o.slo_ttft_s
    if o.slo_tpot_s is not None:
        tpot = np.where(outputs > 1, (finish - first_token) / np.maximum(outputs - 1, 1), 0.0)
        ok &= tpot <= o.slo_tpot_s
    return per_s(int(ok.sum()))
