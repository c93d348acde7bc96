"""The prompts an inference-perf data generator sends, as token counts and ids.

`shared_prefix`, as inference-perf builds it: a fixed set of num_groups x
num_prompts_per_group prompts drawn up front, each a group's system prompt followed by a
question of its own, shuffled once; request i of a stage sends prompt i mod the set's size, so
after one pass every request repeats an earlier prompt exactly.

    group 0: [system 0][question 0.0]  [system 0][question 0.1]  ...
    group 1: [system 1][question 1.0]  ...                          -> shuffled, then cycled

Token ids are uniform over the model's vocabulary (inference-perf draws random ids from its
tokenizer's), one tuple per prompt shared by every request that repeats it, so prefix caches
see what the server saw: a repeated prompt matches in full, a group's prompts match on their
system prompt, and nothing else matches.

`random` and `synthetic`: a list of (input, output) length pairs drawn up front (`total_count`
of them if given, else one per request of the largest stage), request i of a stage taking pair
i mod the list's size. Their prompts share no content (fresh random ids, or text at a random
offset of a corpus), so they carry no ids and every one is private to its request.

Prompt inflation: inference-perf of early 2026 decoded its random ids to text, which the server
tokenized into more tokens than were drawn (a few percent: docs/workloads.md fits it to the
recorded runs). Each segment (system prompt, question, random prompt) is scaled by the factor,
rounded, before its ids are drawn, so the same prompt still always has the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.inference_perf.schema import IODistributionData, SharedPrefixData
from traces.seeding import (OUTPUT_TOKENS_STREAM, PROMPT_ORDER_STREAM, PROMPT_TOKENS_STREAM,
                            TOKEN_IDS_STREAM, stream_rng)

MAX_PROMPT_SET_TOKENS = 50_000_000
"""Most token ids a shared-prefix prompt set may hold (about 2 GB as Python tuples)."""


@dataclass(frozen=True, slots=True)
class Prompt:
    prompt_tokens: int
    output_tokens: int
    token_ids: tuple[int, ...] | None
    """None: content no other request shares."""


def inflated(num_tokens: int, inflation: float) -> int:
    """`num_tokens` drawn tokens as the server counts them (rounded half up)."""
    return int(np.floor(num_tokens * inflation + 0.5))


def shared_prefix_prompts(data: SharedPrefixData, seed: int, vocab_size: int,
                          inflation: float) -> list[Prompt]:
    """The shuffled prompt set (length num_groups x num_prompts_per_group)."""
    num_groups, per_group = data.num_groups, data.num_prompts_per_group
    lengths_rng = stream_rng(seed, PROMPT_TOKENS_STREAM)
    system_tokens = data.system_prompt_len.sample(num_groups, lengths_rng)
    question_tokens = data.question_len.sample(num_groups * per_group, lengths_rng)
    output_tokens = data.output_len.sample(num_groups * per_group,
                                           stream_rng(seed, OUTPUT_TOKENS_STREAM))
    system_tokens = [inflated(int(n), inflation) for n in system_tokens]
    question_tokens = [inflated(int(n), inflation) for n in question_tokens]
    total_tokens = per_group * sum(system_tokens) + sum(question_tokens)
    if total_tokens > MAX_PROMPT_SET_TOKENS:
        raise ValueError(f"the shared-prefix prompt set would hold {total_tokens:,} tokens, more "
                         f"than {MAX_PROMPT_SET_TOKENS:,}; lower num_groups, "
                         "num_prompts_per_group or the lengths")
    ids_rng = stream_rng(seed, TOKEN_IDS_STREAM)
    prompts = []
    for group in range(num_groups):
        system = ids_rng.integers(0, vocab_size, system_tokens[group]).tolist()
        for index in range(group * per_group, (group + 1) * per_group):
            if system_tokens[group] + question_tokens[index] == 0:
                raise ValueError("data.shared_prefix draws an empty prompt (system_prompt_len "
                                 "and question_len both 0)")
            question = ids_rng.integers(0, vocab_size, question_tokens[index]).tolist()
            ids = tuple(system + question)
            prompts.append(Prompt(len(ids), int(output_tokens[index]), ids))
    order = stream_rng(seed, PROMPT_ORDER_STREAM).permutation(len(prompts))
    return [prompts[i] for i in order]


def io_distribution_prompts(data: IODistributionData, seed: int, num_needed: int,
                            inflation: float) -> list[Prompt]:
    """The length pairs of a `random` or `synthetic` generator (see the module docstring)."""
    count = data.num_prompts or num_needed
    inputs = data.input_len.sample(count, stream_rng(seed, PROMPT_TOKENS_STREAM))
    outputs = data.output_len.sample(count, stream_rng(seed, OUTPUT_TOKENS_STREAM))
    return [Prompt(inflated(int(i), inflation), int(o), None) for i, o in zip(inputs, outputs)]
