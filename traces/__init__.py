"""Request traces for servesim: loaders for public trace formats, transforms, synthetic loads.

`load_trace` accounts for every row (a `Request` or an `InvalidRow`); `DEFAULT_TRACE_PATH` is a
2000-row slice of the Azure 2023 conversation trace bundled with the package (see data/README.md).
"""

from __future__ import annotations

from pathlib import Path

from traces.formats import TRACE_FORMATS
from traces.loader import load_trace
from traces.reading import detect_format
from traces.sessions import SessionSpec, parse_sessions, session_trace
from traces.synthetic import (
    ArrivalProcess,
    LengthDistribution,
    parse_arrivals,
    parse_synthetic,
    synthetic_trace,
)
from traces.trace import InvalidRow, Trace, TraceFormatError
from traces.transforms import (all_at_once, assign_priorities, cap_lengths, scale_rate, window,
                               with_requests)

DEFAULT_TRACE_PATH: Path = Path(__file__).resolve().parent / "data" / "azure_conv_2023_head2000.csv"

__all__ = [
    "assign_priorities",
    "DEFAULT_TRACE_PATH",
    "TRACE_FORMATS",
    "ArrivalProcess",
    "all_at_once",
    "cap_lengths",
    "InvalidRow",
    "SessionSpec",
    "parse_sessions",
    "session_trace",
    "LengthDistribution",
    "Trace",
    "TraceFormatError",
    "detect_format",
    "load_trace",
    "parse_arrivals",
    "parse_synthetic",
    "scale_rate",
    "synthetic_trace",
    "window",
    "with_requests",
]
