"""From a path to numbered lines and a format: the whole-file checks.

A line is the text between two `\\n` (a trailing `\\r` is whitespace); a line holding only
whitespace is blank and is not a row, wherever it is. Bytes that are not UTF-8 become U+FFFD,
so one corrupt row is reported as an invalid row instead of sinking the whole file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from traces.formats import FORMATS, TRACE_FORMATS, TraceFormat
from traces.trace import TraceFormatError


class Line(NamedTuple):
    """One non-blank line (a NamedTuple: one is built per line)."""

    number: int  # 1-based, counting every physical line
    text: str


def read_lines(path: str | os.PathLike[str]) -> list[Line]:
    """The non-blank lines of `path`; TraceFormatError if it can't be read or holds none."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TraceFormatError(f"{path}: cannot read trace file: {error}") from error
    text = data.decode("utf-8-sig", errors="replace")
    lines = [
        Line(number, line)
        for number, line in enumerate(text.split("\n"), start=1)
        if line and not line.isspace()
    ]
    if not lines:
        raise TraceFormatError(f"{path}: empty file; expected {_formats_help()}")
    return lines


def split_csv_line(text: str) -> list[str]:
    """Fields of one CSV line, stripped of whitespace and of one pair of enclosing quotes.

    No trace format quotes a comma into a field, so a plain split keeps one row per line.
    """
    fields = [field.strip() for field in text.split(",")]
    if '"' not in text:
        return fields
    return [
        field[1:-1].strip() if len(field) >= 2 and field[0] == field[-1] == '"' else field
        for field in fields
    ]


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of `path`, from its CSV header or the keys of its first JSON object."""
    return detect_from_first_line(path, read_lines(path)[0]).name


def detect_from_first_line(path: str | os.PathLike[str], first: Line) -> TraceFormat:
    """The most specific format whose required columns (or JSON keys) are all present."""
    columns = _json_keys(path, first) if first.text.lstrip().startswith("{") else None
    is_json_lines = columns is not None
    if columns is None:
        columns = set(split_csv_line(first.text))
    matches = [
        fmt
        for fmt in FORMATS.values()
        if fmt.is_json_lines == is_json_lines and columns.issuperset(fmt.required_columns)
    ]
    if matches:
        return max(matches, key=lambda fmt: len(fmt.required_columns))
    raise TraceFormatError(
        f"{path}: line {first.number}: unknown trace format{_closest_hint(columns)}; "
        f"found {sorted(columns)}, expected {_formats_help()}"
    )


def check_header(path: str | os.PathLike[str], fmt: TraceFormat, header: Line) -> list[str]:
    """The column names of `header`, after checking that `fmt`'s required ones are there once."""
    columns = split_csv_line(header.text)
    missing = [column for column in fmt.required_columns if column not in columns]
    if missing:
        raise TraceFormatError(
            f"{path}: line {header.number}: missing required column(s) {', '.join(missing)} "
            f"for format {fmt.describe()}; header is {header.text.strip()!r}"
        )
    repeated = sorted({column for column in fmt.required_columns if columns.count(column) > 1})
    if repeated:
        raise TraceFormatError(
            f"{path}: line {header.number}: column(s) {', '.join(repeated)} appear more than once"
        )
    return columns


def _json_keys(path: str | os.PathLike[str], first: Line) -> set[str]:
    try:
        value = json.loads(first.text)
    except (ValueError, RecursionError):
        raise TraceFormatError(
            f"{path}: line {first.number}: starts like JSON but is not valid JSON; "
            f"expected {_formats_help()}"
        ) from None
    if not isinstance(value, dict):
        raise TraceFormatError(f"{path}: line {first.number}: is JSON but not an object")
    return set(value)


def _closest_hint(columns: set[str]) -> str:
    """Names the missing columns of the format the header half matches, if any does."""

    def overlap(fmt: TraceFormat) -> tuple[int, int]:
        # Ties go to the format needing fewer columns: it is the nearer miss.
        return len(columns.intersection(fmt.required_columns)), -len(fmt.required_columns)

    best = max(FORMATS.values(), key=overlap)
    if not columns.intersection(best.required_columns):
        return ""
    missing = [column for column in best.required_columns if column not in columns]
    return f" (looks like {best.name} but missing column(s) {', '.join(missing)})"


def _formats_help() -> str:
    return "one of: " + "; ".join(FORMATS[name].describe() for name in TRACE_FORMATS)
