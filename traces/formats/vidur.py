"""Vidur / Sarathi-Serve request lists: with arrival times (`vidur`) or lengths only (`lengths`).

Length-only files (`num_prefill_tokens,num_decode_tokens[,num_total_tokens,pd_ratio]`) have no
arrival times; the loader pairs them with a synthetic arrival process. Their derived columns
are ignored: the two counts are the facts.
"""

from __future__ import annotations

from collections.abc import Mapping

from traces.fields import parse_time, parse_token_count
from traces.formats.base import ParsedRow, TraceFormat


def _parse_timed_row(row: Mapping[str, str], need_time: bool) -> ParsedRow:
    return ParsedRow(  # (time, prompt, output): positional, a third of keywords' cost
        parse_time("arrived_at", row["arrived_at"], 1) if need_time else None,
        parse_token_count("num_prefill_tokens", row["num_prefill_tokens"]),
        parse_token_count("num_decode_tokens", row["num_decode_tokens"]),
    )


def _parse_length_row(row: Mapping[str, str], need_time: bool) -> ParsedRow:
    return ParsedRow(  # (time, prompt, output)
        None,
        parse_token_count("num_prefill_tokens", row["num_prefill_tokens"]),
        parse_token_count("num_decode_tokens", row["num_decode_tokens"]),
    )


VIDUR = TraceFormat(
    name="vidur",
    required_columns=("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
    parse_row=_parse_timed_row,
    time_units_per_s=1,
)

LENGTHS = TraceFormat(
    name="lengths",
    required_columns=("num_prefill_tokens", "num_decode_tokens"),
    parse_row=_parse_length_row,
    time_units_per_s=None,
)
