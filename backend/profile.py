"""`servesim profile --executor real`: time the real backend's engine steps over a grid of
batch shapes, so `servesim calibrate` can fit the cost model to what really runs.

What is timed is one whole `Engine.step` on the real executor, built exactly as
`servesim replay --executor real` builds it: the scheduler's plan, the forward pass, sampling,
and the commit. That is the period the wall-clock loop (`backend/runner.py:run_wall_clock`)
spends per busy iteration, so a cost model fitted to it prices the same thing the simulator
advances its clock by. (Timing `execute()` alone would leave out the scheduling and commit
work, about 0.4 ms a step on CPU, which is 10-20% of a small model's decode step there.)

The shapes come from workloads that make the scheduler produce them, so every plan is a real
one (real block tables, real sampling), and each timed step records the exact shape it ran:

- prefill: one prompt of P tokens alone in a step (P over `prefill_tokens`);
- decode: B sequences at context C decoding one token each (B over `decode_batches`, C over
  `decode_contexts`); the timed steps follow each other, so the context grows by one a step;
- mixed: B decoding sequences plus a new prompt of P tokens in one step, under the chunked
  scheduler (the only one that mixes them);
- verify: B decoding sequences verifying k n-gram drafts each (k over `spec_widths`).

Each point runs `warmup` untimed steps and `repeats` timed ones; the profile keeps the median
time with the shape of the median step. The whole grid is preceded by one untimed pass over a
few shapes (torch allocates and picks kernels on first use). Steps are timed on the wall
clock or on the thread's CPU time (`clock`, see `backend.bench`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, NamedTuple

import torch

from backend.bench import RealEngines
from backend.clocks import Shape, TimedExecutor
from backend.host_memory import keep_freed_host_memory
from policies.engine import Engine
from sim.config import ReplayOptions, spec_k_of
from sim.cost.profiles import TRIM_SHARE, trimmed_mean_s


@dataclass(frozen=True, slots=True)
class ProfileGrid:
    """The batch shapes to time. Every point runs `passes` times, interleaved with the other
    points; each pass runs `warmup` untimed steps and `repeats` timed ones."""

    prefill_tokens: tuple[int, ...] = (8, 32, 64, 128, 256, 384, 512, 768)
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    decode_contexts: tuple[int, ...] = (16, 128, 512, 1024)
    mixed: tuple[tuple[int, int], ...] = ((1, 64), (4, 128), (8, 256), (16, 64), (4, 512))
    """(decoding sequences, prompt tokens) per mixed step."""
    mixed_context: int = 256
    spec_widths: tuple[int, ...] = (2, 4)
    spec_batches: tuple[int, ...] = (1, 4, 16)
    spec_context: int = 256
    speculator: str = "ngram"
    """The real drafter of the verify points (ngram or draft)."""
    passes: int = 5
    warmup: int = 1
    repeats: int = 3

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.passes < 1 or self.warmup < 0:
            raise ValueError(f"profile needs passes, repeats >= 1 and warmup >= 0, got "
                             f"{self.passes}, {self.repeats} and {self.warmup}")

    def for_options(self, options: ReplayOptions) -> ProfileGrid:
        """The points a replay with `options` can produce: mixed batches only under the
        chunked scheduler, verify steps only with a speculator (its k among the widths).
        A fit to shapes that never run would trade accuracy on those that do for them."""
        mixed = self.mixed if options.scheduler == "chunked" else ()
        if options.speculator == "none":
            return dataclasses.replace(self, mixed=mixed, spec_widths=())
        return dataclasses.replace(self, mixed=mixed, speculator=options.speculator,
                                   spec_widths=tuple(sorted({*self.spec_widths,
                                                             spec_k_of(options)})))

    @property
    def max_tokens_per_sequence(self) -> int:
        """The longest context a point reaches (prompt + every step's tokens)."""
        steps = self.warmup + self.repeats + 2
        return max([*self.prefill_tokens, max(self.decode_contexts, default=0) + steps,
                    self.mixed_context + steps, *(p for _, p in self.mixed),
                    self.spec_context + steps * (1 + max(self.spec_widths, default=0))])


TINY_GRID = ProfileGrid(prefill_tokens=(8, 64, 256), decode_batches=(1, 4, 8),
                        decode_contexts=(16, 256), mixed=((2, 64),), mixed_context=64,
                        spec_widths=(2,), spec_batches=(2,), spec_context=64, passes=2,
                        warmup=1, repeats=2)
"""A grid small enough for tests (seconds on tiny-llama)."""


class TimedStep(NamedTuple):
    shape: Shape
    seconds: float
    dispatch_s: float
    compute_s: float
    """The speed meter's probe times just before the step (`backend.speed`): the machine's
    speed state the step ran in."""


def _step(bench: RealEngines, engine: Engine, executor: TimedExecutor) -> TimedStep:
    """One engine step, timed from the call to its return (the loop's busy period) on the
    bench's clock, after the speed meter's probes."""
    dispatch_s, compute_s = bench.meter.probe()
    start_s = bench.timer()
    outcome = engine.step(bench.now_s())
    elapsed_s = bench.timer() - start_s
    if outcome.duration_s is None or executor.last_shape is None:
        raise RuntimeError("profile step ran nothing: the grid point's workload is empty")
    shape, executor.last_shape = executor.last_shape, None
    return TimedStep(shape, elapsed_s, dispatch_s, compute_s)


def _sample(timed: list[TimedStep]) -> dict:
    """One profile sample from every timed step of a point: the shape of its middle step (a
    decode's context grows by one a step, so that is the shape the average stands for), the
    trimmed mean time (`measured_s`, what the fit uses), the median, every step's time and
    the speed meter's probe times before each step (`steps_speed_s` and
    `steps_compute_speed_s`, which `sim.machine_speed.speed_normalized` divides out)."""
    new, ctx = sorted(timed, key=lambda step: sum(step.shape[1]))[len(timed) // 2].shape
    times_s = [step.seconds for step in timed]
    return {"new_tokens": list(new), "context_tokens": list(ctx),
            "measured_s": trimmed_mean_s(times_s), "median_s": statistics.median(times_s),
            "steps_s": times_s, "steps_speed_s": [step.dispatch_s for step in timed],
            "steps_compute_speed_s": [step.compute_s for step in timed]}


def _prefill(bench: RealEngines, grid: ProfileGrid,
             prompt_tokens: int) -> list[TimedStep]:
    engine, executor = bench.engine()
    timed = []
    for index in range(grid.warmup + grid.repeats):
        bench.submit(engine, prompt_tokens, 1)  # one output: the prefill finishes it
        result = _step(bench, engine, executor)
        if index >= grid.warmup:
            timed.append(result)
    return timed


def _decode(bench: RealEngines, grid: ProfileGrid, batch: int, context: int,
            **overrides) -> list[TimedStep]:
    """`batch` sequences prefilled to `context` tokens, then timed while they decode."""
    engine, executor = bench.engine(**overrides)
    num_steps = grid.warmup + grid.repeats
    max_new = 1 + overrides.get("spec_k", 0)
    for _ in range(batch):
        bench.submit(engine, context, num_steps * max_new + 2)
    while any(s.num_output_tokens == 0 for s in engine.sequences.values()):
        _step(bench, engine, executor)  # prefills, untimed
    return [_step(bench, engine, executor) for _ in range(num_steps)][grid.warmup:]


def _mixed(bench: RealEngines, grid: ProfileGrid, batch: int,
           prompt_tokens: int) -> list[TimedStep]:
    """`batch` decoding sequences plus one new prompt per step (chunked scheduler)."""
    budget = batch + prompt_tokens
    engine, executor = bench.engine(scheduler="chunked", token_budget=max(budget, 2048),
                                    max_num_batched_tokens=max(budget, 2048))
    num_steps = grid.warmup + grid.repeats
    for _ in range(batch):
        bench.submit(engine, grid.mixed_context, num_steps + 2)
    while any(s.num_output_tokens == 0 for s in engine.sequences.values()):
        _step(bench, engine, executor)
    timed = []
    for index in range(num_steps):
        bench.submit(engine, prompt_tokens, 1)
        result = _step(bench, engine, executor)
        if index >= grid.warmup:
            timed.append(result)
    return timed


def grid_points(grid: ProfileGrid) -> list[tuple[str, Callable[[RealEngines], list]]]:
    """(label, run) for every point, in a fixed order."""
    points: list[tuple[str, Callable[[RealEngines], list]]] = []
    for p in grid.prefill_tokens:
        points.append((f"prefill {p}", lambda b, p=p: _prefill(b, grid, p)))
    for c in grid.decode_contexts:
        for n in grid.decode_batches:
            points.append((f"decode {n}x@{c}", lambda b, n=n, c=c: _decode(b, grid, n, c)))
    for n, p in grid.mixed:
        points.append((f"mixed {n} decodes + {p}", lambda b, n=n, p=p: _mixed(b, grid, n, p)))
    for k in grid.spec_widths:
        for n in grid.spec_batches:
            points.append((f"verify {n}x k={k}", lambda b, n=n, k=k: _decode(
                b, grid, n, grid.spec_context, speculator=grid.speculator, spec_k=k)))
    return points


PROBE_SIZE = 64
PROBE_ROUNDS = 200


def speed_probe_s(duration_s: float = 1.0) -> float:
    """Median time of a fixed small workload (torch matmuls and a Python loop, like an engine
    step's mix) repeated for `duration_s`: a machine-speed reading taken next to each real
    run, so a validation can tell a cost model that is off from a machine that changed
    speed (shared CPUs switch between speed states for seconds at a time)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(PROBE_SIZE, PROBE_SIZE, generator=gen)
    times_s = []
    end_s = time.perf_counter() + duration_s
    while time.perf_counter() < end_s or len(times_s) < 3:
        start_s = time.perf_counter()
        total = 0
        for i in range(PROBE_ROUNDS):
            a = torch.tanh(a @ a)
            total += i * i
        times_s.append(time.perf_counter() - start_s)
    return statistics.median(times_s)


def machine_info(device: torch.device) -> dict:
    """Provenance of a profile: where and with what it was measured."""
    info = {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "host_malloc_keeps_freed_memory": device.type == "cpu" and keep_freed_host_memory(),
    }
    for package in ("triton", "numpy"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def profile_real(options: ReplayOptions, grid: ProfileGrid = ProfileGrid(),
                 progress: Callable[[int, int], None] | None = None,
                 clock: str = "wall") -> dict:
    """Time `grid` on the real backend for `options` (model, scheduler, allocator, block
    size, seed); returns the profile JSON `servesim calibrate` fits (`sim.cost.profiles`
    format, each sample with its median and every step's time besides `measured_s`).

    The statistic is a trimmed mean over passes spread in time, not a median of adjacent
    steps: on shared machines the CPU's speed switches between states for seconds at a time
    (1.7x apart on the 2-core development box), a trace replay averages over them, and so
    must the profile. `clock` is `wall` or `cpu` (see `backend.bench`)."""
    block_size = options.block_size
    blocks_per_seq = -(-grid.max_tokens_per_sequence // block_size) + 1
    widest = max([1, *grid.decode_batches, *(n + 1 for n, _ in grid.mixed), *grid.spec_batches])
    bench = RealEngines(options, num_blocks=widest * blocks_per_seq + 8, clock=clock)
    _warm_up(bench, grid)
    probe_s = speed_probe_s()
    points = grid_points(grid)
    timed: dict[str, list[TimedStep]] = {label: [] for label, _ in points}
    for index in range(grid.passes):
        for label, run in points:
            timed[label].extend(run(bench))
        if progress is not None:
            progress(index + 1, grid.passes)
    config = bench.config()
    machine = machine_info(bench.device) | {
        "executor": "real", "timed": "Engine.step (schedule + execute + commit)", "clock": clock,
        "scheduler": options.scheduler, "allocator": options.allocator,
        "block_size": block_size, "passes": grid.passes, "warmup_steps": grid.warmup,
        "repeats": grid.repeats, "statistic": f"mean of timed steps, {TRIM_SHARE:.0%} trimmed "
                                              "from each tail",
        "grid": dataclasses.asdict(grid),
        "model_dtype": str(bench.model.norm.weight.dtype).removeprefix("torch."),
        "speed_probe_s": [probe_s, speed_probe_s()],
        "speed_meter": "steps_speed_s, steps_compute_speed_s: backend.speed's dispatch and "
                       "compute probe times before each step",
    }
    return {"model": config.model.name, "hardware": config.hardware.name, "tp": 1,
            "samples": [_sample(timed[label]) | {"point": label} for label, _ in points],
            "machine": machine}


def _warm_up(bench: RealEngines, grid: ProfileGrid) -> None:
    """Run a prefill, a decode batch and a verify once, untimed: first calls of torch ops
    allocate and dispatch slowly."""
    quick = dataclasses.replace(grid, warmup=1, repeats=2)
    _prefill(bench, quick, max(grid.prefill_tokens, default=16))
    _decode(bench, quick, max(grid.decode_batches, default=1), min(grid.decode_contexts,
                                                                    default=16))
    if grid.spec_widths:
        _decode(bench, quick, 1, 16, speculator=grid.speculator, spec_k=max(grid.spec_widths))

