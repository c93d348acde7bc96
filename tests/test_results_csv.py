"""`write_results`'s CSV files read back as the rows they were written from: the iteration
lines, formatted without the csv module, byte for byte what `csv.writer` writes."""

from __future__ import annotations

import csv
import io
import math

from policies.logs import IterationLog
from sim.api import simulate
from sim.config import ReplayOptions, resolve
from sim.results import ITERATION_COLUMNS, REQUEST_COLUMNS, _iteration_lines, write_results


def _log(rows: list[tuple]) -> IterationLog:
    log = IterationLog()
    for row in rows:
        for name, value in zip(ITERATION_COLUMNS[1:], row):
            getattr(log, name).append(value)
    return log


def test_iteration_lines_are_what_csv_writer_writes():
    awkward_s = [0.0, -0.0, 1e-300, 5e-324, 0.1 + 0.2, 1e22, 123456789.123456789, math.inf]
    rows = [(start_s, 1 / (i + 3), i, -i, 2**31 - 1, 0, i * 16, -2**31, 7)
            for i, start_s in enumerate(awkward_s)]
    log = _log(rows)
    expected = io.StringIO(newline="")
    csv.writer(expected).writerows((3, *row) for row in zip(*(getattr(log, name)
                                                               for name in ITERATION_COLUMNS[1:])))
    assert "".join(_iteration_lines(3, log)) == expected.getvalue()


def test_written_csvs_read_back_as_the_results(tmp_path):
    trace = tmp_path / "bad.csv"
    trace.write_text('arrival_time_s,prompt_tokens,output_tokens\n0,10,5\n0.5,1"2,5\n'
                     "1.0,20,1\n2.0,30,4\n")
    results = simulate(resolve(ReplayOptions(trace=str(trace), replicas=2)))
    write_results(results, tmp_path / "out")

    with (tmp_path / "out" / "requests.csv").open(newline="") as fh:
        written = list(csv.DictReader(fh))
    assert list(written[0]) == list(REQUEST_COLUMNS)
    assert written == [{k: "" if v is None else str(v) for k, v in row.items()}
                       for row in results.request_rows()]
    assert '1"2' in written[1]["reason"]  # quoted, so the row keeps its columns

    with (tmp_path / "out" / "iterations.csv").open(newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == list(ITERATION_COLUMNS)
    expected = [[str(index), *map(str, row)] for index, engine in enumerate(results.engines)
                for row in zip(*(getattr(engine.log, name) for name in ITERATION_COLUMNS[1:]))]
    assert lines[1:] == expected and {line[0] for line in lines[1:]} == {"0", "1"}
