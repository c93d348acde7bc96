"""Loading the shared public traces and hand-written malformed files.

Shared traces live outside the repo, at `<repo>/../shared/traces`; tests that need them skip
when that folder is absent.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pytest

from traces import (
    DEFAULT_TRACE_PATH,
    TRACE_FORMATS,
    ArrivalProcess,
    InvalidRow,
    LengthDistribution,
    TraceFormatError,
    detect_format,
    load_trace,
    scale_rate,
    synthetic_trace,
    window,
)

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
needs_shared = pytest.mark.skipif(
    not SHARED_TRACES.is_dir(), reason=f"shared traces not found at {SHARED_TRACES}"
)
AZURE_CODE = SHARED_TRACES / "azure_llm_inference_2023" / "AzureLLMInferenceTrace_code.csv"
AZURE_CONV = SHARED_TRACES / "azure_llm_inference_2023" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = SHARED_TRACES / "mooncake_fast25" / "synthetic_trace.jsonl"
LENGTHS_DIR = SHARED_TRACES / "request_lengths"
POISSON = ArrivalProcess("poisson", 2.0)

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
AZURE_ROW = "2023-11-16 18:15:46.6805900,374,44"


def shared_files() -> list[Path]:
    if not SHARED_TRACES.is_dir():
        return []
    return sorted(path for path in SHARED_TRACES.glob("*/*") if path.suffix in (".csv", ".jsonl"))


def count_data_lines(path: Path) -> int:
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    return len(lines) if path.suffix == ".jsonl" else len(lines) - 1


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_well_formed(trace) -> None:
    ids = [r.request_id for r in trace.requests] + [r.request_id for r in trace.invalid_rows]
    assert sorted(ids) == list(range(trace.num_rows))
    times = [r.arrival_time_s for r in trace.requests]
    assert times == sorted(times)
    if times:
        assert times[0] == 0.0


# --- the shared public traces ---------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("path", shared_files(), ids=lambda path: path.name)
def test_every_shared_trace_loads_every_row(path: Path) -> None:
    arrivals = POISSON if path.parent.name == "request_lengths" else None
    trace = load_trace(path, arrivals=arrivals)
    assert trace.num_rows == count_data_lines(path)
    assert trace.invalid_rows == []
    assert_well_formed(trace)


@needs_shared
def test_shared_formats_are_detected() -> None:
    assert detect_format(AZURE_CODE) == "azure"
    assert detect_format(MOONCAKE) == "mooncake"
    assert detect_format(SHARED_TRACES / "vidur_workloads" / "synth_1k.csv") == "vidur"
    for path in LENGTHS_DIR.glob("*.csv"):
        assert detect_format(path) == "lengths"


@needs_shared
def test_azure_code_matches_published_values() -> None:
    trace = load_trace(AZURE_CODE)
    assert trace.name == "AzureLLMInferenceTrace_code"
    assert trace.num_rows == 8819
    first, second = trace.requests[:2]
    assert (first.prompt_tokens, first.output_tokens, first.arrival_time_s) == (4808, 10, 0.0)
    # 18:17:04.0319600 - 18:17:03.9799600, parsed from 7 fractional digits exactly.
    assert (second.prompt_tokens, second.output_tokens) == (3180, 8)
    assert second.arrival_time_s == pytest.approx(0.052, abs=1e-9)
    assert trace.requests[-1].arrival_time_s == pytest.approx(3435.9, abs=0.05)


@needs_shared
def test_azure_conv_matches_published_values() -> None:
    trace = load_trace(AZURE_CONV)
    assert trace.num_rows == 19366
    assert (trace.requests[0].prompt_tokens, trace.requests[0].output_tokens) == (374, 44)
    assert trace.requests[-1].arrival_time_s == pytest.approx(3501.7, abs=0.05)
    assert min(r.prompt_tokens for r in trace.requests) == 2
    assert max(r.prompt_tokens for r in trace.requests) == 14050


@needs_shared
def test_mooncake_matches_published_values() -> None:
    trace = load_trace(MOONCAKE)
    first, second, third = trace.requests[:3]
    assert (first.prompt_tokens, first.output_tokens) == (40160, 6)
    assert first.prefix_block_hashes == tuple(range(79))
    assert first.prefix_block_tokens == 512
    assert second.prefix_block_hashes == tuple(range(79, 151))
    assert second.arrival_time_s == 0.0
    assert third.arrival_time_s == pytest.approx(0.040)
    assert trace.requests[-1].arrival_time_s == pytest.approx(1022.025)
    assert "11 rows share a timestamp with an earlier row (kept)" in trace.notes
    assert sum(r.output_tokens == 1 for r in trace.requests) == 4


@needs_shared
def test_length_files_need_an_arrival_process() -> None:
    path = LENGTHS_DIR / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
    with pytest.raises(TraceFormatError, match=r"no timestamps.*--arrivals poisson:2\.0"):
        load_trace(path)
    trace = load_trace(path, arrivals=POISSON, seed=7, max_requests=3)
    assert [(r.prompt_tokens, r.output_tokens) for r in trace.requests] == [
        (74, 918), (290, 905), (1402, 711),
    ]
    assert any("kept the first 3 of 30731 rows" in note for note in trace.notes)


@needs_shared
def test_length_file_arrivals_are_the_synthetic_arrival_stream() -> None:
    path = LENGTHS_DIR / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
    trace = load_trace(path, arrivals=POISSON, seed=3, max_requests=50)
    synthetic = synthetic_trace(
        50, POISSON, LengthDistribution.fixed(1), LengthDistribution.fixed(1), seed=3
    )
    assert [r.arrival_time_s for r in trace.requests] == [
        r.arrival_time_s for r in synthetic.requests
    ]


# --- the bundled default trace --------------------------------------------------------------


def test_bundled_trace_matches_its_readme() -> None:
    readme = (DEFAULT_TRACE_PATH.parent / "README.md").read_text(encoding="utf-8")
    documented = re.search(r"SHA-256:\*\* `([0-9a-f]{64})`", readme).group(1)
    assert hashlib.sha256(DEFAULT_TRACE_PATH.read_bytes()).hexdigest() == documented
    trace = load_trace(DEFAULT_TRACE_PATH)
    assert trace.num_rows == 2000 and not trace.invalid_rows
    assert trace.requests[-1].arrival_time_s == pytest.approx(424.259457)


@needs_shared
def test_bundled_trace_is_the_head_of_the_conv_trace() -> None:
    head = b"".join(AZURE_CONV.read_bytes().splitlines(keepends=True)[:2001])
    assert DEFAULT_TRACE_PATH.read_bytes() == head


# --- malformed rows -------------------------------------------------------------------------

BAD_AZURE_ROWS = [
    ("2023-11-16 18:15:47.0,374", "GeneratedTokens: missing field"),
    (",374,44", "TIMESTAMP"),
    ("2023-11-16 18:15:47.0,374,44,9", "4 fields but the header has 3"),
    ("2023-11-16 18:15:47.0,abc,44", "ContextTokens: 'abc' is not a number"),
    ("2023-11-16 18:15:47.0,12.5,44", "ContextTokens: '12.5' is not a whole number"),
    ("2023-11-16 18:15:47.0,-3,44", "ContextTokens: -3 tokens"),
    ("2023-11-16 18:15:47.0,0,44", "ContextTokens: 0 tokens"),
    ("2023-11-16 18:15:47.0,374,0", "GeneratedTokens: 0 tokens"),
    ("2023-11-16 18:15:47.0,374,-1", "GeneratedTokens: -1 tokens"),
    ("2023-11-16 18:15:47.0,1000000001,44", "ContextTokens: 1000000001 tokens is above"),
    ("2023-11-16 18:15:47.0," + "9" * 5000 + ",44", "ContextTokens"),
    ("2023-11-16 18:15:47.0,1e300,44", "ContextTokens: '1e300'"),
    ("2023-11-16 18:15:47.0,nan,44", "ContextTokens: 'nan' is not a finite number"),
    ("2023-11-16 18:15:47.0,374,inf", "GeneratedTokens: 'inf' is not a finite number"),
    ("2023-13-16 18:15:47.0,374,44", "TIMESTAMP: '2023-13-16 18:15:47.0' has no such date"),
    ("2023-11-16 25:15:47.0,374,44", "TIMESTAMP"),
    ("yesterday,374,44", "TIMESTAMP: 'yesterday' is not a timestamp"),
    ("2023-11-16 18:15:47.0+25:00,374,44", "TIMESTAMP: UTC offset"),
]


@pytest.mark.parametrize(("bad_row", "reason"), BAD_AZURE_ROWS, ids=[r for _, r in BAD_AZURE_ROWS])
def test_bad_azure_row_becomes_an_invalid_row(tmp_path: Path, bad_row: str, reason: str) -> None:
    path = write(tmp_path, f"{AZURE_HEADER}\n{AZURE_ROW}\n{bad_row}\n{AZURE_ROW}\n\n\n")
    trace = load_trace(path, "azure")
    assert trace.num_rows == 3
    [invalid] = trace.invalid_rows
    assert (invalid.request_id, invalid.line_number) == (1, 3)
    assert reason in invalid.reason
    assert [r.request_id for r in trace.requests] == [0, 2]


BAD_MOONCAKE_ROWS = [
    ('{"timestamp": 5, "input_length": 10, "output_length": 2', "malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 2}', "hash_ids: missing key"),
    ('{"timestamp": 5, "input_length": "10", "output_length": 2, "hash_ids": [0]}',
     "input_length: '10' is a JSON string"),
    ('{"timestamp": 5, "input_length": 10, "output_length": true, "hash_ids": [0]}',
     "output_length: True is a JSON boolean"),
    ('{"timestamp": 5, "input_length": 10.5, "output_length": 2, "hash_ids": [0]}',
     "input_length: 10.5 is a JSON number"),
    ('{"timestamp": 5, "input_length": 1000, "output_length": 2, "hash_ids": [0]}',
     "hash_ids: 1 ids, expected ceil(input_length / 512) = 2"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 2, "hash_ids": ["a"]}',
     "hash_ids: element 'a'"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 2, "hash_ids": 7}', "hash_ids: 7"),
    ('{"timestamp": -5, "input_length": 10, "output_length": 2, "hash_ids": [0]}',
     "timestamp: -5 is negative"),
    ('{"timestamp": NaN, "input_length": 10, "output_length": 2, "hash_ids": [0]}',
     "timestamp: nan is not a finite number"),
    ('{"timestamp": 1e400, "input_length": 10, "output_length": 2, "hash_ids": [0]}',
     "timestamp: inf"),
    ('{"timestamp": ' + "9" * 30 + ', "input_length": 10, "output_length": 2, "hash_ids": [0]}',
     "timestamp"),
    ('{"timestamp": 5, "input_length": 0, "output_length": 2, "hash_ids": []}',
     "input_length: 0 tokens"),
    ('{"timestamp": 5, "input_length": 10, "output_length": 2, "hash_ids": [' + "1" * 30 + "]}",
     "hash_ids: element"),
    ("[" * 100_000, "malformed JSON"),
]


@pytest.mark.parametrize(
    ("bad_row", "reason"), BAD_MOONCAKE_ROWS, ids=[r[:30] for _, r in BAD_MOONCAKE_ROWS]
)
def test_bad_mooncake_row_becomes_an_invalid_row(
    tmp_path: Path, bad_row: str, reason: str
) -> None:
    good = '{"timestamp": 0, "input_length": 513, "output_length": 1, "hash_ids": [3, 4]}'
    path = write(tmp_path, f"{good}\n\n{bad_row}\n{good}\n", "trace.jsonl")
    trace = load_trace(path)
    assert trace.num_rows == 3
    [invalid] = trace.invalid_rows
    assert (invalid.request_id, invalid.line_number) == (1, 3)
    assert reason in invalid.reason
    assert trace.requests[0].prefix_block_hashes == (3, 4)
    assert "skipped 1 blank lines between rows (not rows)" in trace.notes


def test_burstgpt_failed_requests_are_invalid_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,API log\n",
    )
    assert detect_format(path) == "burstgpt"
    trace = load_trace(path)
    assert trace.invalid_rows == [
        InvalidRow(1, 3, "Response tokens: 0, a failed request in BurstGPT")
    ]
    assert [(r.arrival_time_s, r.prompt_tokens) for r in trace.requests] == [
        (0.0, 472), (113.0, 417),
    ]


def test_azure_2024_timestamps_with_utc_offset(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"{AZURE_HEADER}\n"
        "2024-05-10 00:00:00.009930+00:00,10,2\n"
        "2024-05-10 02:00:00.009931+02:00,10,2\n"
        "2024-05-10 00:00:01+00:00,10,2\n"
        "2024-05-10T00:00:01.5Z,10,2\n",
    )
    trace = load_trace(path)
    assert [r.arrival_time_s for r in trace.requests] == [0.0, 1e-6, 0.99007, 1.49007]


def test_servesim_csv_prefix_hashes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "arrival_time_s,prompt_tokens,output_tokens,prefix_hashes\n"
        "0.5,40,3,11 -12 13\n"
        "1.5,40,3,\n"
        "2.5,40,3,1 2 3 4\n"
        "3.5,40,3,1 x\n",
    )
    trace = load_trace(path)
    assert trace.requests[0].prefix_block_hashes == (11, -12, 13)
    assert trace.requests[0].prefix_block_tokens == 16
    assert trace.requests[0].arrival_time_s == 0.0
    assert trace.requests[1].prefix_block_hashes is None
    assert [(r.line_number, r.reason.split(":")[0]) for r in trace.invalid_rows] == [
        (4, "prefix_hashes"), (5, "prefix_hashes"),
    ]
    assert "only 3 blocks" in trace.invalid_rows[0].reason


def test_servesim_csv_block_size_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "arrival_time_s,prompt_tokens,output_tokens,prefix_hashes,prefix_block_tokens\n"
        "0,40,3,7 8,32\n",
    )
    [request] = load_trace(path).requests
    assert (request.prefix_block_hashes, request.prefix_block_tokens) == ((7, 8), 32)


# --- whole-file errors ----------------------------------------------------------------------


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n")
    with pytest.raises(TraceFormatError) as detected:
        load_trace(path)
    assert str(path) in str(detected.value) and "GeneratedTokens" in str(detected.value)
    with pytest.raises(TraceFormatError) as explicit:
        load_trace(path, "azure")
    message = str(explicit.value)
    assert str(path) in message and "line 1" in message and "GeneratedTokens" in message


def test_unknown_header_lists_the_formats(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b,c\n1,2,3\n")
    with pytest.raises(TraceFormatError) as error:
        detect_format(path)
    for name in TRACE_FORMATS:
        assert name in str(error.value)
    assert "arrived_at" in str(error.value)


@pytest.mark.parametrize("text", ["", "\n\n  \n", AZURE_HEADER + "\n\n"])
def test_files_without_data_rows_are_format_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(TraceFormatError, match="trace.csv"):
        load_trace(write(tmp_path, text))


def test_unreadable_file_and_unknown_format_name(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="cannot read"):
        load_trace(tmp_path / "missing.csv")
    path = write(tmp_path, f"{AZURE_HEADER}\n{AZURE_ROW}\n")
    with pytest.raises(TraceFormatError, match="unknown trace format 'parquet'"):
        load_trace(path, "parquet")


# --- ordering, duplicates, limits, synthetic arrivals -----------------------------------------


def test_unsorted_rows_are_sorted_stably_with_a_note(tmp_path: Path) -> None:
    rows = ["2.0,10,1", "1.0,20,1", "3.0,30,1", "1.0,40,1", "5.0,50,1"]
    path = write(tmp_path, "arrived_at,num_prefill_tokens,num_decode_tokens\n" + "\n".join(rows))
    trace = load_trace(path)
    assert [r.request_id for r in trace.requests] == [1, 3, 0, 2, 4]
    assert [r.arrival_time_s for r in trace.requests] == [0.0, 0.0, 1.0, 2.0, 4.0]
    assert any(note.startswith("sorted 2 out-of-order rows by timestamp") for note in trace.notes)
    assert "1 rows share a timestamp with an earlier row (kept)" in trace.notes
    assert any("earliest timestamp (line 3)" in note for note in trace.notes)


def test_max_requests_counts_rows_not_valid_requests(tmp_path: Path) -> None:
    rows = [AZURE_ROW, "bad,1,1", AZURE_ROW, AZURE_ROW]
    trace = load_trace(write(tmp_path, AZURE_HEADER + "\n" + "\n".join(rows)), max_requests=2)
    assert (len(trace.requests), len(trace.invalid_rows)) == (1, 1)
    assert any("kept the first 2 of 4 rows" in note for note in trace.notes)
    with pytest.raises(ValueError):
        load_trace(write(tmp_path, AZURE_HEADER + "\n" + AZURE_ROW), max_requests=0)


def test_arrivals_replace_file_timestamps(tmp_path: Path) -> None:
    rows = ["2023-11-16 18:15:46.0,10,1", "not a time,20,1", "2023-11-16 18:15:40.0,30,1"]
    trace = load_trace(write(tmp_path, AZURE_HEADER + "\n" + "\n".join(rows)), arrivals=POISSON)
    # Timestamps are not parsed when replaced, so the unparseable one costs no row.
    assert [r.prompt_tokens for r in trace.requests] == [10, 20, 30]
    assert trace.requests[0].arrival_time_s == 0.0
    assert trace.requests[1].arrival_time_s > 0.0
    assert any("replacing the file's timestamps" in note for note in trace.notes)


# --- transforms ------------------------------------------------------------------------------


def make_trace(tmp_path: Path):
    rows = ["0,10,1", "1,10,1", "x,10,1", "2,10,1", "3,10,1", "y,10,1"]
    path = write(tmp_path, "arrival_time_s,prompt_tokens,output_tokens\n" + "\n".join(rows))
    return load_trace(path)


def test_scale_rate_divides_arrival_times(tmp_path: Path) -> None:
    trace = make_trace(tmp_path)
    faster = scale_rate(trace, 2.0)
    assert [r.arrival_time_s for r in faster.requests] == [0.0, 0.5, 1.0, 1.5]
    assert [r.request_id for r in faster.requests] == [0, 1, 3, 4]
    assert faster.invalid_rows == trace.invalid_rows
    assert [r.arrival_time_s for r in trace.requests] == [0.0, 1.0, 2.0, 3.0]
    for factor in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            scale_rate(trace, factor)


def test_window_keeps_requests_in_half_open_interval(tmp_path: Path) -> None:
    trace = make_trace(tmp_path)
    windowed = window(trace, 1.0, 3.0)
    assert [(r.request_id, r.arrival_time_s) for r in windowed.requests] == [(1, 0.0), (3, 1.0)]
    assert [r.request_id for r in windowed.invalid_rows] == [2]
    assert windowed.num_rows == 3
    assert [r.request_id for r in window(trace, 2.5).requests] == [4]
    assert window(trace, 10.0).num_rows == 0
    for start_s, end_s in [(-1.0, None), (2.0, 2.0), (math.nan, None)]:
        with pytest.raises(ValueError):
            window(trace, start_s, end_s)
