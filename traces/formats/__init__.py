"""The registry of trace formats; adding one is a module plus one line in `FORMATS`."""

from __future__ import annotations

from traces.formats.azure import AZURE
from traces.formats.base import ParsedRow, TraceFormat
from traces.formats.burstgpt import BURSTGPT
from traces.formats.mooncake import MOONCAKE
from traces.formats.servesim_csv import SERVESIM_CSV
from traces.formats.vidur import LENGTHS, VIDUR

FORMATS: dict[str, TraceFormat] = {
    fmt.name: fmt for fmt in (AZURE, BURSTGPT, MOONCAKE, VIDUR, LENGTHS, SERVESIM_CSV)
}
TRACE_FORMATS: tuple[str, ...] = tuple(FORMATS)

__all__ = ["FORMATS", "TRACE_FORMATS", "ParsedRow", "TraceFormat"]
