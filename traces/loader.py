"""`load_trace`: a trace file to a `Trace` whose arrival times start at 0.0.

Arrival times are seconds after the earliest valid timestamp (the first row's, for the sorted
files published so far). An `arrivals` process replaces the file's timestamps, which is the only
way to replay a length-only file and a way to replay real lengths under a chosen load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from policies.types import Request
from traces.rows import NumberedRow, keep_first_rows, open_trace, parse_rows
from traces.seeding import ARRIVALS_STREAM, stream_rng
from traces.trace import Trace, TraceFormatError

if TYPE_CHECKING:
    from traces.synthetic import ArrivalProcess


def load_trace(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    arrivals: ArrivalProcess | None = None,
    seed: int = 0,
    max_requests: int | None = None,
) -> Trace:
    """Loads every row of `path` as a request or an invalid row; never drops one silently.

    `fmt` is detected from the header when None. `arrivals` (required for `lengths` files)
    replaces any timestamps with a synthetic process drawn from `seed`'s arrival stream, the
    same stream `synthetic_trace` uses. `max_requests` keeps the first N rows of the file,
    valid or not.
    """
    source = open_trace(path, fmt)
    if arrivals is None and not source.fmt.has_timestamps:
        raise TraceFormatError(
            f"{path}: format {source.fmt.name} has no timestamps (request lengths only); pass a "
            "synthetic arrival process, e.g. --arrivals poisson:2.0 "
            "(load_trace(..., arrivals=ArrivalProcess('poisson', 2.0)))"
        )
    keep_first_rows(source, max_requests)
    valid, invalid = parse_rows(source, need_times=arrivals is None)
    if arrivals is None:
        requests, notes = _requests_at_file_times(valid, source.fmt.time_units_per_s or 1)
    else:
        requests, notes = _requests_at_synthetic_times(
            valid, arrivals, seed, source.fmt.has_timestamps
        )
    return Trace(Path(path).stem, requests, invalid, source.notes + notes)


def _requests_at_file_times(
    valid: list[NumberedRow], time_units_per_s: int
) -> tuple[list[Request], list[str]]:
    """Requests sorted by timestamp (stable), offset from the earliest, with notes on the order."""
    if not valid:
        return [], []
    times = [numbered.row.time for numbered in valid]
    order = sorted(range(len(valid)), key=times.__getitem__)
    start = valid[order[0]]
    start_time = start.row.time
    requests = [
        _request(valid[index], (times[index] - start_time) / time_units_per_s) for index in order
    ]
    notes = [f"arrival times are seconds after the earliest timestamp (line {start.line_number})"]
    num_out_of_order = _count_out_of_order(times)
    if num_out_of_order:
        notes.append(
            f"sorted {num_out_of_order} out-of-order rows by timestamp (stable: rows with equal "
            "timestamps keep their file order)"
        )
    num_repeated = len(times) - len(set(times))
    if num_repeated:
        notes.append(f"{num_repeated} rows share a timestamp with an earlier row (kept)")
    return requests, notes


def _count_out_of_order(times: list) -> int:
    """Rows whose timestamp is earlier than some row above them."""
    count, latest = 0, times[0]
    for time in times:
        if time < latest:
            count += 1
        else:
            latest = time
    return count


def _requests_at_synthetic_times(
    valid: list[NumberedRow], arrivals: ArrivalProcess, seed: int, file_has_timestamps: bool
) -> tuple[list[Request], list[str]]:
    """Requests in file order at arrival times drawn from `arrivals`."""
    times_s = arrivals.sample(len(valid), stream_rng(seed, ARRIVALS_STREAM))
    requests = [_request(numbered, float(time_s)) for numbered, time_s in zip(valid, times_s)]
    replaced = "replacing the file's timestamps" if file_has_timestamps else "the file has none"
    return requests, [f"arrival times drawn from {arrivals.spec} (seed {seed}), {replaced}"]


def _request(numbered: NumberedRow, arrival_time_s: float) -> Request:
    # Positional (id, arrival, prompt, output, prefix hashes, their block size): one Request
    # is built per row, and keywords cost a quarter more.
    request_id, _, row = numbered
    return Request(request_id, arrival_time_s, row.prompt_tokens, row.output_tokens,
                   row.prefix_block_hashes, row.prefix_block_tokens)
