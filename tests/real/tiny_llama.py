"""The small real-backend workload several test modules share: six seeded requests on the
seeded-random tiny-llama, arriving all at once, with a 64-block pool of 4-token blocks."""

from __future__ import annotations

import dataclasses

from sim.config import ReplayOptions

TRACE = "synthetic:n=6,arrivals=poisson:100,prompt=uniform:5:60,output=uniform:3:40"


def tiny_options(**overrides) -> ReplayOptions:
    base = ReplayOptions(trace=TRACE, model="tiny-llama", hardware="cpu", executor="real",
                         pace="asap", seed=3, num_gpu_blocks=64, block_size=4)
    return dataclasses.replace(base, **overrides)
