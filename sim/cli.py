"""`servesim`: the trace-replay command line.

    servesim replay --trace PATH|synthetic:... --model M --hardware H ... [--config F.toml] --out DIR
    servesim calibrate [PROFILE.json] [--shared DIR] [--hardware H] --out C.json
    servesim profile --executor real --model M --out P.json
    servesim validate --trace T --model M [--calibration C.json] [--repeats N] ... --out DIR
    servesim list models|hardware|schedulers|allocators|speculators|routers|decodings [--spec HARDWARE]
    servesim roofline --model M --hardware H --batch B [--context N]
    servesim ui [--port N] [--host H]
    servesim sweep --grid GRID.toml --out DIR [--backend local|ray] [--address A]
    servesim capacity --slo ttft_p99=2,tpot_p99=0.1 [replay flags]
    servesim plan --slo ttft_p99=2 --hardware h100,a100 [--rate R] [--gpu-price P] --out DIR

Replay flags are generated from `ReplayOptions` (engine options and the registered policies'
knobs), so the CLI, TOML config files and sweep grids share one set of names. Flags override the config file. Bad input ends with a one-line
`error:` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import os

# One BLAS thread: the simulator's numpy work is small arrays, and the threads OpenBLAS starts
# when numpy is first imported cost ~0.1 CPU s of every command (a Ray sweep or a shell loop
# runs many at once). Set before anything imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import re
import sys
from dataclasses import fields
from typing import Any, Callable, NoReturn, Sequence

from rich.console import Console
from rich.table import Table

from sim.calibrate_cli import add_calibrate_parser, run_calibrate
from sim.config import ReplayOptions, SimConfig, options_from_toml, resolve
from sim.extras import install_hint, require_extra
from sim.option_help import OPTION_HELP
from sim.plan.cli import add_plan_parser, run_plan_command
from sim.run_notes import run_notes
from sim.validate_cli import add_profile_parser, add_validate_parser, run_profile, run_validate
from sim.sweep.cli import (add_capacity_parser, add_sweep_parser, run_capacity_command,
                           run_sweep_command)

_CONVERTERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `ReplayOptions` field plus --config (shared by replay and capacity)."""
    for f in fields(ReplayOptions):
        base = str(f.type).split("|")[0].strip()
        if base == "bool":
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name,
                                action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=_with_default(OPTION_HELP[f.name],
                                                   "on" if f.default else "off"))
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=_CONVERTERS[base],
            default=argparse.SUPPRESS, help=_with_default(OPTION_HELP[f.name], f.default),
        )
    parser.add_argument("--config", help="TOML file whose keys are these option names")


def _with_default(text: str, default: Any) -> str:
    """A flag's help with its default said once: help that already says its default (one
    that depends on other options or the model) keeps its own words; an unset option is
    'none', not Python's None or quotes."""
    if re.search(r"\bdefault\b", text):  # the word itself: "T defaults to 0.9" is not one
        return text
    return f"{text} (default: {'none' if default is None else default})"


def _add_replay_flags(parser: argparse.ArgumentParser) -> None:
    _add_option_flags(parser)
    parser.add_argument("--out", help="write summary.json and requests.csv here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class OneLineErrorParser(argparse.ArgumentParser):
    """A bad flag (unknown, missing, or a value of the wrong kind) is one `error:` line and
    exit status 2, like every other bad input; `--help` shows the usage. Subcommands'
    parsers are of this class too (argparse makes them with the parent's class).

    Flags are never abbreviated: argparse would read `--rate 2` as `--rate-scale 2`, a flag
    the user did not write, and a later flag sharing the prefix would change what it means."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="servesim", description="LLM-serving simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="replay a trace through the simulator")
    _add_replay_flags(replay)
    add_calibrate_parser(sub)
    add_profile_parser(sub)
    add_validate_parser(sub, _add_option_flags)
    add_sweep_parser(sub)
    add_capacity_parser(sub, _add_option_flags)
    add_plan_parser(sub, _add_option_flags)
    listing = sub.add_parser("list", help="list known names")
    listing.add_argument("what", choices=["models", "hardware", "schedulers", "allocators",
                                          "speculators", "routers", "decodings"])
    listing.add_argument("--spec", metavar="NAME",
                         help="with hardware: print catalog GPU NAME as a hardware spec file "
                              "(YAML), to edit and pass back as --hardware FILE")
    roofline = sub.add_parser(
        "roofline", help="arithmetic intensity of decode, block-diffusion denoising and prefill "
                         "against the ridge point")
    roofline.add_argument("--model", required=True, help=OPTION_HELP["model"])
    roofline.add_argument("--hardware", required=True, help=OPTION_HELP["hardware"])
    roofline.add_argument("--batch", type=int, required=True, help="sequences per iteration")
    roofline.add_argument("--context", type=int, default=1024,
                          help="tokens of KV each decoding sequence attends to, and the prompt "
                               "length of the prefill rows (default: 1024)")
    roofline.add_argument("--spec-tokens", type=int, default=0,
                          help="draft tokens verified per decoding sequence (default: 0)")
    roofline.add_argument("--diffusion-block", type=int, default=32,
                          help="positions per block of the block-diffusion denoising rows "
                               "(0: none; default: 32)")
    roofline.add_argument("--tp", type=int, default=1, help=OPTION_HELP["tp"])
    roofline.add_argument("--weight-dtype", default=None, help=OPTION_HELP["weight_dtype"])
    roofline.add_argument("--kv-dtype", default="bf16", help=OPTION_HELP["kv_dtype"])
    roofline.add_argument("--calibration", help=OPTION_HELP["calibration"])
    ui = sub.add_parser("ui", help="start the what-if dashboard (needs the ui extra)")
    ui.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    return parser


def replay_options(args: argparse.Namespace) -> ReplayOptions:
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(options_from_toml(args.config))
    values.update({n: getattr(args, n) for n in ReplayOptions.names() if hasattr(args, n)})
    if values.get("executor") == "real":
        require_extra("backend", "--executor real (the torch backend)")
    if values.get("executor") == "real" and "hardware" not in values:
        from backend.replay import detect_hardware

        values["hardware"] = detect_hardware()
    return ReplayOptions().updated(values)


def run_replay(args: argparse.Namespace, console: Console, exits_after: bool = False) -> int:
    """The replay command, collecting cyclic garbage rarely throughout: loading the trace and
    writing the results build tens of thousands of objects that live to the end, which
    older collections at Python's default thresholds walk again and again. A simulated
    replay in a process that `exits_after` it ends the process itself, its output flushed
    (`_exit_skipping_teardown`)."""
    from sim.api import rare_collections

    with rare_collections():
        options = replay_options(args)
        config = resolve(options)
        if options.executor == "real":
            return run_real_replay(config, args.out, console)
        code = _replay(args, console, options, config)
        if exits_after:
            _exit_skipping_teardown(code)
        return code


def _exit_skipping_teardown(code: int) -> NoReturn:
    """End the process without the interpreter's teardown: it would free the run's objects
    one by one, after a last full collection of them (~0.6 s after the conv trace with draft
    speculation, ~0.03 s after Vidur's 10k requests), only to give back memory the exit gives
    back anyway. A simulated replay registers no exit handlers and has closed its files."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _replay(args: argparse.Namespace, console: Console, options: ReplayOptions,
            config: SimConfig) -> int:
    from sim.api import simulate
    from sim.results import write_results

    progress_console = Console(stderr=True)
    if not args.quiet and progress_console.is_terminal:
        from rich.progress import Progress

        with Progress(console=progress_console, transient=True) as bar:
            task = bar.add_task("simulating", total=config.trace.num_rows)
            results = simulate(config, lambda done, total: bar.update(task, completed=done))
    else:
        results = simulate(config)
    console.print(results_table(results))
    console.print(f"[dim]cost model: {results.summary['cost_model']}, "
                  f"{config.cost_model_choice}[/dim]")
    for note in config.trace.notes:
        console.print(f"[dim]trace: {note}[/dim]")
    for note in run_notes(config.trace, options, results.summary):
        console.print(f"note: {note}", soft_wrap=True)
    if args.out:
        out = write_results(results, args.out)
        console.print(f"wrote summary.json, requests.csv and iterations.csv to {out}")
        if len(results.engines) > 1:
            console.print(f"wrote per-replica figures to {out / 'replicas.csv'}")
    return 0


def run_real_replay(config, out_dir: str | None, console: Console) -> int:
    """The torch backend: imported only here, so the simulator path never loads torch."""
    from backend.replay import (output_decoder, replay_real, sample_outputs, write_acceptance,
                                write_outputs)
    from sim.results import write_results

    results, outputs = replay_real(config)
    console.print(results_table(results))
    if out_dir:
        out = write_results(results, out_dir)
        written = [write_outputs(outputs, out, sample_outputs(results), output_decoder(config))]
        if config.options.speculator != "none":
            written.append(write_acceptance(results, out))
        console.print(f"wrote {out / 'summary.json'}, {out / 'requests.csv'} and "
                      f"{', '.join(str(p) for p in written)}")
    return 0


def results_table(results) -> Table:
    s = results.summary
    o = results.config.options
    cluster = f"{o.replicas} replicas ({o.router}) of " if o.replicas > 1 else ""
    if o.disaggregate:
        cluster = f"{o.disaggregate} prefill:decode replicas ({o.router}) of "
    devices = f"{o.tp}x{o.pp}" if o.pp > 1 else f"{o.tp}x"
    title = (f"{results.config.trace.name}: {o.model} on {cluster}{devices} {o.hardware}, "
             f"{o.scheduler} + {o.allocator}, {s['kv_blocks_total']} KV blocks of {o.block_size}")
    if o.speculator != "none":
        title += f", speculator {o.speculator} k={results.config.spec_k}"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for stat in ("mean", "p50", "p90", "p99"):
        table.add_column(stat, justify="right")
    for name in ("ttft", "tpot", "itl", "e2e", "queue"):
        table.add_row(f"{name} (s)", *(_fmt(s[f"{name}_{st}_s"]) for st in ("mean", "p50", "p90", "p99")))
    table.add_section()
    for key in ("requests_total", "requests_finished", "requests_rejected", "requests_unfinished",
                "output_throughput_tok_s", "total_throughput_tok_s", "request_throughput_req_s",
                "goodput_req_s", "preemptions", "swaps", "recomputed_tokens", "evictions",
                "prefix_hit_rate", "batch_size_mean", "kv_util_mean", "kv_frag_mean"):
        table.add_row(key, _fmt(s[key]), "", "", "")
    if o.speculator != "none":
        table.add_section()
        for key in ("spec_tokens_per_step_mean", "spec_accepted_share_of_proposed",
                    "spec_conditional_acceptance_rate", "spec_k_mean",
                    "spec_draft_time_share", "spec_verify_time_share"):
            table.add_row(key, _fmt(s[key]), "", "", "")
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_list(what: str, console: Console, spec: str | None = None) -> int:
    from policies.registry import TABLES
    from sim.cost.catalog import (HARDWARE, HARDWARE_ALIASES, MODEL_ALIASES, MODELS,
                                  aliases_of, get_hardware)
    from sim.cost.hardware_spec import hardware_to_yaml

    if spec is not None:
        if what != "hardware":
            raise ValueError("--spec goes with `servesim list hardware`")
        print(hardware_to_yaml(get_hardware(spec)), end="")
        return 0
    table = Table(title=what, title_justify="left")
    if what == "models":
        for col in ("name", "aliases", "hf id", "params (B)", "active (B)",
                    "KV bytes/token (bf16)", "max len"):
            table.add_column(col)
        for m in MODELS.values():
            table.add_row(m.name, ", ".join(aliases_of(m.name, MODEL_ALIASES)), m.hf_id,
                          f"{m.param_count / 1e9:.2f}", f"{m.active_param_count / 1e9:.2f}",
                          f"{m.kv_bytes_per_token():,.0f}", str(m.max_model_len))
    elif what == "hardware":
        for col in ("name", "aliases", "device", "bf16 TFLOP/s", "mem GB/s", "mem GB",
                    "link GB/s", "kernel tables"):
            table.add_column(col)
        for h in HARDWARE.values():
            table.add_row(h.name, ", ".join(aliases_of(h.name, HARDWARE_ALIASES)), h.description,
                          f"{h.peak_flops['bf16'] / 1e12:g}", f"{h.mem_bandwidth_bytes_s / 1e9:g}",
                          f"{h.mem_capacity_bytes / 1e9:g}",
                          f"{h.interconnect_bandwidth_bytes_s / 1e9:g}", h.kernel_tables or "-")
    else:
        table.add_column("name")
        table.add_column("what it does")
        if what == "decodings":
            from policies.decoding.block_diffusion import DECODING_SUMMARIES
            summaries = DECODING_SUMMARIES
        else:
            summaries = {entry.name: entry.summary for entry in TABLES[what].values()}
        for name, summary in summaries.items():
            table.add_row(name, summary)
    console.print(table)
    return 0


def run_roofline(args: argparse.Namespace, console: Console) -> int:
    from sim.cost.catalog import get_hardware, get_model
    from sim.cost.coefficients import default_coefficients, load_coefficients
    from sim.cost.intensity import intensity_table
    from sim.cost.roofline import CostModel

    hardware = get_hardware(args.hardware)
    if args.calibration:
        coefficients = load_coefficients(args.calibration, hardware.coefficients_name)
    else:
        coefficients = default_coefficients(hardware.coefficients_name)
    cost = CostModel(get_model(args.model), hardware, coefficients, tp=args.tp,
                     weight_dtype=args.weight_dtype, kv_dtype=args.kv_dtype)
    rows = intensity_table(cost, args.batch, args.context, args.spec_tokens,
                           args.diffusion_block)
    ridge = hardware.ridge_point_flops_per_byte
    weights = cost.model.weight_dtype_label(args.weight_dtype)
    table = Table(title=(f"{cost.model.name} on {args.tp}x {hardware.name} "
                         f"(weights {weights}, KV {args.kv_dtype}): ridge point "
                         f"{ridge:.0f} FLOP/byte"), title_justify="left")
    for col in ("phase", "group", "seqs", "new/seq", "context", "GFLOP", "MB moved",
                "FLOP/byte", "time (ms)", "TFLOP/s", "bound"):
        table.add_column(col, justify="left" if col in ("phase", "group", "bound") else "right")
    for row in rows:
        if row.group == "total" or (row.phase != "decode" and row.group == "linear"):
            table.add_section()
        table.add_row(row.phase, row.group, str(row.num_seqs), str(row.new_tokens),
                      str(row.context_tokens), f"{row.flops / 1e9:.4g}",
                      f"{row.bytes_moved / 1e6:.4g}", f"{row.intensity_flops_per_byte:.1f}",
                      f"{row.time_s * 1e3:.3f}", f"{row.achieved_flops_s / 1e12:.1f}",
                      "memory" if row.memory_bound else "compute")
    console.print(table)
    return 0


def run_ui(args: argparse.Namespace) -> NoReturn:
    """Become `python -m ui` (which becomes `streamlit run ui/app.py`): the dashboard runs as
    its own program, so neither streamlit nor the ui package is imported here (exec, so
    signals reach Streamlit and no child is left behind)."""
    import importlib.util
    import os
    import socket

    ui_spec = importlib.util.find_spec("ui")
    require_extra("ui", "the dashboard")
    if ui_spec is None or not ui_spec.origin:
        raise ValueError(f"the dashboard's ui package is missing: {install_hint('ui')}")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must lie in 1..65535, got {args.port}")
    try:  # Streamlit would fail on it with a traceback after starting up
        socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"--host {args.host!r} is not an address to listen on "
                         f"({getattr(exc, 'strerror', None) or exc})") from None
    print(f"servesim dashboard on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "ui", "--port", str(args.port),
                              "--host", args.host])


def entry() -> NoReturn:
    """The `servesim` executable: `main` on this process's arguments, then exit."""
    sys.exit(main(exits_after=True))


def main(argv: Sequence[str] | None = None, exits_after: bool = False) -> int:
    """Run one command; `exits_after`: the process ends with it (`entry`)."""
    args = build_parser().parse_args(argv)
    console = Console(width=max(120, Console().width))
    try:
        if args.command == "replay":
            return run_replay(args, console, exits_after)
        if args.command == "roofline":
            return run_roofline(args, console)
        if args.command == "ui":
            return run_ui(args)
        if args.command == "calibrate":
            return run_calibrate(args, console)
        if args.command == "profile":
            return run_profile(args, console)
        if args.command == "validate":
            return run_validate(args, console, replay_options(args))
        if args.command == "sweep":
            return run_sweep_command(args, console)
        if args.command == "capacity":
            return run_capacity_command(args, console, replay_options(args))
        if args.command == "plan":
            return run_plan_command(args, console, replay_options)
        return run_list(args.what, console, args.spec)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    entry()
