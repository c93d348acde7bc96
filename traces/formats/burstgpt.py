"""BurstGPT (HPMLL/BurstGPT): ChatGPT / GPT-4 request logs on Azure.

`Timestamp` is seconds from the start of the log. A row with 0 `Response tokens` is a request
that failed in production; it did no decoding, so it is reported as an invalid row rather than
replayed as if it had succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping

from traces.fields import RowError, parse_time, parse_token_count
from traces.formats.base import ParsedRow, TraceFormat


def _response_tokens(text: str) -> int:
    try:
        return parse_token_count("Response tokens", text)
    except RowError:
        if _is_zero(text):
            raise RowError(f"Response tokens: {text}, a failed request in BurstGPT") from None
        raise


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0.0
    except ValueError:
        return False


def _parse_row(row: Mapping[str, str], need_time: bool) -> ParsedRow:
    return ParsedRow(
        time=parse_time("Timestamp", row["Timestamp"], 1) if need_time else None,
        prompt_tokens=parse_token_count("Request tokens", row["Request tokens"]),
        output_tokens=_response_tokens(row["Response tokens"]),
    )


BURSTGPT = TraceFormat(
    name="burstgpt",
    required_columns=("Timestamp", "Request tokens", "Response tokens"),
    parse_row=_parse_row,
    time_units_per_s=1,
)
