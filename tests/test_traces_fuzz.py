"""Fuzzing the loaders: whatever the bytes, load_trace raises TraceFormatError or accounts for
every non-blank data line as a request or an invalid row; no other exception escapes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces import TRACE_FORMATS, ArrivalProcess, Trace, TraceFormatError, load_trace
from traces.fields import MAX_TOKENS

FUZZ_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
HEADERS = {
    "azure": "TIMESTAMP,ContextTokens,GeneratedTokens",
    "burstgpt": "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
    "vidur": "arrived_at,num_prefill_tokens,num_decode_tokens",
    "lengths": "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio",
    "csv": "arrival_time_s,prompt_tokens,output_tokens,prefix_hashes",
}
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
ARRIVALS = ArrivalProcess("gamma", 3.0, 2.0)

formats = st.sampled_from((None, *TRACE_FORMATS))
numbers = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 2000),
).map(str)
words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=12
)
fields = st.one_of(numbers, words, st.just(""), st.just("2023-11-16 18:17:03.9799600"))
csv_lines = st.lists(fields, min_size=0, max_size=8).map(",".join)
valid_rows = st.tuples(st.integers(0, 10**6), st.integers(1, 9000), st.integers(1, 900))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | words,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(words, children, max_size=4),
    max_leaves=12,
)
mooncake_objects = st.fixed_dictionaries({key: json_values for key in MOONCAKE_KEYS}) | st.builds(
    lambda t, i, o: {"timestamp": t, "input_length": i, "output_length": o,
                     "hash_ids": list(range(max(0, math.ceil(i / 512))))},
    st.integers(-5, 10**16) | st.floats(), st.integers(-5, 5000), st.integers(-5, 5000),
)


def expected_num_rows(data: bytes, is_json_lines: bool) -> int:
    """Non-blank lines of the file, less the header for CSV formats."""
    text = data.decode("utf-8-sig", errors="replace")
    lines = [line for line in text.split("\n") if line and not line.isspace()]
    return len(lines) if is_json_lines else len(lines) - 1


def check_load(path: Path, data: bytes, fmt: str | None) -> None:
    path.write_bytes(data)
    try:
        trace = load_trace(path, fmt, arrivals=ARRIVALS if fmt == "lengths" else None)
    except TraceFormatError:
        return
    is_json_lines = (fmt or _detected(data)) == "mooncake"
    assert trace.num_rows == expected_num_rows(data, is_json_lines)
    assert_consistent(trace)


def _detected(data: bytes) -> str:
    first = next(line for line in data.decode("utf-8-sig", "replace").split("\n") if line.strip())
    return "mooncake" if first.lstrip().startswith("{") else "csv-like"


def assert_consistent(trace: Trace) -> None:
    ids = [r.request_id for r in trace.requests] + [r.request_id for r in trace.invalid_rows]
    assert sorted(ids) == list(range(trace.num_rows))
    times = [r.arrival_time_s for r in trace.requests]
    assert all(math.isfinite(t) and t >= 0.0 for t in times)
    assert times == sorted(times) and (not times or times[0] == 0.0)
    for request in trace.requests:
        assert 1 <= request.prompt_tokens <= MAX_TOKENS
        assert 1 <= request.output_tokens <= MAX_TOKENS
    assert len({row.line_number for row in trace.invalid_rows}) == len(trace.invalid_rows)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=400), fmt=formats)
def test_random_bytes(tmp_path: Path, data: bytes, fmt: str | None) -> None:
    check_load(tmp_path / "fuzz.csv", data, fmt)


@FUZZ_SETTINGS
@given(data=st.data(), header_fmt=st.sampled_from(sorted(HEADERS)))
def test_random_fields_under_a_real_header(
    tmp_path: Path, data: st.DataObject, header_fmt: str
) -> None:
    good_lines = valid_rows.map(lambda row: _row(header_fmt, *row))
    lines = data.draw(st.lists(csv_lines | good_lines | st.just(""), max_size=12))
    fmt = data.draw(st.sampled_from((None, header_fmt)) | formats)
    text = "\n".join([HEADERS[header_fmt], *lines])
    check_load(tmp_path / "fuzz.csv", text.encode(), fmt)


@FUZZ_SETTINGS
@given(
    header_fmt=st.sampled_from(sorted(HEADERS)),
    rows=st.lists(valid_rows, min_size=1, max_size=10),
    kept_fraction=st.floats(0.0, 1.0),
    crlf=st.booleans(),
)
def test_truncated_files(
    tmp_path: Path,
    header_fmt: str,
    rows: list[tuple[int, int, int]],
    kept_fraction: float,
    crlf: bool,
) -> None:
    newline = "\r\n" if crlf else "\n"
    lines = [HEADERS[header_fmt]] + [_row(header_fmt, *row) for row in rows]
    data = newline.join(lines).encode()
    check_load(tmp_path / "fuzz.csv", data[: round(len(data) * kept_fraction)], None)


@FUZZ_SETTINGS
@given(header_fmt=st.sampled_from(sorted(HEADERS)), rows=st.lists(valid_rows, min_size=1))
def test_valid_rows_load_as_written(
    tmp_path: Path, header_fmt: str, rows: list[tuple[int, int, int]]
) -> None:
    path = tmp_path / "valid.csv"
    path.write_text("\n".join([HEADERS[header_fmt]] + [_row(header_fmt, *row) for row in rows]))
    trace = load_trace(path, arrivals=ARRIVALS if header_fmt == "lengths" else None)
    assert trace.invalid_rows == []
    by_id = sorted(trace.requests, key=lambda request: request.request_id)
    assert [(r.prompt_tokens, r.output_tokens) for r in by_id] == [row[1:] for row in rows]


def _row(fmt: str, time: int, prompt: int, output: int) -> str:
    if fmt == "azure":
        return f"2023-11-16 18:{time % 60:02d}:03.{time:07d},{prompt},{output}"
    if fmt == "burstgpt":
        return f"{time},ChatGPT,{prompt},{output},{prompt + output},Conversation log"
    if fmt == "lengths":
        return f"{prompt},{output},{prompt + output},{prompt / output}"
    if fmt == "csv":
        return f"{time / 7},{prompt},{output},{' '.join(map(str, range(prompt // 16)))}"
    return f"{time / 7},{prompt},{output}"


@FUZZ_SETTINGS
@given(
    values=st.lists(mooncake_objects | json_values, min_size=1, max_size=8),
    blanks=st.lists(st.sampled_from(["", " ", "\r"]), max_size=3),
    fmt=st.sampled_from((None, "mooncake")),
)
def test_random_json_lines(
    tmp_path: Path, values: list[object], blanks: list[str], fmt: str | None
) -> None:
    lines = [json.dumps(value) for value in values] + blanks
    check_load(tmp_path / "fuzz.jsonl", "\n".join(lines).encode(), fmt)


@FUZZ_SETTINGS
@given(lines=st.lists(words | csv_lines, min_size=1, max_size=6))
def test_random_text_as_json_lines(tmp_path: Path, lines: list[str]) -> None:
    check_load(tmp_path / "fuzz.jsonl", "\n".join(lines).encode(), "mooncake")
