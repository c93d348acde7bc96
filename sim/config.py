"""Run configuration: `ReplayOptions` are what a user types, `SimConfig` is what runs.

`ReplayOptions` holds plain values whose names are the CLI's option names (dashes become
underscores), so a TOML file, the CLI and a sweep grid all speak the same keys. Its fields are
the engine's options, written here, and every registered policy's knobs, generated from the
registry (`sim.policy_knobs`; a knob is declared on its policy's params). `resolve`
does the I/O (reading the trace and calibration files) and the lookups, and returns a
`SimConfig` of ready objects; `sim.api.simulate(SimConfig)` is then pure.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import traces as trace_io
from traces import inference_perf
from policies.decoding.block_diffusion import DiffusionParams
from policies.knobs import declared_knobs, params_from_options
from policies.registry import ALLOCATORS, ROUTERS, SCHEDULERS, SPECULATORS, lookup
from policies.scheduler.base import TakesTransfers
from sim.cost.catalog import get_hardware, get_model
from sim.cost.coefficients import Coefficients, default_coefficients, load_coefficients
from sim.cost.kernel_tables import shipped_hardware, shipped_tables
from sim.cost.measured_coefficients import MeasuredCoefficients, measured_coefficients
from sim.cost.specs import HardwareSpec, ModelSpec, dtype_bytes
from sim.machine_speed import SpeedTrace, read_speed_trace
from sim.option_check import check_option
from sim.policy_knobs import knob_fields, knob_values

if TYPE_CHECKING:  # speculation's modules (and numpy.random) load for runs that speculate
    from sim.speculation.acceptance import AcceptanceModel


@dataclass(frozen=True, slots=True)
@knob_fields
class ReplayOptions:
    """The engine's options (below) and, generated after them, one field per policy knob
    (`spec_k`, `token_budget`, `reserve`, ...: `sim.policy_knobs.KNOBS`)."""

    trace: str = ""
    """Trace file path, a `synthetic:...`, `sessions:...` or `inference-perf:PATH` spec;
    empty: the bundled trace."""
    trace_format: str | None = None
    arrivals: str | None = None
    max_requests: int | None = None
    window_start_s: float = 0.0
    window_end_s: float | None = None
    rate_scale: float = 1.0
    prompt_inflation: float | None = None
    """inference-perf traces: prompt tokens the server counts per token the client drew (None:
    1.046, fitted to the recorded vLLM runs; 1 for synthetic data; see docs/workloads.md)."""
    model: str = "llama-3-8b"
    hardware: str = "h100"
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    router: str = "round-robin"
    disaggregate: str | None = None
    """`P:D`: P prefill replicas feeding D decode replicas (instead of `replicas`)."""
    kv_link_bandwidth_gb_s: float = 50.0
    """Per-device link between prefill and decode replicas, GB/s (400 Gb/s InfiniBand)."""
    kv_link_latency_s: float = 0.0002
    scheduler: str = "continuous"
    allocator: str = "paged"
    max_num_batched_tokens: int | None = None
    n: int = 1
    """Parallel samples per request (each generates the trace's output length)."""
    beam_width: int = 1
    beam_churn: float = 0.3
    """Beam search: chance per step that a beam is replaced by a copy of another."""
    length_penalty: float = 1.0
    """Real beam search: answers score sum_logprob / num_output_tokens ** length_penalty."""
    priority_mix: str | None = None
    """Share of requests in each priority class, e.g. `0.2,0.8` (class 0 first); drawn per
    request from the seed."""
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    num_gpu_blocks: int | None = None
    swap_space_gb: float = 4.0
    """Host memory for swapped KV per device, GiB (vLLM's default 4)."""
    max_model_len: int | None = None
    weight_dtype: str | None = None
    """Every weight at this dtype; None: the model's own (its config's dtype, quantized
    components at theirs; catalog models bf16)."""
    kv_dtype: str = "bf16"
    calibration: str | None = None
    cost_model: str = "auto"
    """`roofline`: FLOPs and bytes against peaks (`sim.cost.roofline`); `measured`: kernel
    latencies measured inside vLLM (`sim.cost.measured`); `auto`: `measured` where the
    hardware has shipped kernel tables and no roofline-only option is set, else `roofline`
    (`SimConfig.cost_model_choice` says which and why)."""
    measured_coefficients: str | None = None
    """The measured model's engine coefficients: a JSON file as `servesim calibrate
    --recorded` writes it (None: the shipped `sim/cost/data/measured_coefficients.json`)."""
    speed_trace: str | None = None
    """A real run's measured machine speed (`sim.machine_speed`): each step's price is scaled
    by the factors at its start (overhead and roofline terms apart), to replay a run on a
    machine whose speed changed under it."""
    seed: int = 0
    horizon_s: float | None = None
    fast_forward: bool = True
    """Run each stretch of decode-only iterations of an unchanged batch as one event (the
    results are the same as stepping one iteration at a time; only the cost differs)."""
    async_scheduling: str = "auto"
    """`on`: plan each step while the one before runs, as vLLM does by default since 0.14 (an
    arrival first runs in the step after next); `off`: plan between steps; `auto`: what the
    engine the cost model prices does (`on` for the measured vLLM model, else `off`)."""
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    speculator: str = "none"
    spec_acceptance: str | float | None = None
    """A rate, a per-position rate list, beta:MEAN:CONC, or an acceptance trace file (a TOML
    file may give a rate as a number)."""
    spec_draft_pass_overhead_s: float = 0.0
    pace: str = "trace"
    """`trace`: requests arrive at their trace times; `asap`: all at 0 s, in trace order."""
    executor: str = "sim"
    """`sim`: the cost model (`cost_model`) in simulated time; `real`: the torch backend,
    wall clock."""
    weights: str | None = None
    """Real executor: a local Hugging Face directory of safetensors for --model."""
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        """Every value, from the CLI, a TOML file, a sweep grid or the dashboard, passes one
        check keyed by the field's type (`sim.option_check`); integral floats become ints."""
        for f in fields(self):
            value = check_option(f.name, getattr(self, f.name), f.type)
            object.__setattr__(self, f.name, value)

    @property
    def pools(self) -> tuple[int, ...]:
        """Replica pool sizes: `(replicas,)` colocated, `(prefill, decode)` disaggregated."""
        if self.disaggregate is None:
            return (self.replicas,)
        return parse_pools(self.disaggregate)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def updated(self, values: dict[str, Any]) -> ReplayOptions:
        unknown = set(values) - set(self.names())
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(self.names())}"
            )
        return replace(self, **values)


def parse_pools(text: str) -> tuple[int, int]:
    prefill, sep, decode = text.partition(":")
    if not (sep and prefill.strip().isdigit() and decode.strip().isdigit()
            and int(prefill) >= 1 and int(decode) >= 1):
        raise ValueError(f"--disaggregate takes P:D with P, D >= 1 replicas (e.g. 1:3), got {text!r}")
    return int(prefill), int(decode)


def options_from_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file whose keys are option names (dashes or underscores)."""
    if not str(path).strip():
        raise ValueError("the config file's path is blank: give a TOML file of replay options")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read config {path}: {exc}") from exc
    return {key.replace("-", "_"): value for key, value in data.items()}


def options_to_toml(options: ReplayOptions, header: str = "") -> str:
    """A config file that `servesim replay --config` reads back into `options`.

    Only options that differ from the defaults are written (None means "the default", and TOML
    has no null); `header` becomes comment lines at the top.
    """
    defaults = ReplayOptions()
    lines = [f"# {line}" for line in header.splitlines()]
    for name in ReplayOptions.names():
        value = getattr(options, name)
        if value is None or value == getattr(defaults, name):
            continue
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are all valid TOML basic-string escapes
    raise ValueError(f"cannot write {value!r} to TOML")


@dataclass(frozen=True, slots=True)
class SimConfig:
    trace: trace_io.Trace
    model: ModelSpec
    hardware: HardwareSpec
    coefficients: Coefficients
    options: ReplayOptions
    max_model_len: int
    max_num_batched_tokens: int
    """The most tokens one step computes: the scheduler's step limit
    (`step_token_limit` of the resolved `--max-num-batched-tokens`), which sizes the memory
    profile's dummy batch and bounds speculative drafts."""
    policy_options: dict[str, Any] = field(default_factory=dict)
    acceptance: AcceptanceModel | None = None
    """None when `speculator` is `none`."""
    draft_model: ModelSpec | None = None
    tiny_draft_model: ModelSpec | None = None
    speed: SpeedTrace | None = None
    """`--speed-trace`, read; None without one."""
    measured: MeasuredCoefficients | None = None
    """The measured model's coefficients when it prices the run (the kernel tables load with
    the cost model); None: the roofline does."""
    cost_model_choice: str = ""
    """Which cost model prices the run and why (summary.json's `cost_model_choice`)."""

    @property
    def frontend_latency_s(self) -> float:
        """Time a request spends outside the engine's steps: sent to queued (HTTP,
        tokenization) plus sampled to received (detokenization, streaming), lumped on the way
        in. The measured engine's fitted coefficient; the roofline models none."""
        return self.measured.frontend_latency_s if self.measured is not None else 0.0

    @property
    def spec_k(self) -> int:
        """`spec_k_of(options)`: the most drafts a step of this run verifies."""
        return spec_k_of(self.options)


def spec_k_of(options: ReplayOptions) -> int:
    """The most drafts one step verifies: `--spec-k`, or unset the speculator's own default
    (lookahead's N - 1); 0 without speculation."""
    if options.speculator == "none":
        return 0
    entry = lookup(SPECULATORS, "speculator", options.speculator)
    return entry.make_params(knob_values(options)).spec_k


def load_workload(options: ReplayOptions) -> trace_io.Trace:
    spec = options.trace or str(trace_io.DEFAULT_TRACE_PATH)
    is_inference_perf = spec.startswith(inference_perf.TRACE_PREFIX)
    if options.prompt_inflation is not None and not is_inference_perf:
        raise ValueError("--prompt-inflation applies to inference-perf:PATH traces only")
    if is_inference_perf:
        trace = _inference_perf_trace(spec.removeprefix(inference_perf.TRACE_PREFIX), options)
    elif spec.startswith("sessions:"):
        trace = trace_io.session_trace(trace_io.parse_sessions(spec), seed=options.seed)
    elif spec.startswith("synthetic:"):
        n, arrivals, prompt, output = trace_io.parse_synthetic(spec)
        trace = trace_io.synthetic_trace(n, arrivals, prompt, output, seed=options.seed)
    else:
        arrivals = trace_io.parse_arrivals(options.arrivals) if options.arrivals else None
        trace = trace_io.load_trace(
            spec, options.trace_format, arrivals=arrivals, seed=options.seed,
            max_requests=options.max_requests,
        )
    if options.window_start_s or options.window_end_s is not None:
        trace = trace_io.window(trace, options.window_start_s, options.window_end_s)
    if options.rate_scale != 1.0:
        trace = trace_io.scale_rate(trace, options.rate_scale)
    if options.n != 1 or options.beam_width != 1:
        beam = options.beam_width > 1
        width = options.beam_width if beam else options.n
        requests = [dataclasses.replace(r, n=width, beam=beam) for r in trace.requests]
        note = f"beam search, width {width}" if beam else f"{width} samples per request"
        trace = trace_io.with_requests(trace, requests, note)
    if options.priority_mix:
        trace = trace_io.assign_priorities(trace, parse_priority_mix(options.priority_mix),
                                           seed=options.seed)
    if options.pace == "asap":
        trace = trace_io.all_at_once(trace)
    return trace


def _inference_perf_trace(path: str, options: ReplayOptions) -> trace_io.Trace:
    """The config's requests, their token ids over the served model's vocabulary."""
    for name, value in (("--arrivals", options.arrivals), ("--trace-format", options.trace_format)):
        if value is not None:
            raise ValueError(f"{name} does not apply to an inference-perf config: its load "
                             "section sets the arrivals and the format")
    from traces.inference_perf.workload import load_inference_perf

    return load_inference_perf(
        path, seed=options.seed, vocab_size=get_model(options.model).vocab_size,
        prompt_inflation=options.prompt_inflation, max_requests=options.max_requests)


def parse_priority_mix(text: str) -> list[float]:
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        shares = []
    if not shares or any(not share >= 0 for share in shares) or not sum(shares) > 0:
        raise ValueError(f"--priority-mix takes class shares like 0.2,0.8, got {text!r}")
    return [share / sum(shares) for share in shares]


PACES = ("trace", "asap")
EXECUTORS = ("sim", "real")
COST_MODELS = ("auto", "roofline", "measured")
ASYNC_SCHEDULING = ("auto", "on", "off")


def _roofline_only(options: ReplayOptions) -> list[tuple[str, str]]:
    """(flag, why) of each option set that only the roofline model prices."""
    return [(flag, why) for flag, why, given in (
        ("--executor real", "the real backend times its own steps", options.executor == "real"),
        (f"--pp {options.pp}", "the kernel tables price one pipeline stage", options.pp != 1),
        ("--calibration", "its coefficients are the roofline's", options.calibration is not None),
        ("--speed-trace", "its factors scale the roofline's terms", options.speed_trace is not None))
        if given]


def _listed(flags: list[str]) -> str:
    """'--a applies' or '--a, --b apply': the subject of a one-line error."""
    return f"{flags[0]} applies" if len(flags) == 1 else f"{', '.join(flags)} apply"


def _check_run_mode(options: ReplayOptions) -> None:
    if options.pace not in PACES:
        raise ValueError(f"unknown pace {options.pace!r}; choose one of: {', '.join(PACES)}")
    if options.executor not in EXECUTORS:
        raise ValueError(
            f"unknown executor {options.executor!r}; choose one of: {', '.join(EXECUTORS)}")
    if options.executor == "sim":
        real_only = [name for name, value, default in (
            ("--temperature", options.temperature, 0.0), ("--top-k", options.top_k, 0),
            ("--top-p", options.top_p, 1.0), ("--weights", options.weights, None),
            ("--length-penalty", options.length_penalty, 1.0))
            if value != default]
        if real_only:
            raise ValueError(f"{_listed(real_only)} only to --executor real")
    elif options.speed_trace is not None:
        raise ValueError("--speed-trace replays a measured machine speed in the simulator; "
                         "the real executor runs at whatever speed the machine has")
    if options.async_scheduling not in ASYNC_SCHEDULING:
        raise ValueError(f"--async-scheduling must be one of {', '.join(ASYNC_SCHEDULING)}, got "
                         f"{options.async_scheduling!r}")
    if options.async_scheduling == "on" and options.executor == "real":
        raise ValueError("--async-scheduling on is simulated only: the real backend plans "
                         "between steps (use auto or off with --executor real)")
    if options.cost_model not in COST_MODELS:
        raise ValueError(f"unknown cost model {options.cost_model!r}; choose one of: "
                         f"{', '.join(COST_MODELS)}")
    given = [flag for flag, _ in _roofline_only(options)]
    if options.cost_model == "measured" and given:
        raise ValueError(f"--cost-model measured does not combine with {', '.join(given)} "
                         "(it prices one pipeline stage in simulated time from its own "
                         "tables and coefficients); use --cost-model roofline")


def _choose_cost_model(options: ReplayOptions,
                       hardware: HardwareSpec) -> tuple[MeasuredCoefficients | None, str]:
    """The measured model's coefficients when it prices the run (None: the roofline does),
    and the choice in words. `auto` takes the measured model unless the hardware has no
    shipped kernel tables or a roofline-only option is set; an explicit `measured` on
    hardware without tables is an error."""
    if options.cost_model == "roofline":
        return None, "roofline (--cost-model roofline)"
    if options.cost_model == "measured":
        shipped_tables(_kernel_tables_of(hardware))
        return _measured_coefficients(options), "measured (--cost-model measured)"
    if hardware.kernel_tables is None:
        return None, (f"auto: roofline (no measured kernel tables for {hardware.name}; tables "
                      f"exist for {', '.join(shipped_hardware())})")
    blocked = _roofline_only(options)
    if blocked:
        reasons = "; ".join(f"{flag}: {why}" for flag, why in blocked)
        return None, f"auto: roofline ({reasons})"
    return (_measured_coefficients(options),
            f"auto: measured (kernel tables of {hardware.kernel_tables})")


def _kernel_tables_of(hardware: HardwareSpec) -> str:
    if hardware.kernel_tables is None:
        raise ValueError(f"no measured kernel tables for hardware {hardware.name!r}; tables "
                         f"exist for: {', '.join(shipped_hardware())} (a hardware spec file "
                         "names the ones it uses with kernel_tables)")
    return hardware.kernel_tables


def _measured_coefficients(options: ReplayOptions) -> MeasuredCoefficients:
    return measured_coefficients(path=options.measured_coefficients)


def resolve(options: ReplayOptions, trace: trace_io.Trace | None = None) -> SimConfig:
    """Look up names, load files, fill defaults; raise ValueError with a clear message."""
    _check_run_mode(options)
    model = get_model(options.model)
    hardware = get_hardware(options.hardware)
    lookup(SCHEDULERS, "scheduler", options.scheduler)
    lookup(ALLOCATORS, "allocator", options.allocator)
    lookup(SPECULATORS, "speculator", options.speculator)
    lookup(ROUTERS, "router", options.router)
    if options.disaggregate is not None:
        parse_pools(options.disaggregate)
        if options.replicas != 1:
            raise ValueError("give either --replicas N or --disaggregate P:D, not both")
        if not issubclass(lookup(SCHEDULERS, "scheduler", options.scheduler).policy,
                          TakesTransfers):
            raise ValueError(f"--disaggregate needs a scheduler that takes KV hand-offs "
                             f"(an iteration-level one), not {options.scheduler}")
    if options.weight_dtype is not None:
        dtype_bytes(options.weight_dtype)
    dtype_bytes(options.kv_dtype)
    if options.calibration:
        coefficients = load_coefficients(options.calibration, hardware.coefficients_name)
    else:
        coefficients = default_coefficients(hardware.coefficients_name)
    max_model_len = options.max_model_len or model.max_model_len
    if max_model_len < 1:
        raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
    max_tokens = options.max_num_batched_tokens or max(max_model_len, 2048)
    if options.n > 1 and options.beam_width > 1:
        raise ValueError("give either --n (parallel sampling) or --beam-width, not both")
    if (options.n > 1 or options.beam_width > 1) and options.disaggregate:
        raise ValueError("--n and --beam-width are not modelled with --disaggregate yet")
    if trace is None:
        trace = load_workload(options)
    policy_options = {  # every knob by its option name, and what the engine fills in
        **knob_values(options),
        "max_num_batched_tokens": max_tokens,
        "slo_ttft_s": options.slo_ttft_s or 1.0,
        "block_size": options.block_size,
        "max_model_len": max_model_len,
    }
    acceptance, draft, tiny = None, None, None
    if options.speculator != "none":
        acceptance, draft, tiny = _resolve_speculation(options, policy_options)
    elif options.spec_acceptance is not None:
        from sim.speculation.acceptance import parse_acceptance

        parse_acceptance(options.spec_acceptance)  # unused, but a bad value is still an error
    _check_decoding(options, policy_options)
    speed = read_speed_trace(options.speed_trace) if options.speed_trace else None
    measured, choice = _choose_cost_model(options, hardware)
    if measured is None and options.measured_coefficients is not None:
        raise ValueError(f"--measured-coefficients applies to the measured cost model only; "
                         f"this run is priced by {choice}")
    step_tokens = lookup(SCHEDULERS, "scheduler", options.scheduler).make_params(
        policy_options).step_token_limit(max_tokens)
    return SimConfig(trace, model, hardware, coefficients, options, max_model_len, step_tokens,
                     policy_options, acceptance, draft, tiny, speed, measured, choice)


def diffusion_params(options: ReplayOptions) -> DiffusionParams:
    """The decoding knobs of `options` (checked by `DiffusionParams`)."""
    return params_from_options(DiffusionParams, knob_values(options))


def _check_decoding(options: ReplayOptions, policy_options: dict[str, Any]) -> None:
    """Block diffusion's knobs, and what it does not combine with, as one-line errors."""
    params = diffusion_params(options)
    if not params.enabled:
        given = [knob.flag for knob in declared_knobs(DiffusionParams)
                 if knob.option != "decoding"
                 and getattr(params, knob.field_name) != knob.default]
        if given:
            raise ValueError(f"{_listed(given)} only to --decoding block-diffusion")
        return
    conflicts = [flag for flag, given in (
        (f"--speculator {options.speculator}", options.speculator != "none"),
        ("--n", options.n > 1), ("--beam-width", options.beam_width > 1),
        ("--disaggregate", options.disaggregate is not None),
        ("--allocator contiguous --reserve oracle (prompt + output - 1 slots; a last block's "
         "every position holds KV)", options.allocator == "contiguous"
         and options.reserve == "oracle")) if given]
    if conflicts:
        raise ValueError(f"--decoding block-diffusion does not combine with "
                         f"{', '.join(conflicts)}")
    scheduler = lookup(SCHEDULERS, "scheduler", options.scheduler)
    budget_name, budget = (("--token-budget", scheduler.make_params(policy_options).token_budget)
                           if options.scheduler == "chunked" else
                           ("--max-num-batched-tokens", policy_options["max_num_batched_tokens"]))
    if options.scheduler in ("chunked", "continuous") and params.diffusion_block > budget:
        raise ValueError(f"--diffusion-block {params.diffusion_block} exceeds {budget_name} "
                         f"{budget}: a block's denoising step is one pass over all of it")


def _resolve_speculation(
    options: ReplayOptions, policy_options: dict[str, Any]
) -> tuple[AcceptanceModel, ModelSpec | None, ModelSpec | None]:
    """Validate the speculator's knobs now (a clear error before any simulation)."""
    from sim.speculation.acceptance import DEFAULT_ACCEPTANCE, parse_acceptance

    lookup(SPECULATORS, "speculator", options.speculator).make_params(policy_options)
    acceptance = parse_acceptance(
        DEFAULT_ACCEPTANCE if options.spec_acceptance is None else options.spec_acceptance
    )
    uses_models = options.speculator in ("draft", "cascade")
    draft = get_model(options.draft_model) if uses_models and options.draft_model else None
    tiny = None
    if options.speculator == "cascade" and options.tiny_draft_model:
        tiny = get_model(options.tiny_draft_model)
    return acceptance, draft, tiny
