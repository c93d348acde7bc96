"""Which waiting request goes first, and which running one yields when memory runs out.

    fcfs      arrival order; preempted requests return to the head (vLLM's default)
    priority  by priority class (0 first), then arrival; a waiting request may preempt running
              ones of a lower class (larger number) to get in; victims come from the lowest class
    spf       shortest prompt first
    srpt      shortest remaining work first (uncomputed tokens + outputs still to generate)
    edf       earliest TTFT deadline first: arrival + slo_ttft_s x 2^priority, so each class
              has twice the TTFT budget of the one above it (an SLO-aware policy)

Orders other than fcfs re-sort the queue every iteration (stable, so ties keep arrival order).
"""

from __future__ import annotations

from typing import Callable

from policies.types import Sequence

QUEUE_POLICIES = ("fcfs", "priority", "spf", "srpt", "edf")


def waiting_key(policy: str, slo_ttft_s: float) -> Callable[[Sequence], float] | None:
    """Sort key for the waiting queue; None keeps the queue as it is (fcfs)."""
    if policy == "fcfs":
        return None
    if policy == "priority":
        return lambda s: (s.request.priority, s.request.arrival_time_s)
    if policy == "spf":
        return lambda s: s.request.prompt_tokens
    if policy == "srpt":
        return lambda s: s.num_uncomputed_tokens + s.request.output_tokens - s.num_output_tokens
    if policy == "edf":
        return lambda s: s.request.arrival_time_s + slo_ttft_s * 2 ** s.request.priority
    raise ValueError(f"unknown queue policy {policy!r}; choose one of {QUEUE_POLICIES}")


def victim_index(policy: str, running: list[Sequence]) -> int:
    """Index in `running` (admission order) of the sequence to preempt: the newest, or under
    `priority` the newest of the lowest class."""
    if policy != "priority":
        return len(running) - 1
    worst = max(s.request.priority for s in running)
    return max(i for i, s in enumerate(running) if s.request.priority == worst)
