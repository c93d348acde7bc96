"""Pure transforms of a `Trace`: each returns a new trace and keeps every request's id.

Those that move arrival times refuse a closed-loop trace (inference-perf's `concurrent` load),
whose requests have no arrival time before they are sent.
"""

from __future__ import annotations

import dataclasses
import math

from policies.types import Request
from traces.seeding import PRIORITY_STREAM, stream_rng
from traces.trace import Trace


def scale_rate(trace: Trace, factor: float) -> Trace:
    """Replays `trace` at `factor` times its rate: every arrival time is divided by `factor`."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"rate factor must be positive and finite, got {factor}")
    _refuse_closed_loop(trace, "--rate-scale", "it has no arrival rate to scale; change its "
                        "stages' concurrency_level instead")
    requests = [
        dataclasses.replace(request, arrival_time_s=request.arrival_time_s / factor)
        for request in trace.requests
    ]
    note = f"replayed at {factor:g}x the original rate (arrival times divided by {factor:g})"
    return with_requests(trace, requests, note)


def window(trace: Trace, start_s: float = 0.0, end_s: float | None = None) -> Trace:
    """The requests arriving in [start_s, end_s), re-offset so that `start_s` becomes 0.0.

    Requests outside the window are not invalid rows: they are simply not part of the windowed
    trace, so its `num_rows` counts only what the window holds. Invalid rows are kept when their
    row number lies between the first and last kept request's, the slice of the file the window
    covers.
    """
    if not (math.isfinite(start_s) and start_s >= 0):
        raise ValueError(f"window start must be finite and >= 0, got {start_s}")
    if end_s is not None and not end_s > start_s:
        raise ValueError(f"window end must be after its start {start_s}, got {end_s}")
    _refuse_closed_loop(trace, "--window-start-s/--window-end-s", "its requests have no arrival "
                        "times before they are sent; shorten it with --max-requests")
    stop_s = math.inf if end_s is None else end_s
    requests = [
        dataclasses.replace(request, arrival_time_s=request.arrival_time_s - start_s)
        for request in trace.requests
        if start_s <= request.arrival_time_s < stop_s
    ]
    invalid_rows = []
    if requests:
        first_id = min(request.request_id for request in requests)
        last_id = max(request.request_id for request in requests)
        invalid_rows = [row for row in trace.invalid_rows if first_id <= row.request_id <= last_id]
    end_text = "end" if end_s is None else f"{end_s:g} s"
    note = (
        f"window [{start_s:g} s, {end_text}): kept {len(requests)} of {len(trace.requests)} "
        f"requests, arrival times shifted by -{start_s:g} s"
    )
    return Trace(trace.name, requests, invalid_rows, [*trace.notes, note])


def all_at_once(trace: Trace) -> Trace:
    """Every request arrives at 0.0, in trace order: a run as fast as possible, whose arrival
    order (hence every scheduling decision) is the same for the simulator and a real engine."""
    _refuse_closed_loop(trace, "--pace asap", "it sends each request when an earlier one "
                        "finishes; raise its stages' concurrency_level instead")
    requests = [dataclasses.replace(request, arrival_time_s=0.0) for request in trace.requests]
    note = "all requests arrive at 0 s in trace order (--pace asap)"
    return with_requests(trace, requests, note)


def assign_priorities(trace: Trace, shares: list[float], seed: int) -> Trace:
    """Each request gets priority class i with probability shares[i] (a seeded stream of its
    own, so arrivals and lengths do not move)."""
    rng = stream_rng(seed, PRIORITY_STREAM)
    classes = rng.choice(len(shares), size=len(trace.requests), p=shares)
    requests = [dataclasses.replace(r, priority=int(c)) for r, c in zip(trace.requests, classes)]
    note = f"priority classes drawn with shares {shares}, seed {seed}"
    return with_requests(trace, requests, note)


def cap_lengths(trace: Trace, max_prompt_tokens: int | None = None,
                max_output_tokens: int | None = None) -> Trace:
    """Prompts and outputs cut to at most the given lengths (None: uncapped), arrivals kept:
    a production trace's shape at a size a small CPU model serves in seconds. Prompt token
    ids are cut with the prompt, prefix block hashes to the blocks the cut prompt touches."""
    for name, cap in (("max_prompt_tokens", max_prompt_tokens),
                      ("max_output_tokens", max_output_tokens)):
        if cap is not None and cap < 1:
            raise ValueError(f"{name} must be >= 1, got {cap}")
    prompt_cap = max_prompt_tokens or math.inf
    output_cap = max_output_tokens or math.inf
    requests = []
    for request in trace.requests:
        prompt = int(min(request.prompt_tokens, prompt_cap))
        changes: dict = {"prompt_tokens": prompt,
                         "output_tokens": int(min(request.output_tokens, output_cap))}
        if request.prompt_token_ids is not None:
            changes["prompt_token_ids"] = request.prompt_token_ids[:prompt]
        if request.prefix_block_hashes is not None and request.prefix_block_tokens:
            num_blocks = -(-prompt // request.prefix_block_tokens)
            changes["prefix_block_hashes"] = request.prefix_block_hashes[:num_blocks]
        requests.append(dataclasses.replace(request, **changes))
    note = (f"lengths capped at {max_prompt_tokens or 'any'} prompt and "
            f"{max_output_tokens or 'any'} output tokens")
    return with_requests(trace, requests, note)


def with_requests(trace: Trace, requests: list[Request], note: str) -> Trace:
    """`trace` with `requests` in place of its own (the same rows, changed) and `note` added;
    its invalid rows and closed-loop stages are kept."""
    return dataclasses.replace(trace, requests=requests, invalid_rows=list(trace.invalid_rows),
                               notes=[*trace.notes, note])


def _refuse_closed_loop(trace: Trace, option: str, why: str) -> None:
    if trace.closed_loop:
        raise ValueError(f"{option} cannot apply to the closed-loop trace {trace.name!r} "
                         f"(inference-perf concurrent stages): {why}")
