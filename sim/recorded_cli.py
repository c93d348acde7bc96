"""`servesim validate --recorded DIR --out OUT`: replay every recorded run under DIR and write
OUT/recorded.csv (run, stage, metric, measured, simulated, rel_error) and OUT/recorded.json
(median |rel. error| per metric family over the runs not recorded as overloaded, and each
run's overload verdicts). `sim.recorded` says how runs are read and compared.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich import box
from rich.table import Table

from sim import recorded
from sim.config import ReplayOptions, options_from_toml, resolve


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The replay options set on the command line (or its --config file): they override
    each run's own settings."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(options_from_toml(args.config))
    values.update({n: getattr(args, n) for n in ReplayOptions.names() if hasattr(args, n)})
    for name in ("trace", "executor"):
        if name in values:
            raise ValueError(f"--{name} does not apply to --recorded: each run's workload is "
                             "replayed in the simulator")
    return values


def run_recorded(args: argparse.Namespace, console: Console) -> int:
    from sim.api import simulate

    root = Path(args.recorded)
    given = given_options(args)
    runs = [recorded.read_run(path) for path in recorded.find_runs(root)]
    all_rows: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    for run in runs:
        options = recorded.run_options(run, root, given)
        config = recorded.first_per_stage(resolve(options), args.max_requests_per_stage)
        console.print(f"[dim]replaying {run.name} ({len(config.trace.requests)} requests)[/dim]")
        results = simulate(config)
        compared = recorded.compare_run(run, config, results.request_rows())
        all_rows.extend(compared["rows"])
        reports.append({"run": run.name, "model": run.model_name, "engine": run.engine,
                        "workload": str(run.workload_path),
                        "cost_model": results.summary.get("cost_model"),
                        "cost_model_choice": results.summary.get("cost_model_choice"),
                        "horizon_s": options.horizon_s,
                        "num_requests_replayed": len(config.trace.requests),
                        "overload": compared["overload"],
                        "median_abs_rel_error": recorded.median_errors(compared["rows"])})
    excluded = [r["run"] for r in reports if r["overload"]["recorded"]["overloaded"]]
    kept_rows = [row for row in all_rows if row["run"] not in excluded]
    summary = {
        "median_abs_rel_error": recorded.median_errors(kept_rows),
        "excluded_runs": excluded,
        "exclusion_rule": "runs recorded as overloaded (failed share > "
                          f"{recorded.OVERLOAD_SHARE:g} or a stage TTFT p90 > "
                          f"{recorded.OVERLOAD_TTFT_S:g} s) are left out of the medians",
        "overload_agreement": sum(r["overload"]["agree"] for r in reports),
        "num_runs": len(reports),
        "itl_definition": "(request_latency - ttft) / (requested output tokens - 1); recorded "
                          "p90/p99 from the percentiles of request latency and TTFT "
                          "(approximation); simulated: each request's tpot",
        "max_requests_per_stage": args.max_requests_per_stage,
        "replay_flags": dict(given),
        "runs": reports,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "recorded.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=recorded.CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(all_rows)
    (out / "recorded.json").write_text(json.dumps(_clean(summary), indent=1) + "\n")
    console.print(recorded_table(reports, all_rows, summary))
    console.print(f"wrote {out / 'recorded.csv'} and {out / 'recorded.json'}")
    return 0


def recorded_table(reports: list[dict[str, Any]], rows: list[dict[str, Any]],
                   summary: dict[str, Any]) -> Table:
    """One line per run and stage: the relative error of each metric, and the verdicts."""
    medians = summary["median_abs_rel_error"]
    title = ("simulated vs recorded: median |rel. error| "
             + ", ".join(f"{k} {_pct(v)}" for k, v in medians.items())
             + f" (without {len(summary['excluded_runs'])} overloaded runs); overload verdicts "
             f"agree on {summary['overload_agreement']}/{summary['num_runs']}")
    table = Table(title=title, title_justify="left", box=box.SIMPLE)
    table.add_column("run", no_wrap=True)
    table.add_column("stage", justify="right")
    for metric in recorded.METRICS:
        table.add_column(f"{metric} error %\nmean/p90/p99", justify="right")
    table.add_column("overloaded rec/sim", justify="right")
    verdicts = {r["run"]: r["overload"] for r in reports}
    by_stage: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        by_stage.setdefault((row["run"], row["stage"]), {})[row["metric"]] = row["rel_error"]
    for (run, stage), errors in by_stage.items():
        verdict = verdicts[run]
        cells = ["/".join(_whole_pct(errors.get(f"{m}_{s}")) for s in recorded.STATS)
                 for m in recorded.METRICS]
        table.add_row(run, str(stage), *cells,
                      f"{_yes(verdict['recorded']['overloaded'])}/"
                      f"{_yes(verdict['simulated']['overloaded'])}")
    return table


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _whole_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.0f}"


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return recorded.finite_or_none(value)
