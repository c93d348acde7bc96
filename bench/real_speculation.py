"""Measured speculative decoding on real tensors: SmolLM2-135M answering chat prompts greedily
with no speculation, n-gram lookup, the self-speculative draft (its middle layers skipped, on
the target's KV), separate drafts with KV pools of their own (layer subsets of SmolLM2) and
lookahead decoding (its own N - 1 drafts per step; `--spec-k` does not apply to it).

    python bench/real_speculation.py [--output-tokens 64] [--spec-k 4] [--repeats 3]
                                     [--only none,lookahead]
                                     [--out bench/results/real_speculation_cpu.json]

All runs must produce the same tokens (checked). Per speculator it reports the measured
per-position conditional acceptance (the list `--spec-acceptance` takes), tokens per verify,
engine iterations and the median wall time over `--repeats` runs on one torch thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.drafting import layer_subset, skipped_layers  # noqa: E402
from backend.gguf_weights import find_gguf, load_tokenizer, open_gguf  # noqa: E402
from backend.replay import replay_real  # noqa: E402
from policies.types import Request  # noqa: E402
from sim.config import ReplayOptions, resolve  # noqa: E402
from traces.trace import Trace  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Explain in two sentences why the sky is blue.",
    "Write a short Python function that returns the square of a number.",
    "List three primary colours.",
]
SELF_DRAFT = {"speculator": "draft", "draft_model": "smollm2-135m"}
SPECULATORS = {
    "none": ({}, None),
    "ngram": ({"speculator": "ngram"}, None),
    "draft (self, middle layers skipped)": (SELF_DRAFT, None),
    # Separate drafts with KV pools of their own (SmolLM2 has no smaller sibling offline, so
    # they are layer subsets of it, sharing its weights).
    "draft (separate, middle layers skipped, own KV)": (
        SELF_DRAFT, lambda target: layer_subset(target, [
            i for i in range(target.spec.num_layers)
            if i not in skipped_layers(target.spec.num_layers)])),
    "draft (separate, first 15 layers, own KV)": (
        SELF_DRAFT, lambda target: layer_subset(target, list(range(15)))),
    "lookahead (W 5, N 4, G 5)": ({"speculator": "lookahead", "spec_k": None}, None),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--spec-k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated row names (or their first word) to "
                                       "run, e.g. none,lookahead (default: all)")
    parser.add_argument("--out", default="bench/results/real_speculation_cpu.json")
    args = parser.parse_args()
    rows = SPECULATORS
    if args.only:
        wanted = args.only.split(",")
        rows = {name: row for name, row in SPECULATORS.items()
                if name in wanted or name.split()[0] in wanted}
        unknown = [w for w in wanted if not any(w in (n, n.split()[0]) for n in SPECULATORS)]
        if unknown:
            parser.error(f"--only: no row named {', '.join(unknown)}; rows: "
                         f"{'; '.join(SPECULATORS)}")
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(open_gguf(find_gguf()))
    requests = []
    for index, question in enumerate(QUESTIONS):
        ids = tuple(tokenizer.chat_prompt([{"role": "user", "content": question}]))
        requests.append(Request(index, 0.0, len(ids), args.output_tokens, prompt_token_ids=ids))
    trace = Trace("chat questions", requests)
    base = ReplayOptions(model="smollm2-135m", hardware="cpu", executor="real", pace="asap",
                         spec_k=args.spec_k, num_gpu_blocks=256)
    report: dict = {"model": "smollm2-135m", "device": "cpu, 1 torch thread",
                    "requests": len(requests), "output_tokens": args.output_tokens,
                    "spec_k": args.spec_k, "repeats": args.repeats, "runs": {}}
    reference = None
    for name, (overrides, draft_for) in rows.items():
        options = dataclasses.replace(base, **overrides)
        times = []
        for _ in range(args.repeats):
            results, outputs = replay_real(resolve(options, trace), draft_for)
            times.append(results.end_s)
        if reference is None:
            reference = outputs
        s = results.summary
        run = {"wall_s_median": statistics.median(times), "iterations": s["iterations"],
               "identical_to_none": outputs == reference}
        if overrides:
            rates = [s[f"spec_acceptance_rate_pos{i + 1}"]
                     for i in range(results.config.spec_k)]
            run.update({
                "spec_acceptance": ",".join(f"{r:.3f}" for r in rates if r is not None),
                "spec_acceptance_rate": s["spec_acceptance_rate"],
                "spec_tokens_per_step_mean": s["spec_tokens_per_step_mean"],
                "spec_draft_time_share": s["spec_draft_time_share"],
            })
        report["runs"][name] = run
        print(name, json.dumps(run), flush=True)
    report["answer_0"] = tokenizer.decode(reference[0])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
