"""From a file's lines to one parsed row or one `InvalidRow` per data line.

Row numbering (`request_id`) counts non-blank data lines from 0 in file order, before any
sorting, so an id always points back to one line of the input.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import NamedTuple

from traces.fields import RowError, show
from traces.formats import FORMATS, TRACE_FORMATS, ParsedRow, TraceFormat
from traces.reading import Line, check_header, detect_from_first_line, read_lines, split_csv_line
from traces.trace import InvalidRow, TraceFormatError


class NumberedRow(NamedTuple):
    """A parsed row and where it came from (a NamedTuple: one is built per row)."""

    request_id: int
    line_number: int
    row: ParsedRow


@dataclass(slots=True)
class TraceSource:
    """A trace file after the whole-file checks: its format, header and data lines."""

    path: str | os.PathLike[str]
    fmt: TraceFormat
    columns: list[str] | None  # None for JSON lines, which have no header
    data_lines: list[Line]
    notes: list[str] = field(default_factory=list)


def open_trace(path: str | os.PathLike[str], fmt: str | None = None) -> TraceSource:
    """Reads `path`, settles its format (detected when `fmt` is None) and checks its header."""
    if fmt is not None and fmt not in FORMATS:
        raise TraceFormatError(
            f"{path}: unknown trace format {fmt!r}; expected one of {', '.join(TRACE_FORMATS)}"
        )
    lines = read_lines(path)
    trace_format = FORMATS[fmt] if fmt is not None else detect_from_first_line(path, lines[0])
    columns = None
    if not trace_format.is_json_lines:
        columns = check_header(path, trace_format, lines[0])
        lines = lines[1:]
    if not lines:
        raise TraceFormatError(f"{path}: no data rows after the header")
    source = TraceSource(path, trace_format, columns, lines)
    num_blank_lines = lines[-1].number - lines[0].number + 1 - len(lines)
    if num_blank_lines:
        source.notes.append(f"skipped {num_blank_lines} blank lines between rows (not rows)")
    return source


def keep_first_rows(source: TraceSource, max_requests: int | None) -> None:
    """Cuts `source` to its first `max_requests` rows, valid or not (file order)."""
    if max_requests is None:
        return
    if max_requests < 1:
        raise ValueError(f"max_requests must be at least 1, got {max_requests}")
    num_rows = len(source.data_lines)
    if num_rows > max_requests:
        source.data_lines = source.data_lines[:max_requests]
        source.notes.append(
            f"kept the first {max_requests} of {num_rows} rows (max_requests counts rows in "
            "file order, valid or not)"
        )


def parse_rows(
    source: TraceSource, need_times: bool
) -> tuple[list[NumberedRow], list[InvalidRow]]:
    """Every data line as either a parsed row or an invalid row, in file order."""
    valid: list[NumberedRow] = []
    invalid: list[InvalidRow] = []
    for request_id, line in enumerate(source.data_lines):
        try:
            if source.columns is None:
                row = _parse_json_line(source.fmt, line, need_times)
            else:
                row = _parse_csv_line(source.fmt, source.columns, line, need_times)
        except RowError as error:
            invalid.append(InvalidRow(request_id, line.number, str(error)))
        else:
            valid.append(NumberedRow(request_id, line.number, row))
    return valid, invalid


def _parse_csv_line(
    fmt: TraceFormat, columns: list[str], line: Line, need_times: bool
) -> ParsedRow:
    fields = split_csv_line(line.text)
    if len(fields) < len(columns):
        raise RowError(
            f"{columns[len(fields)]}: missing field (row has {len(fields)} of {len(columns)} "
            "columns)"
        )
    if len(fields) > len(columns):
        raise RowError(f"row has {len(fields)} fields but the header has {len(columns)} columns")
    return fmt.parse_row(dict(zip(columns, fields)), need_times)


def _parse_json_line(fmt: TraceFormat, line: Line, need_times: bool) -> ParsedRow:
    try:
        value = json.loads(line.text)
    except (ValueError, RecursionError) as error:
        raise RowError(f"malformed JSON ({show(str(error))}): {show(line.text)}") from None
    if not isinstance(value, dict):
        raise RowError(f"expected a JSON object, got {show(value)}")
    missing = [key for key in fmt.required_columns if key not in value]
    if missing:
        raise RowError(f"{', '.join(missing)}: missing key(s)")
    return fmt.parse_row(value, need_times)
