"""`servesim calibrate --recorded DIR --out FILE.json`: fit the measured engine's own terms to
recorded runs of it (`sim.engine_fit`), print the fit and its leave-one-model-out
cross-validation, and write the engine's coefficients with the fit's record into FILE.json
(other engines already there are kept; the shipped file is `sim/cost/data/
measured_coefficients.json`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sim.cost.measured_coefficients import MeasuredCoefficients, measured_coefficients

ENGINE = "vllm"
FITTED_TERMS = ("step_overhead_s", "per_sequence_overhead_s", "frontend_latency_s")
DEFAULT_JOBS = min(4, os.cpu_count() or 1)


def add_engine_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recorded", metavar="DIR",
                        help="fit the measured engine's own terms (step and per-sequence "
                             "overhead, frontend latency) to the recorded runs under DIR "
                             "(as `servesim validate --recorded` reads them) into --out "
                             "FILE.json, with leave-one-model-out cross-validation")
    parser.add_argument("--max-requests-per-stage", type=int, default=None,
                        help="--recorded: replay only each stage's first N requests at each "
                             "design point, a quick look biased low on busy stages (default: "
                             "every request; the fitted point is always replayed in full)")
    parser.add_argument("--jobs", type=int,
                        help="--recorded: replays run in this many processes (default: "
                             f"{DEFAULT_JOBS}; results do not depend on it)")


def run_engine_fit(args: argparse.Namespace, console: Console) -> int:
    from sim.engine_fit import DEFAULT_GRID, Terms, fit_recorded  # scipy's optimizers: here only

    if args.out is None:
        raise ValueError("give --out FILE.json: where to write the fitted coefficients")
    if args.check is not None:
        raise ValueError("--recorded fits engine terms; it takes no --check")
    jobs = DEFAULT_JOBS if args.jobs is None else args.jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if args.max_requests_per_stage is not None and args.max_requests_per_stage < 1:
        raise ValueError(f"--max-requests-per-stage must be >= 1, got "
                         f"{args.max_requests_per_stage}")
    out = Path(args.out)
    given: dict[str, Any] = {"hardware": args.hardware} if args.hardware else {}
    if out.exists():  # a refit keeps the file's own non-fitted terms
        given["measured_coefficients"] = str(out)
    base = measured_coefficients(ENGINE, given.get("measured_coefficients"))
    record = fit_recorded(Path(args.recorded), given, grid=DEFAULT_GRID,
                          max_requests_per_stage=args.max_requests_per_stage, jobs=jobs)
    record["data"] = str(args.recorded)
    record["date"] = args.date or datetime.date.today().isoformat()
    fitted = Terms(**record["terms"]).applied_to(base)
    entry = dataclasses.asdict(dataclasses.replace(
        fitted, provenance=_provenance(base.provenance, record), fit=record))
    MeasuredCoefficients.from_json(entry)  # what is written must read back
    out = _write(out, entry)
    console.print(fit_table(record))
    console.print(f"wrote the {ENGINE} engine's fitted coefficients to {out}")
    return 0


def _provenance(previous: str, record: dict[str, Any]) -> str:
    """The previous provenance, its note on the fitted terms replaced by this fit's."""
    kept = previous.split(" Fitted terms: ")[0]
    errors = record["median_abs_rel_error"]
    cv = record.get("leave_one_model_out", {}).get("median_abs_rel_error", {})
    return (f"{kept} Fitted terms: {', '.join(FITTED_TERMS)} by "
            f"`servesim calibrate --recorded {record['data']}` on {record['date']}, to "
            f"{len(record['runs']) - len(record['excluded_runs'])} recorded runs not overloaded "
            f"(median |rel. error| ttft {_pct(errors['ttft'])}, e2e {_pct(errors['e2e'])}, "
            f"itl {_pct(errors['itl'])}; leave-one-model-out ttft {_pct(cv.get('ttft'))}, "
            f"e2e {_pct(cv.get('e2e'))}, itl {_pct(cv.get('itl'))}); the record is `fit`.")


def _write(path: Path, entry: dict[str, Any]) -> Path:
    table: dict[str, Any] = {}
    if path.exists():
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: exists but is not valid JSON ({exc})") from None
    table[ENGINE] = entry
    path.write_text(json.dumps(table, indent=2) + "\n")
    return path


def fit_table(record: dict[str, Any]) -> Table:
    terms = record["terms"]
    table = Table(title=f"engine terms fitted to {record['data']}: step {terms['step_overhead_s'] * 1e3:.3f} "
                        f"ms, per sequence {terms['per_sequence_overhead_s'] * 1e6:.2f} us, "
                        f"frontend {terms['frontend_latency_s'] * 1e3:.2f} ms",
                  title_justify="left")
    for column in ("fit", "step (ms)", "per seq (us)", "frontend (ms)", "ttft", "e2e", "itl",
                   "all"):
        table.add_column(column, justify="left" if column == "fit" else "right")
    errors = record["median_abs_rel_error"]
    table.add_row("all models, every run replayed", *_term_cells(terms), *_error_cells(errors))
    cv = record.get("leave_one_model_out")
    if cv:
        for model, fold in cv["folds"].items():
            table.add_row(f"held out: {model}", *_term_cells(fold["terms"]),
                          *_error_cells(fold["held_out_median_abs_rel_error"]))
        table.add_row("leave-one-model-out (all held-out figures)", "", "", "",
                      *_error_cells(cv["median_abs_rel_error"]))
    table.caption = (f"median |rel. error|; overload verdicts agree on "
                     f"{record['overload_agreement']}/{len(record['runs'])} runs")
    return table


def _term_cells(terms: dict[str, float]) -> list[str]:
    return [f"{terms['step_overhead_s'] * 1e3:.3f}", f"{terms['per_sequence_overhead_s'] * 1e6:.2f}",
            f"{terms['frontend_latency_s'] * 1e3:.2f}"]


def _error_cells(errors: dict[str, float | None]) -> list[str]:
    return [_pct(errors.get(family)) for family in ("ttft", "e2e", "itl", "all")]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
