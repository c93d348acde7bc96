"""What several real-backend test modules share: the small workload (six seeded requests on
the seeded-random tiny-llama, arriving all at once, with a 64-block pool of 4-token blocks), a
KV pool for an allocator, and the distribution check of speculative sampling."""

from __future__ import annotations

import dataclasses

from scipy import stats

from sim.config import ReplayOptions

TRACE = "synthetic:n=6,arrivals=poisson:100,prompt=uniform:5:60,output=uniform:3:40"


def tiny_options(**overrides) -> ReplayOptions:
    base = ReplayOptions(trace=TRACE, model="tiny-llama", hardware="cpu", executor="real",
                         pace="asap", seed=3, num_gpu_blocks=64, block_size=4)
    return dataclasses.replace(base, **overrides)


def kv_pool_for(model, allocator):
    """A float32 CPU KV pool shaped for `model`, addressed by `allocator`'s block ids."""
    import torch

    from backend.kv_cache import KVCache

    spec = model.spec
    return KVCache(num_layers=spec.num_layers, num_blocks=allocator.num_blocks,
                   block_size=allocator.block_size, num_kv_heads=spec.num_kv_heads,
                   head_dim=spec.attn_head_dim, dtype=torch.float32, device="cpu")


def assert_speculation_keeps_distribution(draft_options: dict, draft_for=None) -> None:
    """2 x 300 samples of one prompt at temperature 0.7, top-k 4, plain and with the
    speculator of `draft_options` (and `draft_for`, as `replay_real` takes it): drafts are
    partly accepted, and the first two tokens' joint distribution is the same."""
    from backend.replay import replay_real
    from policies.types import Request
    from sim.config import resolve
    from traces.trace import Trace

    num = 300
    prompt = tuple(range(7, 19))
    trace = Trace("same prompt", [Request(i, 0.0, len(prompt), 3, prompt_token_ids=prompt)
                                  for i in range(2 * num)])
    sampling = {"temperature": 0.7, "top_k": 4, "max_num_seqs": 256, "num_gpu_blocks": 2000}
    plain = replay_real(resolve(tiny_options(**sampling), trace))[1]
    results, spec = replay_real(resolve(tiny_options(**sampling, **draft_options), trace),
                                draft_for=draft_for)
    assert 0 < results.summary["spec_acceptance_rate"] < 1
    assert_first_tokens_alike(plain, spec, num)


def assert_first_tokens_alike(plain: dict, speculative: dict, num: int) -> None:
    """Chi-square on the first two sampled tokens: requests 0..num-1 of `plain` against
    num..2num-1 of `speculative` (the same prompt, other seeds), cells with under 10 samples
    pooled; speculative sampling must not move the target's distribution."""
    pairs_plain = [tuple(plain[i][:2]) for i in range(num)]
    pairs_spec = [tuple(speculative[i][:2]) for i in range(num, 2 * num)]
    cells = sorted(set(pairs_plain) | set(pairs_spec))
    table = [[pairs.count(cell) for cell in cells] for pairs in (pairs_plain, pairs_spec)]
    keep = [j for j in range(len(cells)) if table[0][j] + table[1][j] >= 10]
    rest = [sum(row[j] for j in range(len(cells)) if j not in keep) for row in table]
    table = [[row[j] for j in keep] + [r] for row, r in zip(table, rest)]
    assert len(keep) >= 3
    _, p_value, _, _ = stats.chi2_contingency(table)
    assert p_value > 1e-3


LOOKAHEAD = {"speculator": "lookahead", "lookahead_window": 3, "lookahead_ngram": 3,
             "lookahead_guesses": 2}
"""A small lookahead window on the random tiny-llama (passes of 1 + (3 + 2) x 2 tokens):
its pool does match, about 1.1 tokens per step."""
