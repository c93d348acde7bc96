"""What a trace format is: which columns it needs and how one row becomes lengths and a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple


class ParsedRow(NamedTuple):
    """One valid row before arrival times are offset: `time` is in the format's own unit.

    `time` is None when the caller said timestamps are not needed (a synthetic arrival process
    replaces them), so a row is never rejected for a column that would be thrown away.
    A NamedTuple, not a frozen dataclass, because one is built per row and a frozen dataclass
    costs several times more to construct (and positionally: keywords cost three times more).
    """

    time: float | int | None
    prompt_tokens: int
    output_tokens: int
    prefix_block_hashes: tuple[int, ...] | None = None
    prefix_block_tokens: int | None = None


# (row as column -> value, whether to parse the time) -> ParsedRow, or raises RowError.
RowParser = Callable[[Mapping[str, Any], bool], ParsedRow]


@dataclass(frozen=True, slots=True)
class TraceFormat:
    """One trace format.

    CSV formats map a header to columns and hand `parse_row` a dict of stripped strings;
    JSON-lines formats (`is_json_lines`) have no header and hand it the decoded object.
    `time_units_per_s` (1000 for milliseconds) is None for formats without timestamps; it is an
    int so integer timestamps turn into offsets with one correctly rounded division.
    """

    name: str
    required_columns: tuple[str, ...]
    parse_row: RowParser
    time_units_per_s: int | None
    is_json_lines: bool = False

    @property
    def has_timestamps(self) -> bool:
        return self.time_units_per_s is not None

    def describe(self) -> str:
        """For error messages: `azure (TIMESTAMP, ContextTokens, GeneratedTokens)`."""
        kind = "JSON lines with keys" if self.is_json_lines else "CSV columns"
        return f"{self.name} ({kind} {', '.join(self.required_columns)})"
