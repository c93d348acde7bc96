"""What a simulation returns, and how it is written out.

Every trace row gets exactly one row in `request_rows()`: finished, rejected (invalid trace row
or never fits) or unfinished (still queued or running at the horizon, or arriving after it).
Its `arrival_s` is when the request was sent: its trace time, or for a closed-loop trace the
instant a slot freed (blank if the horizon came first); `stage` is its load stage (0 without).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from policies.engine import Engine
from policies.logs import IterationLog
from policies.types import Sequence, SeqStatus
from sim.config import SimConfig
from sim.cost.memory import MemoryBudget
from sim.metrics import group_finished, merged_sequences, sample_groups

REQUEST_COLUMNS = (
    "request_id", "status", "reason", "stage", "arrival_s", "prompt_tokens", "output_tokens",
    "generated_tokens", "first_scheduled_s", "first_token_s", "finish_s", "ttft_s", "tpot_s",
    "e2e_s", "queue_s", "preemptions",
)


@dataclass(slots=True)
class Results:
    """`engines` holds one engine per replica; `memory` is one replica's KV budget (None when
    `num_gpu_blocks` set the pool directly)."""

    config: SimConfig
    engines: list[Engine]
    memory: MemoryBudget | None
    summary: dict[str, Any]
    end_s: float

    @property
    def engine(self) -> Engine:
        """The first replica's engine (the only one without `--replicas`)."""
        return self.engines[0]

    @property
    def sequences(self) -> dict[int, Sequence]:
        """Every request's record by request id (see `sim.metrics.merged_sequences`)."""
        return merged_sequences(self.engines)

    def replica_rows(self) -> list[dict[str, Any]]:
        """Per-replica load and cache figures."""
        rows = []
        for index, engine in enumerate(self.engines):
            finished = [s for s in engine.sequences.values() if s.status is SeqStatus.FINISHED]
            stats = engine.prefix_cache.stats() if engine.prefix_cache is not None else {}
            queried = stats.get("prefix_query_tokens", 0)
            log = engine.log
            rows.append({
                "replica": index,
                "requests": len(engine.sequences),
                "finished": len(finished),
                "output_tokens": sum(s.request.output_tokens for s in finished),
                "iterations": len(log),
                "busy_s": sum(log.duration_s),
                "batch_size_mean": sum(log.batch_size) / len(log) if len(log) else None,
                "prefix_hit_rate": stats["prefix_hit_tokens"] / queried if queried else None,
                "preemptions": sum(s.num_preemptions for s in engine.sequences.values()),
            })
        return rows

    def request_rows(self) -> list[dict[str, Any]]:
        rows: dict[int, dict[str, Any]] = {}
        for bad in self.config.trace.invalid_rows:
            rows[bad.request_id] = _blank(bad.request_id) | {
                "status": "rejected",
                "reason": f"invalid trace row (line {bad.line_number}): {bad.reason}",
            }
        groups = sample_groups(self.engines)
        closed_loop = bool(self.config.trace.closed_loop)
        for request in self.config.trace.requests:
            row = _blank(request.request_id) | {
                "stage": request.stage,
                "arrival_s": request.arrival_time_s,
                "prompt_tokens": request.prompt_tokens,
                "output_tokens": request.output_tokens,
            }
            group = groups.get(request.request_id)
            if group is None:
                reason = "arrives after the horizon"
                if closed_loop:
                    row["arrival_s"] = None
                    reason = "not sent before the horizon (closed loop)"
                row.update(status="unfinished", reason=reason, generated_tokens=0,
                           preemptions=0)
            else:
                row["arrival_s"] = group[0].request.arrival_time_s  # when it was sent
                row.update(_group_fields(group))
            rows[request.request_id] = row
        return [rows[i] for i in sorted(rows)]


def _blank(request_id: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(REQUEST_COLUMNS)
    row["request_id"] = request_id
    row["stage"] = 0
    return row


def _group_fields(group: list[Sequence]) -> dict[str, Any]:
    """A request's row from its samples (one unless n > 1): latencies from its first token
    and its last sample's finish; TPOT of the first sample."""
    seq = group[0]
    arrival = seq.request.arrival_time_s
    status = seq.status
    if group_finished(group):
        label, reason = "finished", ""
    elif status is SeqStatus.REJECTED:
        label, reason = "rejected", seq.reason
    elif status is SeqStatus.FINISHED:
        done = sum(1 for s in group if s.status is SeqStatus.FINISHED)
        label, reason = "unfinished", f"{done} of {seq.request.n} samples finished at the horizon"
    else:
        label, reason = "unfinished", f"{status.value} at the horizon"
    fields: dict[str, Any] = {
        "status": label,
        "reason": reason,
        "generated_tokens": sum(s.num_output_tokens for s in group),
        "first_scheduled_s": seq.first_scheduled_s,
        "preemptions": sum(s.num_preemptions for s in group),
    }
    if seq.token_times_s:
        first = seq.token_times_s[0]
        fields["first_token_s"] = first
        fields["ttft_s"] = first - arrival
    if seq.first_scheduled_s is not None:
        fields["queue_s"] = seq.first_scheduled_s - arrival
    if label == "finished":
        finish = max(s.finish_s for s in group)
        fields["finish_s"] = finish
        fields["e2e_s"] = finish - arrival
        if seq.num_output_tokens > 1:
            fields["tpot_s"] = (seq.finish_s - seq.token_times_s[0]) / (seq.num_output_tokens - 1)
    return fields


ITERATION_COLUMNS = (
    "replica", "start_s", "duration_s", "batch_size", "new_tokens", "prefill_tokens", "num_waiting",
    "kv_reserved_slots", "kv_filled_slots", "kv_cached_free_slots",
)


def write_results(results: Results, out_dir: str | Path) -> Path:
    """Write `summary.json` (byte-identical for identical inputs), `requests.csv` (one row per
    trace row), `iterations.csv` (one row per replica iteration: the time series of batch
    size, queue length and KV memory held / filled / cached-free, in token slots) and, for a
    cluster, `replicas.csv` (per-replica load and cache figures)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(results.summary, indent=2) + "\n")
    with (out / "requests.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(REQUEST_COLUMNS)
        # csv.writer writes None as an empty field
        writer.writerows(list(map(row.__getitem__, REQUEST_COLUMNS))
                         for row in results.request_rows())
    with (out / "iterations.csv").open("w", newline="") as fh:
        csv.writer(fh).writerow(ITERATION_COLUMNS)
        for index, engine in enumerate(results.engines):
            fh.writelines(_iteration_lines(index, engine.log))
    if len(results.engines) > 1:
        rows = results.replica_rows()
        with (out / "replicas.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return out


def _iteration_lines(replica: int, log: IterationLog) -> Iterator[str]:
    """`log`'s rows as the lines `csv.writer` would write (numbers need no quoting: floats as
    repr, ints as decimals, CRLF ends), formatted with one `%` each, in about 60% of the
    time the csv module's per-field conversion takes."""
    columns = [getattr(log, name) for name in ITERATION_COLUMNS[1:]]
    fields = ",".join("%r" if column.typecode == "d" else "%d" for column in columns)
    return map(f"{replica},{fields}\r\n".__mod__, zip(*columns))
