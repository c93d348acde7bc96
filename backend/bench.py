"""Real engines for measurement: one model and one KV pool, engines built on them exactly as
`servesim replay --executor real` builds its engine, timed on a clock of `backend.clocks`.
"""

from __future__ import annotations

import dataclasses

import torch

from backend.clocks import TimedExecutor, timer_for
from backend.host_memory import keep_freed_host_memory
from backend.kv_cache import KVCache, require_page_tables
from backend.model import uses_triton
from backend.replay import build_drafter, build_model, pick_device
from backend.runner import RealExecutor
from backend.sampler import SamplingParams
from backend.speed import SpeedMeter
from policies.engine import Engine
from policies.kv.base import KVAllocator
from policies.types import Request
from sim.assembly import build_cost_model, build_engine
from sim.config import ReplayOptions, SimConfig, resolve
from traces import Trace


class RealEngines:
    """One model and one KV pool of `num_blocks`; `engine()` builds engines on them."""

    def __init__(self, options: ReplayOptions, num_blocks: int, clock: str = "wall") -> None:
        self.options = dataclasses.replace(options, executor="real", num_gpu_blocks=num_blocks)
        self.device = pick_device()
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # as replay_real runs: steadier on shared CPUs
            keep_freed_host_memory()
        self.timer = timer_for(clock, self.device)
        self.model, _ = build_model(self.config(), self.device)
        spec = self.model.spec
        self.kv = KVCache(num_layers=spec.num_layers, num_blocks=num_blocks,
                          block_size=options.block_size, num_kv_heads=spec.num_kv_heads,
                          head_dim=spec.attn_head_dim, dtype=self.model.norm.weight.dtype,
                          device=self.device)
        self.meter = SpeedMeter(self.timer)
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
        use_triton = uses_triton(self.model.spec, self.device)
        timed: list[TimedExecutor] = []

        def executor_for(policy_allocator: KVAllocator) -> TimedExecutor:
            allocator = require_page_tables(policy_allocator)
            drafter = build_drafter(o, self.model, self.kv, allocator, sampling, use_triton)
            timed.append(TimedExecutor(RealExecutor(
                self.model, self.kv, allocator, sampling=sampling, seed=o.seed,
                use_triton=use_triton, drafter=drafter), self.timer))
            return timed[0]

        engine, _ = build_engine(config, build_cost_model(config), executor_for=executor_for,
                                 token_indexed_pool=True)
        return engine, timed[0]

    def now_s(self) -> float:
        return self.timer() - self.origin_s

    def submit(self, engine: Engine, prompt_tokens: int, output_tokens: int) -> None:
        engine.submit(Request(self._next_id, self.now_s(), prompt_tokens, output_tokens),
                      self.now_s())
        self._next_id += 1
