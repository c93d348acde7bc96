"""`extend_key_runs`, the decode fast-forward's way of growing a path's keys, against
appending `token_key_runs` run by run."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from policies.kv.token_keys import append_run, extend_key_runs, token_key_runs
from policies.types import Request


@given(prompt=st.integers(1, 20), kind=st.sampled_from(["ids", "trace", "length"]),
       cuts=st.lists(st.integers(0, 40), min_size=1, max_size=5), sample=st.integers(0, 2))
def test_extend_key_runs_appends_what_token_key_runs_gives(prompt, kind, cuts, sample):
    request = Request(7, 0.0, prompt, 30,
                      prompt_token_ids=tuple(range(100, 100 + prompt)) if kind == "ids" else None,
                      prefix_block_hashes=(5, 6) if kind == "trace" else (),
                      prefix_block_tokens=4 if kind == "trace" else 0)
    extended, appended, lo = [], [], 0
    for hi in sorted(cuts):
        extend_key_runs(extended, request, lo, hi, sample)
        for run in token_key_runs(request, lo, hi, sample):
            append_run(appended, run)
        lo = hi
    assert extended == appended
    assert sum(map(len, extended)) == lo
