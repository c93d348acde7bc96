"""The loaded form of a trace: valid requests plus an account of every row that was not one.

Invariant: every data row of the input is either one `Request` or one `InvalidRow`, and both
carry the row's `request_id` (its order among the file's non-blank data lines, from 0), so
`num_rows` always equals the number of rows read and results can be joined back to the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.types import Request


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
    """Requests sorted by `arrival_time_s` (stable), the first at 0.0, plus invalid rows and notes.

    `notes` say in words what the loader or a transform did (sorting, duplicate timestamps,
    synthetic arrivals, rate scaling), so a report can show how the input was interpreted.
    """

    name: str
    requests: list[Request]
    invalid_rows: list[InvalidRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(self.requests) + len(self.invalid_rows)
