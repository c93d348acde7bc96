"""Real engines for measurement: one model and one KV pool, engines built on them exactly as
`servesim replay --executor real` builds its engine, and the clock their steps are timed by.

Clocks (`--clock`):

- `wall`: `time.perf_counter`, what a user of the server sees. On a shared machine it also
  counts the time the OS gave to other processes while a step ran.
- `cpu`: this thread's CPU time (`time.thread_time`; torch runs on the calling thread with
  one intra-op thread), which leaves out time spent descheduled. Idle waits for arrivals are
  skipped rather than slept (`CpuClock`): the loop's clock jumps to the next arrival. On a
  dedicated CPU the two agree; on a contended one `cpu` measures the backend and `wall` the
  machine. CPU only: on CUDA the host thread waits for the device, which CPU time misses.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from backend.drafting import NgramDrafter, SelfDrafter
from backend.kv_cache import KVCache
from backend.replay import build_model, pick_device, real_num_blocks
from backend.runner import RealExecutor, run_wall_clock
from backend.sampler import SamplingParams
from policies.engine import Engine
from policies.kv.base import KVAllocator
from policies.types import Plan, Request, StepResult
from sim.api import build_cost_model, build_engine
from sim.config import ReplayOptions, SimConfig, resolve
from sim.metrics import summarize
from sim.results import Results
from traces import Trace

Shape = tuple[tuple[int, ...], tuple[int, ...]]
CLOCKS = ("wall", "cpu")


def timer_for(clock: str, device: torch.device) -> Callable[[], float]:
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; choose one of: {', '.join(CLOCKS)}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu measures host CPU time, which misses GPU work: use "
                         "--clock wall on CUDA")
    return time.perf_counter if clock == "wall" else time.thread_time


class CpuClock:
    """The run loop's clock for `--clock cpu`: CPU time while busy, plus every wait the loop
    asked for, which it gets at once instead of sleeping."""

    def __init__(self) -> None:
        self.waited_s = 0.0

    def now(self) -> float:
        return time.thread_time() + self.waited_s

    def sleep(self, seconds: float) -> None:
        self.waited_s += max(0.0, seconds)


class TimedExecutor:
    """Passes plans to the real executor, remembers the shape of the last one, and reports
    its duration on the chosen clock (the real executor times itself by the wall clock)."""

    def __init__(self, inner: RealExecutor, timer: Callable[[], float]) -> None:
        self.inner = inner
        self.timer = timer
        self._step_began_s: float | None = None
        self.last_shape: Shape | None = None

    def step_began(self) -> None:
        """The run loop starts a step: durations run from here (see `RealExecutor`)."""
        if self.timer is time.perf_counter:
            self.inner.step_began()
        else:
            self._step_began_s = self.timer()

    def execute(self, plan: Plan) -> StepResult:
        chunks = plan.chunks + plan.padding
        self.last_shape = (tuple(c.num_new_tokens for c in chunks),
                           tuple(c.num_context_tokens for c in chunks))
        if self.timer is time.perf_counter:
            return self.inner.execute(plan)
        execute_start_s = self.timer()
        began_s = execute_start_s if self._step_began_s is None else self._step_began_s
        self._step_began_s = None
        result = self.inner.execute(plan)
        end_s = self.timer()
        # The drafting's share of the forward pass, on this clock.
        share = (end_s - execute_start_s) / result.duration_s if result.duration_s > 0 else 1.0
        return StepResult(end_s - began_s, result.accepted_tokens, result.draft_s * share)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class RealEngines:
    """One model and one KV pool of `num_blocks`; `engine()` builds engines on them."""

    def __init__(self, options: ReplayOptions, num_blocks: int, clock: str = "wall") -> None:
        self.options = dataclasses.replace(options, executor="real", num_gpu_blocks=num_blocks)
        self.device = pick_device()
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # as replay_real runs: steadier on shared CPUs
        self.timer = timer_for(clock, self.device)
        self.model, _ = build_model(self.config(), self.device)
        spec = self.model.spec
        self.kv = KVCache(num_layers=spec.num_layers, num_blocks=num_blocks,
                          block_size=options.block_size, num_kv_heads=spec.num_kv_heads,
                          head_dim=spec.attn_head_dim, dtype=self.model.norm.weight.dtype,
                          device=self.device)
        self.origin_s = self.timer()
        self._next_id = 0

    def config(self, **overrides) -> SimConfig:
        """The engines' configuration (with an empty trace) under `overrides`."""
        return resolve(dataclasses.replace(self.options, **overrides),
                       trace=Trace("bench", [], [], []))

    def engine(self, config: SimConfig | None = None, **overrides) -> tuple[Engine,
                                                                            TimedExecutor]:
        """An engine for `config` (default: `self.config(**overrides)`) on the shared model
        and pool, built as `backend.replay.replay_real` builds its own."""
        config = config or self.config(**overrides)
        o = config.options
        sampling = SamplingParams(o.temperature, o.top_k, o.top_p)
        use_triton = self.device.type == "cuda"
        timed: list[TimedExecutor] = []

        def executor_for(allocator: KVAllocator) -> TimedExecutor:
            drafter = None
            if o.speculator == "ngram":
                drafter = NgramDrafter()
            elif o.speculator == "draft":
                drafter = SelfDrafter(self.model, self.kv, allocator, sampling, o.seed,
                                      use_triton)
            timed.append(TimedExecutor(RealExecutor(
                self.model, self.kv, allocator, sampling=sampling, seed=o.seed,
                use_triton=use_triton, drafter=drafter), self.timer))
            return timed[0]

        engine, _ = build_engine(config, build_cost_model(config), executor_for=executor_for)
        return engine, timed[0]

    def now_s(self) -> float:
        return self.timer() - self.origin_s

    def submit(self, engine: Engine, prompt_tokens: int, output_tokens: int) -> None:
        engine.submit(Request(self._next_id, self.now_s(), prompt_tokens, output_tokens),
                      self.now_s())
        self._next_id += 1


def replay_cpu_clock(config: SimConfig) -> Results:
    """`backend.replay.replay_real` on the CPU clock: the same engine, trace and KV pool
    sizing, with the run loop's clock and every step's duration in this thread's CPU time.
    (Call `replay_real` first for its checks of the options.)"""
    device = pick_device()
    spec = config.model
    element_bytes = 4 if device.type == "cpu" else 2  # build_model: fp32 on CPU, bf16 on CUDA
    kv_bytes_per_block = (2 * spec.num_layers * spec.num_kv_heads * spec.attn_head_dim
                          * config.options.block_size * element_bytes)
    num_blocks = real_num_blocks(config, kv_bytes_per_block, device)
    engines = RealEngines(config.options, num_blocks=num_blocks, clock="cpu")
    config = dataclasses.replace(config, options=engines.options)
    engine, executor = engines.engine(config)
    clock = CpuClock()
    end_s = run_wall_clock(engine, config.trace.requests, horizon_s=config.options.horizon_s,
                           reject_reason=executor.prompt_problem, clock=clock.now,
                           sleep=clock.sleep)
    return Results(config=config, engines=[engine], memory=None,
                   summary=summarize(config, [engine], end_s), end_s=end_s)
