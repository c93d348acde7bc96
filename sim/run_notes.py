"""One-line notes on a finished run whose numbers look like a failure but are what its inputs
imply: a prefix-cache hit rate of 0 on prompts of lengths only, prefix-affinity routing over
such prompts. The CLI prints them under the results table. (Prefix-affinity routing over an
allocator that caches nothing is refused when the cluster is built.)"""

from __future__ import annotations

from typing import Any

from traces import Trace


def run_notes(trace: Trace, options: Any, summary: dict[str, Any]) -> list[str]:
    """`options` is the run's `ReplayOptions`; `summary` its summary.json (its
    `prefix_hit_rate` is null when the allocator does no prefix caching)."""
    notes = []
    caches_prefixes = summary.get("prefix_hit_rate") is not None
    length_only = all(r.prefix_block_hashes is None and r.prompt_token_ids is None
                      for r in trace.requests)
    if caches_prefixes and summary["prefix_hit_rate"] == 0 and length_only:
        notes.append(f"prefix_hit_rate is 0 because trace {trace.name} gives prompt lengths "
                     "only (no token ids or block hashes): no two prompts can be seen to share "
                     "a prefix")
    if options.router == "prefix-affinity" and caches_prefixes and length_only:
        notes.append(f"--router prefix-affinity found no shared prefixes: trace {trace.name} "
                     "gives prompt lengths only, so it routed by load alone")
    return notes
