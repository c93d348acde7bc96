"""`servesim profile` and `servesim validate`: measure the real backend, and the simulator's
error against it.

    servesim profile --executor real --model M --out P.json [--scheduler S --allocator A ...]
    servesim validate --trace T --model M [--calibration C.json] [--repeats N]
                      [--scheduler ... --allocator ... --speculator ...] --out DIR
    servesim validate --recorded DIR --out OUT [--max-requests-per-stage N] [replay flags]

Both need the `backend` extra (torch); it is imported only inside these commands, so the
simulator's own import path stays free of torch. `validate` takes every replay flag (the
same `ReplayOptions` names); without `--calibration` it profiles this configuration and
fits the cost model first (DIR/profile.json, DIR/calibration.json). With `--recorded DIR` it
needs no torch: it replays recorded inference-perf runs in the simulator (`sim.recorded_cli`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from sim.config import ReplayOptions
from sim.extras import require_extra

GRIDS = ("default", "tiny")
CLOCKS = ("wall", "cpu")
"""How the real backend times steps; the first is the default."""
DEFAULT_REPEATS = 3


def _grid(name: str | None, passes: int | None):
    from backend.profile import TINY_GRID, ProfileGrid

    grid = {"default": ProfileGrid(), "tiny": TINY_GRID}[name or "default"]
    return grid if passes is None else dataclasses.replace(grid, passes=passes)


def _grid_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", choices=GRIDS,
                        help="profile grid: default (about a minute on tiny-llama), or tiny "
                             "(seconds; for tests) (default: default)")
    parser.add_argument("--passes", type=int, help="passes over the grid (default: the grid's)")
    parser.add_argument("--clock", choices=CLOCKS,
                        help="time by the wall clock, or by this thread's CPU time (CPU only: "
                             "leaves out other processes' share of a shared machine; idle "
                             f"waits are skipped) (default: {CLOCKS[0]})")


def add_profile_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "profile", help="time the real backend over a grid of batch shapes",
        description="Time whole engine steps of the real backend over prefill sizes, decode "
                    "batches and contexts, mixed batches and speculative verify widths; write "
                    "a profile JSON for `servesim calibrate`.")
    parser.add_argument("--executor", choices=["real"], required=True,
                        help="what to profile (only the real backend has timings to measure)")
    parser.add_argument("--model", required=True,
                        help="model name (servesim list models) or a Hugging Face config.json")
    parser.add_argument("--out", required=True, help="profile JSON to write")
    parser.add_argument("--hardware", help="catalog hardware name (default: this device)")
    parser.add_argument("--scheduler", default="continuous", help="scheduler (default: %(default)s)")
    parser.add_argument("--allocator", default="paged", help="KV allocator (default: %(default)s)")
    parser.add_argument("--block-size", type=int, default=16, help="KV block size (default: 16)")
    parser.add_argument("--weights", help="local Hugging Face safetensors directory for --model")
    parser.add_argument("--seed", type=int, default=0, help="weights and prompt seed")
    _grid_flags(parser)


def add_validate_parser(sub: argparse._SubParsersAction,
                        add_option_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    parser = sub.add_parser(
        "validate", help="the simulator's error against the real backend on a trace",
        description="Replay a trace on the real backend (wall-clock arrivals) and in the "
                    "simulator with a calibrated cost model, N times; write DIR/validation.json "
                    "(relative errors, medians and spread over repeats), per-request errors "
                    "and simulated-vs-measured CDF plots.")
    parser.add_argument("--recorded", metavar="DIR",
                        help="replay every recorded inference-perf run under DIR (exp-config."
                             "yaml, results/) in the simulator and compare per stage: writes "
                             "OUT/recorded.csv and OUT/recorded.json; no real backend")
    parser.add_argument("--max-requests-per-stage", type=int,
                        help="--recorded: replay only each stage's first N requests, at their "
                             "send times (faster; default: all)")
    parser.add_argument("--repeats", type=int,
                        help=f"real runs; errors are medians over them (default: {DEFAULT_REPEATS})")
    parser.add_argument("--out", required=True, help="directory for validation.json and runs")
    parser.add_argument("--max-prompt-tokens", type=int,
                        help="cap every prompt at this many tokens (CPU-sized replays)")
    parser.add_argument("--max-output-tokens", type=int,
                        help="cap every output at this many tokens")
    parser.add_argument("--profile-each-repeat", action="store_true",
                        help="without --calibration: profile and fit before every repeat, not "
                             "once (tracks a machine whose speed drifts)")
    parser.add_argument("--pool-profiles", action="store_true",
                        help="with --profile-each-repeat: fit one calibration to all the "
                             "repeats' profiles and simulate every repeat with it (averages "
                             "over the machine's speed states during the runs)")
    parser.add_argument("--speed-replay", action="store_true",
                        help="without --calibration: also fit at the speed meter's reference "
                             "speed and replay each real run's measured machine speed in its "
                             "simulation (report the model's error apart from a shared "
                             "machine's speed changes; the plain errors are kept beside)")
    _grid_flags(parser)
    add_option_flags(parser)


def _need_torch(command: str) -> None:
    require_extra("backend", f"servesim {command} runs the real backend, which")


def _hardware(given: str | None) -> str:
    if given:
        return given
    from backend.replay import detect_hardware

    return detect_hardware()


def run_profile(args: argparse.Namespace, console: Console) -> int:
    _need_torch("profile")
    from backend.profile import profile_real

    options = ReplayOptions(model=args.model, hardware=_hardware(args.hardware),
                            scheduler=args.scheduler, allocator=args.allocator,
                            block_size=args.block_size, weights=args.weights, seed=args.seed,
                            executor="real")
    grid = _grid(args.grid, args.passes)
    profile = profile_real(options, grid, lambda done, total: console.print(
        f"[dim]pass {done}/{total}[/dim]"), args.clock or CLOCKS[0])
    out = Path(args.out)
    out.write_text(json.dumps(profile, indent=1) + "\n")
    console.print(f"wrote {len(profile['samples'])} timed shapes of {profile['model']} on "
                  f"{profile['hardware']} to {out}")
    return 0


def run_validate(args: argparse.Namespace, console: Console, options: ReplayOptions) -> int:
    if args.recorded is not None:
        from sim.recorded_cli import run_recorded

        _refuse_real_only(args)
        return run_recorded(args, console)
    if args.max_requests_per_stage is not None:
        raise ValueError("--max-requests-per-stage applies to --recorded only")
    _need_torch("validate")
    from backend.validate import ValidateSettings, validate
    from sim.api import simulate
    from sim.run_notes import unread_options

    options = dataclasses.replace(options, hardware=_hardware(
        options.hardware if "hardware" in vars(args) else None))
    settings = ValidateSettings(repeats=DEFAULT_REPEATS if args.repeats is None else args.repeats,
                                max_prompt_tokens=args.max_prompt_tokens,
                                max_output_tokens=args.max_output_tokens,
                                grid=_grid(args.grid, args.passes), clock=args.clock or CLOCKS[0],
                                profile_each_repeat=args.profile_each_repeat,
                                pool_profiles=args.pool_profiles,
                                speed_replay=args.speed_replay)
    report = validate(options, args.out, settings, simulate,
                      lambda text: console.print(f"[dim]{text}[/dim]"))
    console.print(error_table(report))
    for note in unread_options(options):
        console.print(f"note: {note}", soft_wrap=True)
    console.print(f"wrote {Path(args.out) / 'validation.json'}")
    return 0


REAL_ONLY_OPTIONS = ("repeats", "max_prompt_tokens", "max_output_tokens", "profile_each_repeat",
                     "pool_profiles", "speed_replay", "grid", "passes", "clock")
"""The options that steer real-backend runs (each None or False unless given, so giving its
default value is caught too); --recorded runs none."""


def _refuse_real_only(args: argparse.Namespace) -> None:
    for name in REAL_ONLY_OPTIONS:
        if getattr(args, name) not in (None, False):
            raise ValueError(f"--{name.replace('_', '-')} steers the real backend's runs; "
                             "--recorded replays recorded runs in the simulator only")


def error_table(report: dict) -> Table:
    from sim.validation import HEADLINE_KEYS  # not at import: every `servesim` imports this module

    headline = report["median_abs_rel_error_spread"]
    title = (f"simulated vs measured over {report['repeats']} repeats: median |rel. error| of "
             f"the six headline keys {_pct(headline['median'])} "
             f"(min {_pct(headline['min'])}, max {_pct(headline['max'])})")
    table = Table(title=title, title_justify="left")
    for column in ("key", "rel. error (median)", "min", "max"):
        table.add_column(column, justify="left" if column == "key" else "right")
    for key, spread in report["rel_error_spread"].items():
        if spread["median"] is None:
            continue
        style = "bold" if key in HEADLINE_KEYS else None
        table.add_row(key, _pct(spread["median"]), _pct(spread["min"]), _pct(spread["max"]),
                      style=style)
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"
