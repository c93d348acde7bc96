"""Azure LLM inference traces (AzurePublicDataset 2023 and 2024).

`TIMESTAMP` is wall-clock text with up to 7 fractional digits (`2023-11-16 18:17:03.9799600`),
which `datetime.fromisoformat` rejects on Python 3.11, and the 2024 files add a UTC offset
(`2024-05-10 00:00:00.009930+00:00`). It is parsed here into integer nanoseconds since the Unix
epoch so offsets between rows are exact; timestamps without an offset are taken as UTC (the
2023 files do not state a zone, and only differences matter).
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping

from traces.fields import RowError, parse_token_count, show
from traces.formats.base import ParsedRow, TraceFormat

_NS_PER_S = 10**9
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_EPOCH = datetime.datetime(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _whole_seconds_since_epoch(text: str) -> int:
    """`YYYY-MM-DD HH:MM:SS` in seconds; cached since rows arrive several per second.

    Raises ValueError for dates or times that don't exist (Feb 30, 25:00).
    """
    moment = datetime.datetime.strptime(text.replace("T", " "), "%Y-%m-%d %H:%M:%S")
    return (moment - _EPOCH) // datetime.timedelta(seconds=1)


def parse_wall_clock_ns(column: str, text: str) -> int:
    """`YYYY-MM-DD HH:MM:SS[.f{1,9}][Z|+HH:MM]` as integer nanoseconds since the Unix epoch."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise RowError(
            f"{column}: {show(text)} is not a timestamp like 2023-11-16 18:17:03.9799600"
        )
    whole, fraction, zone = match.groups()
    try:
        seconds = _whole_seconds_since_epoch(whole)
    except ValueError:
        raise RowError(f"{column}: {show(text)} has no such date or time of day") from None
    if zone is not None:
        seconds -= _zone_offset_s(column, zone)
    nanoseconds = int(fraction.ljust(9, "0")) if fraction else 0
    return seconds * _NS_PER_S + nanoseconds


def _zone_offset_s(column: str, zone: str) -> int:
    if zone == "Z":
        return 0
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise RowError(f"{column}: UTC offset {show(zone)} is out of range")
    offset_s = hours * 3600 + minutes * 60
    return -offset_s if zone[0] == "-" else offset_s


def _parse_row(row: Mapping[str, str], need_time: bool) -> ParsedRow:
    return ParsedRow(  # (time, prompt, output): positional, a third of keywords' cost
        parse_wall_clock_ns("TIMESTAMP", row["TIMESTAMP"]) if need_time else None,
        parse_token_count("ContextTokens", row["ContextTokens"]),
        parse_token_count("GeneratedTokens", row["GeneratedTokens"]),
    )


AZURE = TraceFormat(
    name="azure",
    required_columns=("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    parse_row=_parse_row,
    time_units_per_s=_NS_PER_S,
)
