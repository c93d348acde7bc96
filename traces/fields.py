"""Parsing one field of one row, with a reason that names the column and the bad value.

Every parser raises `RowError` instead of returning something questionable; the loader turns
that into an `InvalidRow`. Limits keep absurd values (which would otherwise make a simulator
allocate or run forever) out of the requests.
"""

from __future__ import annotations

import math

MAX_TOKENS = 10**9
_MAX_TOKEN_DIGITS = len(str(MAX_TOKENS))
# About 317 years: far beyond any trace, but still admits Unix-epoch seconds.
MAX_TIME_S = 1e10
_MAX_SHOWN_CHARS = 40


class RowError(Exception):
    """One row is unusable; `str(error)` is the reason shown to the user."""


def show(value: object) -> str:
    """`repr` of a bad value, shortened so a garbage field cannot flood a report."""
    text = repr(value)
    if len(text) > _MAX_SHOWN_CHARS:
        return text[: _MAX_SHOWN_CHARS - 3] + "..."
    return text


def check_token_count(column: str, tokens: int) -> int:
    """`tokens` if it is a usable length: a request has at least one prompt and one output token."""
    if tokens < 1:
        raise RowError(f"{column}: {tokens} tokens, expected at least 1")
    if tokens > MAX_TOKENS:
        raise RowError(f"{column}: {show(tokens)} tokens is above the limit of 10**9")
    return tokens


def parse_token_count(column: str, text: str) -> int:
    """A token count written as an integer (`12`, or an integral float such as `12.0`)."""
    if not text:
        raise RowError(f"{column}: missing value")
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        # Checking the digit count first keeps int() away from huge strings.
        if len(digits) > _MAX_TOKEN_DIGITS:
            raise RowError(f"{column}: {show(text)} tokens is above the limit of 10**9")
        return check_token_count(column, int(digits))
    number = _parse_float(column, text)
    if not number.is_integer():
        raise RowError(f"{column}: {show(text)} is not a whole number of tokens")
    if abs(number) > MAX_TOKENS:
        raise RowError(f"{column}: {show(text)} tokens is outside the limit of 10**9")
    return check_token_count(column, int(number))


def parse_time(column: str, text: str, units_per_s: int) -> float:
    """A non-negative, finite time, in the column's unit (`units_per_s` of them per second)."""
    if not text:
        raise RowError(f"{column}: missing value")
    return check_time(column, _parse_float(column, text), units_per_s)


def check_time(column: str, time: float, units_per_s: int) -> float:
    """`time` if usable; works on arbitrarily large ints (from JSON) without overflowing."""
    if time < 0:
        raise RowError(f"{column}: {show(time)} is negative")
    if time > MAX_TIME_S * units_per_s:
        raise RowError(f"{column}: {show(time)} is beyond {MAX_TIME_S:.0e} s")
    return time


def _parse_float(column: str, text: str) -> float:
    # float() would accept "1_000"; no trace format writes digit separators.
    if "_" in text:
        raise RowError(f"{column}: {show(text)} is not a number")
    try:
        number = float(text)
    except ValueError:
        raise RowError(f"{column}: {show(text)} is not a number") from None
    if not math.isfinite(number):
        raise RowError(f"{column}: {show(text)} is not a finite number")
    return number
