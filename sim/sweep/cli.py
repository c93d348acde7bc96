"""The `sweep` and `capacity` subcommands of `servesim` (parsers and runners)."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.table import Table

from sim.sweep.backends import BACKENDS

def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="run a grid of configs (local process pool or Ray)")
    sweep.add_argument("--grid", required=True,
                       help="TOML file of replay options; a list sweeps its values")
    sweep.add_argument("--out", required=True,
                       help="results.csv (and results.parquet with pyarrow) and"
                            " cells/<id>/summary.json go here; rerunning with the same --out"
                            " skips finished cells")
    sweep.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local: a process pool on this machine; ray: local Ray or --address"
                            " (default: local)")
    sweep.add_argument("--address", help="ray: an existing cluster's address (default: start a"
                                         " local Ray)")
    sweep.add_argument("--workers", type=int, help="parallel cells (default: all cores)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")


def run_sweep_command(args: argparse.Namespace, console: Console) -> int:
    from sim.sweep.grid import load_grid
    from sim.sweep.run import run_sweep

    cells = load_grid(args.grid)
    with _progress("cells", args.quiet) as progress:
        table, failed = run_sweep(cells, args.out, backend=args.backend, workers=args.workers,
                                  address=args.address, progress=progress)
    parquet = table.with_suffix(".parquet")
    also = f" and {parquet.name}" if parquet.exists() else ""
    console.print(f"{len(cells)} cells, {failed} failed (see the error column); wrote {table}{also}")
    return 0


def add_capacity_parser(sub: argparse._SubParsersAction, add_replay_flags) -> None:
    capacity = sub.add_parser(
        "capacity", help="highest request rate meeting SLOs (bisection on --rate-scale)")
    capacity.add_argument("--slo", required=True,
                          help="METRIC=SECONDS,... over summary keys, e.g. ttft_p99=2,tpot_p99=0.1")
    capacity.add_argument("--seeds", type=int, default=3,
                          help="runs per probed rate, seeds seed, seed+1, ... (default: 3)")
    capacity.add_argument("--rel-tol", type=float, default=0.02,
                          help="stop when the rate bracket is this narrow, relative (default: 0.02)")
    capacity.add_argument("--z", type=float, default=2.0,
                          help="stop when a metric is within z standard errors of its bound"
                               " (default: 2)")
    capacity.add_argument("--grid", help="search every cell of this sweep grid (over the flags"
                                         " given here) and rank them by price per GPU-hour")
    capacity.add_argument("--gpu-price", help="with --grid: USD per GPU-hour by hardware,"
                                              " e.g. h100=2.5,a100=1.6 (default: each hardware"
                                              " spec's price_per_hour)")
    add_replay_flags(capacity)


def run_capacity_command(args: argparse.Namespace, console: Console, options) -> int:
    from sim.run_notes import unread_options
    from sim.sweep.capacity import find_capacity, parse_slo

    slo = parse_slo(args.slo)
    if args.grid is None and args.gpu_price is not None:
        raise ValueError("--gpu-price goes with --grid (the cheapest cell of a grid)")
    if args.grid is not None:
        return _run_cheapest(args, console, options, slo)
    result = find_capacity(options, slo, seeds=args.seeds, rel_tol=args.rel_tol, z=args.z)
    table = Table(title="capacity probes", title_justify="left")
    table.add_column("rate_scale", justify="right")
    for name in slo:
        table.add_column(f"{name} (<= {slo[name]:g})", justify="right")
    table.add_column("meets")
    for probe in result.probes:
        table.add_row(f"{probe.rate_scale:.4g}", *(
            f"{probe.means[n]:.4g} ± {probe.stderrs[n]:.2g}" for n in slo),
            "yes" if probe.meets else ("noise" if probe.within_noise else "no"))
    console.print(table)
    console.print(f"capacity: rate_scale {result.rate_scale:.4g} = {result.rate_req_s:.4g} req/s"
                  f" (stopped: {result.stopped})")
    if result.seeds_per_probe < args.seeds:
        console.print(f"note: seeds {options.seed} and {options.seed + 1} gave the same run (the "
                      "trace and everything else are fixed), so each probe ran once, not "
                      f"{args.seeds} times")
    for note in unread_options(options):
        console.print(f"note: {note}", soft_wrap=True)
    return 0


def _run_cheapest(args: argparse.Namespace, console: Console, options, slo) -> int:
    from sim.sweep.capacity import find_capacity
    from sim.sweep.cheapest import cheapest, parse_prices
    from sim.sweep.grid import load_grid

    cells = load_grid(args.grid)
    given = parse_prices(args.gpu_price) if args.gpu_price is not None else {}
    ranked = cheapest(options, cells, given, lambda o: find_capacity(
        o, slo, seeds=args.seeds, rel_tol=args.rel_tol, z=args.z))
    keys = list(dict.fromkeys(key for cell in cells for key in cell.values))
    table = Table(title="cells by price per million requests", title_justify="left")
    for col in (*keys, "gpus", "rate_scale", "req/s", "USD/1M req", "note"):
        table.add_column(col)
    for p in ranked:
        table.add_row(*(str(p.cell.values.get(k, "")) for k in keys), str(p.num_gpus),
                      *((f"{p.capacity.rate_scale:.4g}", f"{p.capacity.rate_req_s:.4g}",
                         f"{p.usd_per_million_requests:.4g}") if p.capacity else ("", "", "")),
                      p.error)
    console.print(table)
    best = ranked[0]
    if best.capacity is None:
        raise ValueError("no cell of the grid meets the SLOs at any probed rate")
    console.print(f"cheapest: cell {best.cell.index} ({best.cell.values}) at "
                  f"{best.usd_per_million_requests:.4g} USD per million requests")
    return 0


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator:
    progress_console = Console(stderr=True)
    if quiet or not progress_console.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=progress_console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
