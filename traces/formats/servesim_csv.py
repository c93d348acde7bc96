"""servesim's own CSV: `arrival_time_s,prompt_tokens,output_tokens[,prefix_hashes]`.

`prefix_hashes` is a space-separated list of chained block hashes (empty: none), each covering
`prefix_block_tokens` prompt tokens (optional column, default 16, vLLM's block size). Hashes may
stop before the end of the prompt (vLLM hashes only full blocks) but never run past it.
"""

from __future__ import annotations

from collections.abc import Mapping

from traces.fields import RowError, parse_time, parse_token_count, show
from traces.formats.base import ParsedRow, TraceFormat

DEFAULT_PREFIX_BLOCK_TOKENS = 16
_MAX_HASH = 2**63


def _prefix_hashes(
    row: Mapping[str, str], prompt_tokens: int
) -> tuple[tuple[int, ...] | None, int | None]:
    """(hashes, block tokens), or (None, None) when the row has no hashes."""
    text = row.get("prefix_hashes", "")
    if not text:
        return None, None
    block_tokens = DEFAULT_PREFIX_BLOCK_TOKENS
    if row.get("prefix_block_tokens", ""):
        block_tokens = parse_token_count("prefix_block_tokens", row["prefix_block_tokens"])
    hashes = []
    for word in text.split():
        try:
            value = int(word) if len(word) <= 20 else _MAX_HASH
        except ValueError:
            raise RowError(f"prefix_hashes: {show(word)} is not an integer") from None
        if not -_MAX_HASH <= value < _MAX_HASH:
            raise RowError(f"prefix_hashes: {show(word)} is not a 64-bit integer")
        hashes.append(value)
    max_blocks = -(-prompt_tokens // block_tokens)
    if len(hashes) > max_blocks:
        raise RowError(
            f"prefix_hashes: {len(hashes)} hashes of {block_tokens}-token blocks, but the "
            f"{prompt_tokens}-token prompt has only {max_blocks} blocks"
        )
    return tuple(hashes), block_tokens


def _parse_row(row: Mapping[str, str], need_time: bool) -> ParsedRow:
    prompt_tokens = parse_token_count("prompt_tokens", row["prompt_tokens"])
    hashes, block_tokens = _prefix_hashes(row, prompt_tokens)
    return ParsedRow(
        time=parse_time("arrival_time_s", row["arrival_time_s"], 1) if need_time else None,
        prompt_tokens=prompt_tokens,
        output_tokens=parse_token_count("output_tokens", row["output_tokens"]),
        prefix_block_hashes=hashes,
        prefix_block_tokens=block_tokens,
    )


SERVESIM_CSV = TraceFormat(
    name="csv",
    required_columns=("arrival_time_s", "prompt_tokens", "output_tokens"),
    parse_row=_parse_row,
    time_units_per_s=1,
)
