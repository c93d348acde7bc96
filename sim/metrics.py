"""Summary metrics, defined as vLLM's serving benchmark defines them.

Per finished request (rejected and unfinished ones are counted, not measured):
- TTFT  = first token time - arrival
- TPOT  = (finish - first token) / (output tokens - 1), only for outputs longer than one token
          (so it excludes the first token)
- ITL   = every gap between consecutive output tokens of a request, pooled over requests
- E2E   = finish - arrival
- queue = first time the request was scheduled - arrival (the send time: with the measured
          vLLM engine it includes the frontend's latency before the engine queues it)
Percentiles use linear interpolation (numpy's default). A metric with no samples is None
(null in JSON).

Throughputs divide by the simulated span from the first arrival to the end of the run (the
last completion, or the horizon). KV utilization is the share of the pool's slots held by
sequences, and fragmentation the share of held slots holding no KV, both weighted by iteration
duration (so over the time the replica computes). Batch size is the mean number of sequences
per iteration.

With a speculator other than `none` (the keys are absent with `none`, so plain runs keep their
summary byte for byte), over every verify of every request:
- `spec_tokens_per_step_mean`: tokens emitted per target verify pass (accepted drafts + the
  corrected or bonus token; at most k + 1); `spec_tokens_per_step_share_<n>` its distribution
- `spec_acceptance_rate`: accepted / proposed drafts, every draft after the first rejection
  counted as rejected (so below `--spec-acceptance`: 0.7 at k = 4 gives 0.443);
  `spec_accepted_share_of_proposed` the same number under a name that says so;
  `spec_conditional_acceptance_rate`: accepted / reached drafts (a draft is reached when every
  draft before it was accepted), the quantity `--spec-acceptance` sets (0.7 gives 0.7);
  `spec_acceptance_rate_pos<i>` that rate at draft position i; null if never reached
- `spec_k_mean`: drafts verified per verify (k after the dynamic rule and the caps)
- `spec_draft_time_share`, `spec_verify_time_share`: drafting, and the target passes of steps
  that verified drafts, as shares of the replica's busy time (the rest is plain steps)
TPOT and ITL are then the effective ones: tokens of one verify share one timestamp.
"""

from __future__ import annotations

import functools
from typing import Any, Iterator

import numpy as np

from policies.engine import Engine
from policies.logs import SpeculationLog
from policies.token_times import RUN_TYPECODE
from policies.types import Sequence, SeqStatus
from sim.config import SimConfig
from sim.pooled_stats import percentiles_of, pooled_mean_and_percentiles

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e", "queue")
STATS = ("mean", "p50", "p90", "p99")


ITL_CHUNK_TOKENS = 1 << 20
"""Inter-token gaps computed at a time: every token of a huge trace is never pooled at once,
and a chunk's few temporary copies stay in the tens of MiB."""
LENGTHS_CHUNK_SAMPLES = 1 << 16
"""Samples whose token counts are read from their runs at a time."""
GAP_SEGMENT_STEPS = 1 << 18
"""Timeline steps whose gaps `_TokenTimeReader.gap_sources` yields at a time."""
ITERATION_CHUNK = 1 << 20
"""Iteration-log rows converted to float at a time, for the same reason."""


def _stats(name: str, samples: np.ndarray) -> dict[str, float | None]:
    keys = [f"{name}_{s}_s" for s in STATS]
    if samples.size == 0:
        return dict.fromkeys(keys)
    values = [float(samples.mean()), *percentiles_of(samples, (50, 90, 99))]
    return dict(zip(keys, values))


def _itl_stats(samples: list[Sequence]) -> dict[str, float | None]:
    """ITL over every sample's gaps, computed chunk by chunk (`sim.pooled_stats`): a chunk
    is the next samples holding at least `ITL_CHUNK_TOKENS` gaps (or the rest). The mean
    sums the chunks; the percentiles of a pool of several chunks are ranked in the gaps'
    distinct sources instead (`_TokenTimeReader.gap_sources`), far fewer than the gaps."""
    times = _TokenTimeReader(samples)
    ends = [0]
    if samples:
        gaps = np.cumsum(np.maximum(times.lengths - 1, 0))
        while ends[-1] < len(samples):  # the first sample that brings its chunk to the limit
            before = gaps[ends[-1] - 1] if ends[-1] else 0
            ends.append(min(int(np.searchsorted(gaps, before + ITL_CHUNK_TOKENS)) + 1,
                            len(samples)))

    def chunks() -> Iterator[np.ndarray]:
        for start, end in zip(ends, ends[1:]):
            yield times.gaps(start, end)

    pooled = pooled_mean_and_percentiles(chunks, (50.0, 90.0, 99.0), times.gap_sources)
    keys = [f"itl_{s}_s" for s in STATS]
    return dict.fromkeys(keys) if pooled is None else dict(zip(keys, [pooled[0], *pooled[1]]))


class _TokenTimeReader:
    """The samples' token times as arrays: each sample's runs of its engine's timeline
    (`policies.token_times`) read from one joined array of every timeline they use (the
    timeline itself, not a copy, when they share one: a single replica's)."""

    def __init__(self, samples: list[Sequence]) -> None:
        self.samples = [s.token_times_s for s in samples]
        timelines: dict[int, int] = {}  # id -> index into `parts`
        parts: list[np.ndarray] = []
        timeline_of = np.zeros(len(samples), dtype=np.int64)
        for i, times in enumerate(self.samples):
            timeline = times.timeline
            if timeline is None:
                continue
            found = timelines.get(id(timeline))
            if found is None:
                found = timelines[id(timeline)] = len(parts)
                parts.append(np.frombuffer(timeline.times_s, dtype=np.float64))
            timeline_of[i] = found
        starts = np.cumsum([0] + [part.size for part in parts])
        self.several_timelines = len(parts) > 1
        self.all_times = parts[0] if len(parts) == 1 else np.concatenate(parts or [np.empty(0)])
        self.offsets = starts[timeline_of]
        """Where each sample's timeline starts in `all_times`."""
        self.run_counts = np.fromiter((len(t.runs) // 2 for t in self.samples),
                                      dtype=np.int64, count=len(samples))
        self.lengths = np.zeros(len(samples), dtype=np.int64)
        """Tokens per sample."""
        for start in range(0, len(samples), LENGTHS_CHUNK_SAMPLES):
            end = min(start + LENGTHS_CHUNK_SAMPLES, len(samples))
            counts = self._pairs(start, end)[:, 1]
            if counts.size:
                run_counts = self.run_counts[start:end]
                first_runs = (np.cumsum(run_counts) - run_counts)[run_counts > 0]
                self.lengths[start:end][run_counts > 0] = np.add.reduceat(counts, first_runs)

    def _pairs(self, start: int, end: int) -> np.ndarray:
        """The (timeline index, token count) rows of every run of samples start..end-1."""
        return np.frombuffer(b"".join([t.runs for t in self.samples[start:end]]),
                             dtype=np.dtype(RUN_TYPECODE)).astype(np.int64).reshape(-1, 2)

    def joined(self, start: int, end: int) -> np.ndarray:
        """The token times of samples start..end-1, one after another."""
        pairs = self._pairs(start, end)
        firsts, counts = pairs[:, 0], pairs[:, 1]
        if self.several_timelines:
            firsts = firsts + np.repeat(self.offsets[start:end], self.run_counts[start:end])
        run_starts = np.cumsum(counts) - counts  # where each run begins in the output
        indices = np.repeat(firsts - run_starts, counts)
        indices += np.arange(indices.size, dtype=np.int64)
        return self.all_times[indices]

    def gaps(self, start: int, end: int) -> np.ndarray:
        """Every gap between consecutive tokens of samples start..end-1, in sample order: the
        joined times differenced at once, less the gaps that span two samples."""
        times = self.joined(start, end)
        if times.size < 2:
            return np.empty(0)
        gaps = np.diff(times)
        across = np.cumsum(self.lengths[start:end])[:-1] - 1  # gap i joins token i to the next's
        across = across[(across >= 0) & (across < gaps.size)]  # empty samples join nothing
        keep = np.ones(gaps.size, dtype=bool)
        keep[across] = False
        return gaps[keep]

    def gap_sources(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every sample's gaps (those of `gaps`) as distinct sources, each with how many gaps
        it stands for, a segment of the timeline at a time. A gap inside a run is the
        difference of two consecutive entries of the joined timelines, one value for every
        run spanning both (a step's decode batch); a gap from one of a sample's runs to its
        next is a source of its own (the last chunks: the zero ones, the tokens a speculative
        step emits after its first, pooled as one value with their count)."""
        starts, ends, across, num_zero_across = self._run_bounds
        times = self.all_times
        num_steps = max(times.size - 1, 0)
        if num_steps <= GAP_SEGMENT_STEPS:
            yield self._one_segment_sources
            num_steps = 0  # done: the segments below are for a longer timeline
        for first in range(0, num_steps, GAP_SEGMENT_STEPS):
            last = min(first + GAP_SEGMENT_STEPS, num_steps)
            # runs spanning step gap i (times[i + 1] - times[i]): started by i, not ended by i
            # (searched as the bounds' own type: another would copy them, every segment)
            segment = np.array([first, last], dtype=starts.dtype)
            start_from, start_to = starts.searchsorted(segment)
            end_from, end_to = ends.searchsorted(segment)
            spanning = np.cumsum(
                np.bincount(starts[start_from:start_to] - first, minlength=last - first)
                - np.bincount(ends[end_from:end_to] - first, minlength=last - first))
            spanning += start_from - end_from
            used = spanning > 0
            yield ((times[first + 1:last + 1] - times[first:last])[used],
                   spanning[used].astype(np.int32))  # at most a batch's sequences
        if num_zero_across:  # tokens of one step after the first: one source for all
            yield np.zeros(1), np.array([num_zero_across], dtype=np.int64)
        if across.size:
            yield across, np.ones(across.size, dtype=np.int32)

    @functools.cached_property
    def _one_segment_sources(self) -> tuple[np.ndarray, np.ndarray]:
        """`gap_sources`' step gaps of a timeline short enough to be one segment, counted
        over every run at once (no bound is outside it, so none needs finding) and kept for
        the next pass."""
        starts, ends, _, _ = self._run_bounds
        times = self.all_times
        num_steps = max(times.size - 1, 0)
        # a run ending at the last entry spans no gap of it: its end is cut off with the tail
        spanning = np.cumsum(np.bincount(starts, minlength=num_steps)
                             - np.bincount(ends, minlength=num_steps + 1)[:num_steps])
        used = spanning > 0
        return (times[1:] - times[:-1])[used], spanning[used].astype(np.int32)

    @functools.cached_property
    def _run_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Where the runs of two tokens or more start and end in the joined timelines (each
        sorted when the timeline is several segments long), the gaps from each run to the
        same sample's next that are not zero, and how many are (a verify that emits n tokens
        stamps n - 1 runs at its step's time); read a slice of samples at a time, so only
        these stay in memory."""
        starts, ends, across = [], [], []
        num_zero_across = 0
        index_type = np.int32 if self.all_times.size < 2**31 else np.int64
        for first_sample in range(0, len(self.samples), LENGTHS_CHUNK_SAMPLES):
            last_sample = min(first_sample + LENGTHS_CHUNK_SAMPLES, len(self.samples))
            pairs = self._pairs(first_sample, last_sample)
            firsts, counts = pairs[:, 0], pairs[:, 1]
            run_counts = self.run_counts[first_sample:last_sample]
            if self.several_timelines:
                firsts = firsts + np.repeat(self.offsets[first_sample:last_sample], run_counts)
            lasts = firsts + counts - 1
            joins = np.ones(max(firsts.size - 1, 0), dtype=bool)  # unless the next is another's
            sample_starts = (np.cumsum(run_counts) - run_counts)[run_counts > 0]
            joins[sample_starts[1:] - 1] = False
            gaps = self.all_times[firsts[1:][joins]] - self.all_times[lasts[:-1][joins]]
            nonzero = gaps != 0.0
            num_zero_across += gaps.size - int(np.count_nonzero(nonzero))
            across.append(gaps[nonzero])
            several = counts > 1
            starts.append(firsts[several].astype(index_type))
            ends.append(lasts[several].astype(index_type))
        bounds = []
        several_segments = self.all_times.size - 1 > GAP_SEGMENT_STEPS
        for parts in (starts, ends):
            joined = np.concatenate(parts) if parts else np.empty(0, dtype=index_type)
            if several_segments:  # `gap_sources` finds each segment's bounds by search
                joined.sort()
            bounds.append(joined)
        return bounds[0], bounds[1], np.concatenate(across or [np.empty(0)]), num_zero_across


def _inter_token_latencies(samples: list[Sequence]) -> np.ndarray:
    """Every gap between consecutive tokens of each sample, in sample order."""
    return _TokenTimeReader(samples).gaps(0, len(samples))


def _iteration_means(engines: list[Engine]) -> dict[str, Any]:
    """Duration-weighted KV utilization and fragmentation, mean batch size, iterations and
    busy time over every replica's log, a slice of rows at a time."""
    total_slots = engines[0].kv_total_slots
    busy_s = util_s = frag_s = batch_sum = 0.0
    rows = 0
    for log in (engine.log for engine in engines):
        for start in range(0, len(log), ITERATION_CHUNK):
            end = start + ITERATION_CHUNK
            durations = np.frombuffer(log.duration_s, dtype=np.float64)[start:end]
            reserved = np.asarray(log.kv_reserved_slots[start:end], dtype=np.float64)
            filled = np.asarray(log.kv_filled_slots[start:end], dtype=np.float64)
            frag = np.divide(reserved - filled, reserved, out=np.zeros_like(reserved),
                             where=reserved > 0)
            busy_s += float(durations.sum())
            util_s += float((reserved / total_slots * durations).sum())
            frag_s += float((frag * durations).sum())
            batch_sum += float(np.asarray(log.batch_size[start:end], dtype=np.float64).sum())
            rows += durations.size
    return {
        "kv_util_mean": util_s / busy_s if busy_s > 0 else None,
        "kv_frag_mean": frag_s / busy_s if busy_s > 0 else None,
        "batch_size_mean": batch_sum / rows if rows else None,
        "iterations": rows,
        "busy_s": busy_s,
    }


def merged_sequences(engines: list[Engine]) -> dict[int, Sequence]:
    """Each request's record by request id. A disaggregated request has one on its prefill
    replica (prompt and first token) and one on its decode replica that carries it on; the
    decode replicas come later in `engines`, so their record wins."""
    return {seq_id: seq for engine in engines for seq_id, seq in engine.sequences.items()}


def sample_groups(engines: list[Engine]) -> dict[int, list[Sequence]]:
    """Each request's samples (its first sample first), by request id."""
    groups: dict[int, list[Sequence]] = {}
    several = []  # groups of more than one sample (n > 1), the only ones to sort
    for seq in merged_sequences(engines).values():
        request_id = seq.request.request_id
        group = groups.get(request_id)
        if group is None:
            groups[request_id] = [seq]
        else:
            if len(group) == 1:
                several.append(group)
            group.append(seq)
    for group in several:
        group.sort(key=lambda s: s.sample_index)
    return groups


def visible_output_tokens(group: list[Sequence]) -> int:
    """Tokens a request returns: every sample's, or one beam's for beam search."""
    if len(group) == 1 or group[0].request.beam:
        return group[0].num_output_tokens
    return sum(s.num_output_tokens for s in group)


def group_finished(group: list[Sequence]) -> bool:
    """A request is finished when all of its n samples are."""
    if len(group) == 1:
        return group[0].request.n == 1 and group[0].status is SeqStatus.FINISHED
    return len(group) == group[0].request.n and all(s.status is SeqStatus.FINISHED for s in group)


def _group_finish_s(group: list[Sequence]) -> float:
    """When a finished request's last sample finished."""
    return group[0].finish_s if len(group) == 1 else max(s.finish_s for s in group)


def summarize(config: SimConfig, engines: list[Engine], end_s: float) -> dict[str, Any]:
    """Cluster-wide metrics over every replica's requests and iterations. Per-request metrics
    (TTFT, E2E, queueing) take a request's first token and its last sample's finish; TPOT and
    ITL are per sample; output throughput counts every sample's tokens."""
    trace = config.trace
    groups = sample_groups(engines)
    sequences = [s for group in groups.values() for s in group]
    finished_groups = [groups[rid] for rid in sorted(groups) if group_finished(groups[rid])]
    finished = [group[0] for group in finished_groups]
    samples = [s for group in finished_groups for s in group]
    rejected = sum(1 for group in groups.values() if group[0].status is SeqStatus.REJECTED)
    rejected += len(trace.invalid_rows)
    total = trace.num_rows

    arrival = np.array([s.request.arrival_time_s for s in finished])
    first_token = np.array([s.token_times_s[0] for s in finished])
    finish = np.array([_group_finish_s(group) for group in finished_groups])
    outputs = np.array([visible_output_tokens(group) for group in finished_groups])
    request_outputs = np.array([s.request.output_tokens for s in finished])
    prompts = np.array([s.request.prompt_tokens for s in finished])
    scheduled = np.array([s.first_scheduled_s for s in finished])
    tpot = np.array([(s.finish_s - s.token_times_s[0]) / (s.request.output_tokens - 1)
                     for s in samples if s.request.output_tokens > 1])

    ttft = first_token - arrival
    e2e = finish - arrival
    summary: dict[str, Any] = {
        "requests_total": total,
        "requests_finished": len(finished),
        "requests_rejected": rejected,
        "requests_unfinished": total - len(finished) - rejected,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e),
                         ("queue", scheduled - arrival)):
        summary.update(_stats(name, values))
        if name == "tpot":
            summary.update(_itl_stats(samples))

    first_arrival = trace.requests[0].arrival_time_s if trace.requests else 0.0
    span = end_s - first_arrival
    per_s = (lambda x: float(x) / span) if span > 0 else (lambda x: None)
    summary["output_throughput_tok_s"] = per_s(outputs.sum())
    summary["total_throughput_tok_s"] = per_s(outputs.sum() + prompts.sum())
    summary["request_throughput_req_s"] = per_s(len(finished))
    summary["goodput_req_s"] = _goodput(config, ttft, finish, first_token, request_outputs, per_s)

    means = _iteration_means(engines)
    summary["preemptions"] = sum(s.num_preemptions for s in sequences)
    summary["swaps"] = sum(s.num_swaps for s in sequences)
    summary["recomputed_tokens"] = sum(s.num_recomputed_tokens for s in sequences)
    stats = [engine.prefix_cache.stats() for engine in engines if engine.prefix_cache is not None]
    summary.update(_prefix_stats({k: sum(st[k] for st in stats) for k in stats[0]} if stats else {}))
    for key in ("kv_util_mean", "kv_frag_mean", "batch_size_mean", "iterations"):
        summary[key] = means[key]
    summary["kv_blocks_total"] = engines[0].scheduler.allocator.num_blocks
    summary["replicas"] = len(engines)
    summary["simulated_span_s"] = span
    summary.update(_model_size(config))
    if config.options.speculator != "none":
        log = _combined_spec_log([engine.spec_log for engine in engines])
        summary.update(_speculation(log, config.spec_k, means["busy_s"]))
    if config.options.decoding == "block-diffusion":
        summary.update(_diffusion(sequences))
    return summary


def _diffusion(sequences: list[Sequence]) -> dict[str, Any]:
    """Denoising steps summed over requests, and positions committed per step (every position
    a step committed, in finished blocks or not)."""
    steps = sum(s.num_diffusion_steps for s in sequences)
    committed = sum(s.num_output_tokens + s.num_block_committed for s in sequences)
    return {"diffusion_steps_total": steps,
            "tokens_per_step_mean": committed / steps if steps else None}


def _model_size(config: SimConfig) -> dict[str, Any]:
    """The whole model's size, whatever its parallelism: parameters (active: per token, routed
    experts counted top-k times) and KV bytes per token over all layers at `--kv-dtype`."""
    model = config.model
    kv_bytes = model.kv_bytes_per_token(config.options.kv_dtype)
    return {"model_params_total": model.param_count,
            "model_params_active": model.active_param_count,
            "kv_bytes_per_token": int(kv_bytes) if float(kv_bytes).is_integer() else kv_bytes}


def _combined_spec_log(logs: list[SpeculationLog]) -> SpeculationLog:
    """Every replica's speculation counters added up."""
    def add(lists: list[list[int]]) -> list[int]:
        width = max(len(values) for values in lists)
        return [sum(values[i] for values in lists if i < len(values)) for i in range(width)]

    return SpeculationLog(
        num_verifies=sum(log.num_verifies for log in logs),
        num_proposed=sum(log.num_proposed for log in logs),
        emitted_histogram=add([log.emitted_histogram for log in logs]),
        reached_histogram=add([log.reached_histogram for log in logs]),
        draft_s=sum(log.draft_s for log in logs),
        verify_s=sum(log.verify_s for log in logs),
    )


def _speculation(log: SpeculationLog, spec_k: int, busy_s: float) -> dict[str, Any]:
    n = log.num_verifies
    ratio = (lambda x, y: float(x) / y if y else None)
    histogram = log.emitted_histogram + [0] * (spec_k + 2 - len(log.emitted_histogram))
    reached = log.reached_by_position + [0] * (spec_k - len(log.reached_by_position))
    accepted = log.accepted_by_position + [0] * (spec_k - len(log.accepted_by_position))
    out: dict[str, Any] = {
        "spec_verifies": n,
        "spec_tokens_per_step_mean": ratio(sum(i * c for i, c in enumerate(histogram)), n),
        "spec_acceptance_rate": ratio(sum(accepted), log.num_proposed),
        "spec_accepted_share_of_proposed": ratio(sum(accepted), log.num_proposed),
        "spec_conditional_acceptance_rate": ratio(sum(accepted), sum(reached)),
        "spec_k_mean": ratio(log.num_proposed, n),
        "spec_draft_time_share": ratio(log.draft_s, busy_s),
        "spec_verify_time_share": ratio(log.verify_s, busy_s),
    }
    for i in range(spec_k):
        out[f"spec_acceptance_rate_pos{i + 1}"] = ratio(accepted[i], reached[i])
    for tokens in range(1, spec_k + 2):
        out[f"spec_tokens_per_step_share_{tokens}"] = ratio(histogram[tokens], n)
    return out


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
