"""Parallel sampling (`n > 1`) and beam search: one request, several sequences.

The prefill of sample 0 (the parent) samples n first tokens; samples 1..n-1 are forked from
it then, sharing its KV, and decode on their own. A request is done when its last sample is.
"""

from __future__ import annotations

from policies.token_times import TokenTimes
from policies.types import Request, Sequence


class SampleForks:
    """Forks a request's samples and counts those still open."""

    def __init__(self) -> None:
        self._open: dict[int, int] = {}

    def fork(self, parent: Sequence, end_s: float) -> list[Sequence]:
        """Samples 1..n-1 of `parent`'s request, each holding the first token sampled at
        `end_s` on top of `parent`'s computed KV (the caller registers and schedules them)."""
        request = parent.request
        self._open[request.request_id] = request.n
        children = []
        for index in range(1, request.n):
            child = Sequence(request, num_computed_tokens=parent.num_computed_tokens,
                             num_output_tokens=1, first_scheduled_s=parent.first_scheduled_s,
                             sample_index=index,
                             token_times_s=TokenTimes(parent.token_times_s.timeline))
            child.token_times_s.append(end_s)
            children.append(child)
        return children

    def close(self, request: Request) -> bool:
        """One sample of `request` finished: whether it was the last one open."""
        remaining = self._open.get(request.request_id, 1) - 1
        if remaining:
            self._open[request.request_id] = remaining
            return False
        self._open.pop(request.request_id, None)
        return True


def forks_after(seq: Sequence, num_emitted: int) -> bool:
    """Whether `seq` just sampled its request's first tokens and must fork its samples."""
    return seq.sample_index == 0 and seq.request.n > 1 and seq.num_output_tokens == num_emitted
