"""`load_inference_perf`: an inference-perf config to the `Trace` its run would send.

Stages run back to back from 0 s. Each stage restarts the prompt cycle at its first request,
as inference-perf starts a fresh pass of its data generator per stage.

- `constant`: int(rate x duration) requests whose gaps are exponential draws rescaled to add up
  to the stage's duration, as inference-perf's `ConstantLoadTimer` sends them: random arrivals
  at exactly the stage's rate, the last at the stage's end.
- `poisson`: inference-perf's `PoissonLoadTimer`: each second a Poisson(rate) count of requests
  (none: the second is skipped), spread over that second as a constant timer spreads a stage;
  the stage sends its first int(rate x duration) requests, so it may end before or after its
  duration (the next stage starts at the later of the two).
- `concurrent`: closed-loop stages (`traces.closed_loop`): the requests carry no arrival time
  until the harness sends them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from policies.types import Request
from traces.closed_loop import ClosedLoopStage
from traces.inference_perf.prompts import Prompt, io_distribution_prompts, shared_prefix_prompts
from traces.inference_perf.schema import (InferencePerfConfig, RateStage, SharedPrefixData,
                                          read_config)
from traces.seeding import ARRIVALS_STREAM, stream_rng
from traces.trace import Trace, TraceFormatError

DEFAULT_PROMPT_INFLATION = 1.046
"""Prompt tokens the server counted per token inference-perf drew, in the 16 recorded vLLM runs
(`../shared/ground_truth/vllm_h100_inference_perf`): mean `prompt_len` / (system + question)
fitted through the origin, 1.0462 (RMS residual 2.4 tokens); docs/workloads.md has the data.
It applies to the generators that decode random token ids (shared_prefix, random)."""
SYNTHETIC_PROMPT_INFLATION = 1.0
"""`synthetic` prompts are slices of real text, which re-tokenizes to the tokens it came from."""
DEFAULT_VOCAB_SIZE = 32_000
"""Llama-2's vocabulary (the recorded runs' tokenizer), when the caller names no model."""


def load_inference_perf(
    path: str | os.PathLike[str], *, seed: int = 0, vocab_size: int = DEFAULT_VOCAB_SIZE,
    prompt_inflation: float | None = None, max_requests: int | None = None,
) -> Trace:
    """The requests of the inference-perf config at `path` (its data and load sections).

    Token ids are drawn over `vocab_size` (the served model's vocabulary). `prompt_inflation`
    scales every prompt segment (None: `DEFAULT_PROMPT_INFLATION`, or 1 for synthetic data).
    `max_requests` keeps the first N requests in sending order.
    """
    config = read_config(path)
    inflation = _inflation(config, prompt_inflation)
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"--max-requests must be >= 1, got {max_requests}")
    try:
        prompts = _prompt_set(config, seed, vocab_size, inflation,
                              max(stage.num_requests for stage in config.stages))
    except ValueError as error:
        raise TraceFormatError(f"{path}: {error}") from None
    if config.load_type == "concurrent":
        times = [np.zeros(stage.num_requests) for stage in config.stages]
    else:
        times = _open_loop_times(config.load_type, config.stages,
                                 stream_rng(seed, ARRIVALS_STREAM))
    requests: list[Request] = []
    for stage_index, stage_times in enumerate(times):
        for position, time_s in enumerate(stage_times.tolist()):
            prompt = prompts[position % len(prompts)]
            requests.append(Request(len(requests), time_s, prompt.prompt_tokens,
                                    prompt.output_tokens, prompt_token_ids=prompt.token_ids,
                                    stage=stage_index))
    if not requests:
        raise TraceFormatError(f"{path}: load.stages send no requests (a rate stage sends "
                               "int(rate x duration))")
    notes = [_describe(config, len(prompts), inflation, seed), *config.notes]
    closed_loop = config.stages if config.load_type == "concurrent" else ()
    if max_requests is not None and max_requests < len(requests):
        requests = requests[:max_requests]
        closed_loop = _first_stages(closed_loop, max_requests)
        notes.append(f"kept the first {max_requests} requests (--max-requests)")
    return Trace(Path(path).stem, requests, [], notes, closed_loop=closed_loop)


def _inflation(config: InferencePerfConfig, given: float | None) -> float:
    if given is None:
        synthetic = getattr(config.data, "kind", None) == "synthetic"
        return SYNTHETIC_PROMPT_INFLATION if synthetic else DEFAULT_PROMPT_INFLATION
    if not (math.isfinite(given) and 1.0 <= given <= 4.0):
        raise ValueError(f"--prompt-inflation must lie in [1, 4] (server tokens per drawn "
                         f"token), got {given}")
    return given


def _first_stages(stages: tuple[ClosedLoopStage, ...],
                  num_requests: int) -> tuple[ClosedLoopStage, ...]:
    """The closed-loop stages that hold the first `num_requests` requests, the last cut short."""
    kept, left = [], num_requests
    for stage in stages:
        if left <= 0:
            break
        kept.append(ClosedLoopStage(min(stage.num_requests, left), stage.concurrency))
        left -= stage.num_requests
    return tuple(kept)


def _prompt_set(config: InferencePerfConfig, seed: int, vocab_size: int, inflation: float,
                num_needed: int) -> list[Prompt]:
    if isinstance(config.data, SharedPrefixData):
        return shared_prefix_prompts(config.data, seed, vocab_size, inflation)
    return io_distribution_prompts(config.data, seed, num_needed, inflation)


def _open_loop_times(load_type: str, stages: tuple[RateStage, ...],
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Each stage's send times in seconds from the first stage's start (float64, ascending)."""
    times, start_s = [], 0.0
    for stage in stages:
        if load_type == "constant":
            offsets_s = _constant_timer(stage.num_requests, stage.duration_s, rng)
        else:
            offsets_s = _poisson_timer(stage.num_requests, stage.rate_per_s, rng)
        times.append(start_s + offsets_s)
        end_s = float(offsets_s[-1]) if len(offsets_s) else 0.0
        start_s += max(stage.duration_s, end_s)
    return times


def _constant_timer(count: int, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """`count` send offsets whose exponential gaps are rescaled to add up to `duration_s`."""
    if count == 0:
        return np.zeros(0)
    gaps = rng.exponential(1.0, count)
    return np.cumsum(gaps * (duration_s / gaps.sum()))


def _poisson_timer(count: int, rate_per_s: float, rng: np.random.Generator) -> np.ndarray:
    """The first `count` send offsets of Poisson(rate) requests per second, each second's
    requests spread over it by the constant timer."""
    offsets: list[np.ndarray] = []
    second, sent = 0, 0
    while sent < count:
        in_second = int(rng.poisson(rate_per_s))
        if in_second:
            offsets.append(second + _constant_timer(in_second, 1.0, rng))
            sent += in_second
        second += 1
    return np.concatenate(offsets)[:count] if offsets else np.zeros(0)


def _describe(config: InferencePerfConfig, num_prompts: int, inflation: float, seed: int) -> str:
    data = config.data
    if isinstance(data, SharedPrefixData):
        what = (f"shared_prefix {data.num_groups} groups x {data.num_prompts_per_group} prompts "
                f"(system {data.system_prompt_len.describe()}, question "
                f"{data.question_len.describe()}, output {data.output_len.describe()} tokens), "
                f"cycled per stage")
    else:
        what = (f"{data.kind} input {data.input_len.describe()}, output "
                f"{data.output_len.describe()} tokens, {num_prompts} length pairs cycled per "
                "stage")
    parts, start_s = [], 0.0
    for index, stage in enumerate(config.stages):
        if isinstance(stage, ClosedLoopStage):
            parts.append(f"stage {index}: {stage.num_requests} requests, at most "
                         f"{stage.concurrency} in flight")
        else:
            parts.append(f"stage {index}: {config.load_type} {stage.rate_per_s:g} req/s x "
                         f"{stage.duration_s:g} s from {start_s:g} s ({stage.num_requests} "
                         "requests)")
            start_s += stage.duration_s
    return (f"inference-perf: {what}; prompts x{inflation:g} as the server counts them; seed "
            f"{seed}; {'; '.join(parts)}")
