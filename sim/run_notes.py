"""One-line notes on a finished run: options it was given but does not read (a policy's knob
when another policy of that kind runs: `--token-budget` under `--scheduler continuous`),
numbers that look like a failure but are what its inputs imply (a prefix-cache hit rate of 0
on prompts of lengths only, prefix-affinity routing over such prompts), and kernels the
measured cost model priced from another dtype's table (summary.json's `cost_model_notes`:
`--kv-dtype fp8` on A100, whose tables measure bf16 KV only). The CLI prints them
under the results table and the dashboard under its cards. (Prefix-affinity routing over an
allocator that caches nothing is refused when the cluster is built; the real executor's
sampling flags on the simulator are refused by `sim.config`.)"""

from __future__ import annotations

from typing import Any

from sim.config import ReplayOptions
from sim.policy_knobs import KNOB_OPTIONS
from traces import Trace

SELECTED_BY = {"schedulers": "scheduler", "allocators": "allocator",
               "speculators": "speculator", "routers": "router"}
"""The option that picks the policy of each registry kind."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _engine_option_reads(options: Any) -> list[tuple[str, bool, str]]:
    """(option, whether this run reads it, what it needs) of the engine options that only
    some configurations read."""
    one_replica = options.replicas == 1 and options.disaggregate is None
    return [
        ("router", not one_replica, "several replicas (--replicas or --disaggregate)"),
        ("kv_link_bandwidth_gb_s", options.disaggregate is not None, "--disaggregate"),
        ("kv_link_latency_s", options.disaggregate is not None, "--disaggregate"),
        ("beam_churn", options.beam_width > 1, "--beam-width above 1"),
        ("swap_space_gb", options.preemption == "swap", "--preemption swap"),
        ("spec_acceptance", options.speculator != "none", "a --speculator"),
        ("spec_draft_pass_overhead_s", options.speculator != "none", "a --speculator"),
    ]


def _either(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def unread_options(options: Any) -> list[str]:
    """A note for each option set away from its default that this run does not read: a
    value the user chose that would otherwise change nothing, silently."""
    defaults = ReplayOptions()
    notes = []
    for knob in KNOB_OPTIONS:
        picked_by = SELECTED_BY.get(knob.kind)
        value = getattr(options, knob.name)
        if picked_by is None or value == getattr(defaults, knob.name):
            continue
        running = getattr(options, picked_by)
        if running not in knob.policies:
            notes.append(f"{_flag(knob.name)} {value} has no effect: only {_flag(picked_by)} "
                         f"{_either(knob.policies)} reads it, and this run uses {running}")
    for name, read, needs in _engine_option_reads(options):
        value = getattr(options, name)
        if not read and value != getattr(defaults, name):
            notes.append(f"{_flag(name)} {value} has no effect without {needs}")
    return notes


def run_notes(trace: Trace, options: Any, summary: dict[str, Any]) -> list[str]:
    """`options` is the run's `ReplayOptions`; `summary` its summary.json (its
    `prefix_hit_rate` is null when the allocator does no prefix caching)."""
    notes = unread_options(options)
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
    notes += summary.get("cost_model_notes", [])
    return notes
