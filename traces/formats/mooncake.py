"""Mooncake FAST'25 traces (kvcache-ai/Mooncake): JSON lines with per-block prefix hashes.

`timestamp` is milliseconds; `hash_ids` holds one chained hash per 512-token prompt block (the
last block may be partial), which is what prefix-caching allocators match on. A row whose
hash count disagrees with its prompt length would make cache-hit accounting wrong, so it is
invalid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from traces.fields import RowError, check_time, check_token_count, show
from traces.formats.base import ParsedRow, TraceFormat

MOONCAKE_BLOCK_TOKENS = 512
_MS_PER_S = 1000
_MAX_HASH = 2**63
_JSON_TYPE_NAMES = {
    bool: "boolean", int: "integer", float: "number", str: "string",
    list: "array", dict: "object", type(None): "null",
}


def _json_int(row: Mapping[str, Any], key: str) -> int:
    value = row[key]
    # bool is an int subclass in Python, but `true` is not a length in JSON.
    if type(value) is not int:
        raise RowError(f"{key}: {show(value)} is a JSON {_json_type(value)}, expected an integer")
    return value


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _timestamp_ms(row: Mapping[str, Any]) -> float | int:
    value = row["timestamp"]
    if type(value) not in (int, float):
        raise RowError(f"timestamp: {show(value)} is a JSON {_json_type(value)}, expected a number")
    if type(value) is float and not math.isfinite(value):
        raise RowError(f"timestamp: {show(value)} is not a finite number")
    return check_time("timestamp", value, _MS_PER_S)


def _hash_ids(row: Mapping[str, Any], input_length: int) -> tuple[int, ...]:
    hash_ids = row["hash_ids"]
    if type(hash_ids) is not list:
        kind = _json_type(hash_ids)
        raise RowError(f"hash_ids: {show(hash_ids)} is a JSON {kind}, expected an array")
    for value in hash_ids:
        if type(value) is not int or not -_MAX_HASH <= value < _MAX_HASH:
            raise RowError(f"hash_ids: element {show(value)} is not a 64-bit integer")
    expected = -(-input_length // MOONCAKE_BLOCK_TOKENS)
    if len(hash_ids) != expected:
        raise RowError(
            f"hash_ids: {len(hash_ids)} ids, expected ceil(input_length / 512) = {expected}"
        )
    return tuple(hash_ids)


def _parse_row(row: Mapping[str, Any], need_time: bool) -> ParsedRow:
    prompt_tokens = check_token_count("input_length", _json_int(row, "input_length"))
    return ParsedRow(
        time=_timestamp_ms(row) if need_time else None,
        prompt_tokens=prompt_tokens,
        output_tokens=check_token_count("output_length", _json_int(row, "output_length")),
        prefix_block_hashes=_hash_ids(row, prompt_tokens),
        prefix_block_tokens=MOONCAKE_BLOCK_TOKENS,
    )


MOONCAKE = TraceFormat(
    name="mooncake",
    required_columns=("timestamp", "input_length", "output_length", "hash_ids"),
    parse_row=_parse_row,
    time_units_per_s=_MS_PER_S,
    is_json_lines=True,
)
