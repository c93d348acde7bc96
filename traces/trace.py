"""The loaded form of a trace: valid requests plus an account of every row that was not one.

Invariant: every data row of the input is either one `Request` or one `InvalidRow`, and both
carry the row's `request_id` (its order among the file's non-blank data lines, from 0), so
`num_rows` always equals the number of rows read and results can be joined back to the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.types import Request
from traces.closed_loop import ClosedLoopStage


class TraceFormatError(ValueError):
    """The file as a whole cannot be read as a trace (unreadable, unknown format, bad header)."""


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A data row that could not become a `Request`.

    It keeps its slot in the `request_id` numbering, so the valid requests' ids still match
    their rows and nothing disappears without a trace.
    """

    request_id: int
    line_number: int
    reason: str


@dataclass(slots=True)
class Trace:
    """Requests sorted by `arrival_time_s` (stable), plus invalid rows and notes.

    Arrival times are seconds from the start of the load: a file's first request arrives at
    0.0; an inference-perf load's stage 0 starts at 0.0 (its first request may come later).
    `notes` say in words what the loader or a transform did (sorting, duplicate timestamps,
    synthetic arrivals, rate scaling), so a report can show how the input was interpreted.

    With `closed_loop` stages (inference-perf's `concurrent` load) the requests, in sending
    order, are sent as earlier ones finish (`traces.closed_loop`): their `arrival_time_s` is
    0.0 until then, and results carry the time each was sent.
    """

    name: str
    requests: list[Request]
    invalid_rows: list[InvalidRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    closed_loop: tuple[ClosedLoopStage, ...] = ()

    def __post_init__(self) -> None:
        num_staged = sum(stage.num_requests for stage in self.closed_loop)
        if self.closed_loop and (num_staged != len(self.requests) or self.invalid_rows):
            raise ValueError(f"closed-loop stages must hold every request: they hold "
                             f"{num_staged}, the trace has {len(self.requests)} requests and "
                             f"{len(self.invalid_rows)} invalid rows")

    @property
    def num_rows(self) -> int:
        return len(self.requests) + len(self.invalid_rows)
