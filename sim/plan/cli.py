"""The `plan` subcommand of `servesim`: parser and runner.

Exit status: 0 with an answer; 1 when the search ran but no configuration meets the SLOs
(plan.csv and plan.json still say why each family failed); 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console

from sim.config import ReplayOptions
from sim.sweep.backends import BACKENDS

if TYPE_CHECKING:
    from sim.plan.search import Candidate

PLAN_FLAGS = {
    "hardware": "comma-separated hardware to try, e.g. h100,h200,a100",
    "disaggregate": "auto: also try P:D prefill:decode splits",
    "tp": "TP degrees to try, comma-separated (default: every degree the model allows)",
    "token_budget": "chunked token budgets to try, comma-separated (default: 2048,8192)",
    "max_num_seqs": "max sequences per iteration to try, comma-separated (default: 128,256)",
}
"""Replay flags the plan reads as lists or modes (taken out before the replay options)."""


def add_plan_parser(sub: argparse._SubParsersAction,
                    add_replay_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    plan = sub.add_parser(
        "plan", help="fewest, cheapest configurations meeting SLOs at a target load")
    plan.add_argument("--slo", required=True,
                      help="METRIC=SECONDS,... over latency summary keys, e.g."
                           " ttft_p99=2,tpot_p99=0.05")
    plan.add_argument("--rate", type=float,
                      help="target load in requests/s (a rate scale of the trace); not with"
                           " --rate-scale (default: the trace as recorded)")
    plan.add_argument("--gpu-price", help="USD per GPU-hour by hardware, e.g. h100=2.5,a100=1.6"
                                          " (default: rank by GPU count, $ shown as -)")
    plan.add_argument("--max-gpus", type=int, default=64,
                      help="largest configuration considered, in GPUs (default: 64)")
    plan.add_argument("--backend", choices=BACKENDS, default="local",
                      help="where families are searched: local process pool or Ray"
                           " (default: local)")
    plan.add_argument("--address", help="ray: an existing cluster's address")
    plan.add_argument("--workers", type=int, help="families searched at once (default: all"
                                                  " cores)")
    plan.add_argument("--out", required=True,
                      help="plan.csv, plan.json, best.toml and pareto.html go here")
    plan.add_argument("--quiet", action="store_true", help="no progress lines")
    add_replay_flags(plan)
    for action in plan._actions:
        if action.dest in PLAN_FLAGS:
            action.type = str
            action.help = PLAN_FLAGS[action.dest]


def run_plan_command(args: argparse.Namespace, console: Console,
                     replay_options: Callable[[argparse.Namespace], ReplayOptions]) -> int:
    """`replay_options(args)` builds the shared options (flags over --config), once the
    plan's own list flags are taken out of `args`."""
    from sim.plan.planner import PlanRequest, make_plan, parse_ints
    from sim.plan.report import answer_line, ranked_table, write_plan
    from sim.plan.search import MAX_NUM_SEQS, TOKEN_BUDGETS
    from sim.sweep.capacity import parse_slo
    from sim.sweep.cheapest import parse_prices

    given: dict[str, Any] = {name: getattr(args, name) for name in PLAN_FLAGS if hasattr(args, name)}
    for name in given:
        delattr(args, name)
    if getattr(args, "executor", "sim") != "sim":  # before replay_options looks for a GPU
        raise ValueError("plan runs the simulator: it needs --executor sim")
    options = replay_options(args)
    defaults = ReplayOptions()
    for name in PLAN_FLAGS:  # a --config file's values, when the flags did not set them
        if name not in given and getattr(options, name) != getattr(defaults, name):
            given[name] = str(getattr(options, name))
    disaggregate = given.get("disaggregate")
    if disaggregate not in (None, "auto"):
        raise ValueError(f"plan takes --disaggregate auto (it searches P:D splits), got "
                         f"{disaggregate!r}")
    base = options.updated({
        "hardware": "h100", "disaggregate": None, "tp": 1, "token_budget": None,
        "max_num_seqs": 256, "rate_scale": 1.0,
        "scheduler": (options.scheduler if hasattr(args, "scheduler")
                      or options.scheduler != defaults.scheduler else "chunked")})
    request = PlanRequest(
        base=base,
        hardware=_names(given.get("hardware", defaults.hardware), "--hardware"),
        slo=parse_slo(args.slo),
        rate_scale=(None if options.rate_scale == 1.0 and not hasattr(args, "rate_scale")
                    else options.rate_scale),
        rate_req_s=args.rate,
        prices=parse_prices(args.gpu_price) if args.gpu_price else {},
        max_gpus=args.max_gpus,
        disaggregate=disaggregate == "auto",
        tps=parse_ints(given["tp"], "--tp") if "tp" in given else None,
        token_budgets=(parse_ints(given["token_budget"], "--token-budget")
                       if "token_budget" in given else list(TOKEN_BUDGETS)),
        max_num_seqs=(parse_ints(given["max_num_seqs"], "--max-num-seqs")
                      if "max_num_seqs" in given else list(MAX_NUM_SEQS)),
    )

    def progress(done: int, total: int, candidate: Candidate) -> None:
        if args.quiet:
            return
        from sim.plan.report import describe

        outcome = (f"{candidate.num_gpus} GPUs" if candidate.feasible
                   else f"infeasible: {candidate.reason}")
        print(f"[{done}/{total}] {describe(candidate)}: {outcome} "
              f"({candidate.num_simulations} simulations)", file=sys.stderr, flush=True)

    plan = make_plan(request, backend=args.backend, workers=args.workers, address=args.address,
                     progress=progress)
    written = write_plan(plan, args.out)
    console.print(answer_line(plan))
    if plan.best is None:
        console.print(f"wrote {', '.join(str(p) for p in written)}")
        return 1
    console.print(ranked_table(plan))
    console.print(f"{plan.num_simulations} simulations; wrote "
                  f"{', '.join(p.name for p in written)} to {args.out}; reproduce with "
                  f"servesim replay --config {args.out}/best.toml")
    return 0


def _names(text: str, flag: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise ValueError(f"{flag} takes comma-separated names, got {text!r}")
    return names

