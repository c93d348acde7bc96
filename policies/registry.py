"""Policies by name: one table per kind. Adding a policy is one class plus one line here.

Each entry pairs a policy class with its frozen params dataclass; `make_params` fills the
params from a flat options mapping (the run options' names), taking only the fields the params
declare, so every policy reads exactly the knobs it has. A params field declared with
`policies.knobs.knob` is a run option: its flag, TOML key, sweep-grid key and dashboard control
are generated from this table (see `policies/knobs.py`), so a policy with a knob is still one
class plus one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from policies.decoding.block_diffusion import DiffusionParams
from policies.knobs import params_from_options

from policies.kv.contiguous import ContiguousAllocator, ContiguousParams
from policies.kv.hybrid_paged import make_paged_allocator
from policies.kv.paged import PagedParams, PagedPrefixParams
from policies.kv.radix import RadixAllocator, RadixParams
from policies.router.prefix_affinity import PrefixAffinityParams, PrefixAffinityRouter
from policies.router.simple import (
    LeastOutstandingParams, LeastOutstandingRouter, RoundRobinParams, RoundRobinRouter,
)
from policies.scheduler.chunked import ChunkedParams, ChunkedScheduler
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.scheduler.orca import OrcaParams, OrcaScheduler
from policies.scheduler.static import StaticParams, StaticScheduler
from policies.speculative.cascade import CascadeParams, CascadeSpeculator
from policies.speculative.draft import DraftParams, DraftSpeculator
from policies.speculative.lookahead import LookaheadParams, LookaheadSpeculator
from policies.speculative.ngram import NgramParams, NgramSpeculator
from policies.speculative.none import NoSpecParams, NoSpeculator
from policies.speculative.tree import TreeParams, TreeSpeculator


class UnknownNameError(ValueError):
    """A name not in a table; the message lists the valid ones."""


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    name: str
    policy: Callable[..., Any]
    params: type
    summary: str

    def make_params(self, options: Mapping[str, Any]) -> Any:
        return params_from_options(self.params, options)


SCHEDULERS: dict[str, PolicyEntry] = {
    e.name: e
    for e in [
        PolicyEntry("static", StaticScheduler, StaticParams,
                    "FasterTransformer-style static batches run to their longest member"),
        PolicyEntry("continuous", ContinuousScheduler, ContinuousParams,
                    "Orca/vLLM iteration-level batching, whole-prompt prefills first"),
        PolicyEntry("orca", OrcaScheduler, OrcaParams,
                    "Orca: decodes and whole new prompts in one batch, no token budget "
                    "(pair with --allocator contiguous for the Orca baseline)"),
        PolicyEntry("chunked", ChunkedScheduler, ChunkedParams,
                    "Sarathi-Serve chunked prefill: one token budget per iteration, decodes "
                    "first, prefill chunks after (--token-budget, --chunked-order)"),
    ]
}

ALLOCATORS: dict[str, PolicyEntry] = {
    e.name: e
    for e in [
        PolicyEntry("paged", make_paged_allocator, PagedParams,
                    "PagedAttention blocks, block tables, free list, all-or-nothing allocation"),
        PolicyEntry("paged-prefix", make_paged_allocator, PagedPrefixParams,
                    "paged + automatic prefix caching: hash-chained full blocks, shared by "
                    "reference count, LRU cached-free pool evicted lazily, tail blocks first; "
                    "sliding-window and chunked layers cache the blocks their window reads"),
        PolicyEntry("radix", RadixAllocator, RadixParams,
                    "SGLang RadixAttention: token-granular prefix matching in a radix tree of "
                    "token slots, reference-counted paths, LRU leaf eviction; window layers' KV "
                    "kept per node while a window reads it"),
        PolicyEntry("contiguous", ContiguousAllocator, ContiguousParams,
                    "one contiguous span per request reserved up front (--reserve max|pow2|oracle)"),
    ]
}

SPECULATORS: dict[str, PolicyEntry] = {
    e.name: e
    for e in [
        PolicyEntry("none", NoSpeculator, NoSpecParams, "no speculation: one token per step"),
        PolicyEntry("draft", DraftSpeculator, DraftParams,
                    "separate draft model (--draft-model), k sequential passes, not fused"),
        PolicyEntry("tree", TreeSpeculator, TreeParams,
                    "Medusa/EAGLE token tree (--spec-tree-width x depth k), fused drafter"),
        PolicyEntry("ngram", NgramSpeculator, NgramParams,
                    "prompt lookup: no draft model, no draft cost"),
        PolicyEntry("cascade", CascadeSpeculator, CascadeParams,
                    "tiny drafter -> small drafter (--draft-model) -> target, not fused"),
        PolicyEntry("lookahead", LookaheadSpeculator, LookaheadParams,
                    "lookahead decoding: Jacobi window (--lookahead-window) feeds an n-gram "
                    "pool verified in the same pass; no draft model"),
    ]
}

ROUTERS: dict[str, PolicyEntry] = {
    e.name: e
    for e in [
        PolicyEntry("round-robin", RoundRobinRouter, RoundRobinParams,
                    "replicas in turn"),
        PolicyEntry("least-outstanding", LeastOutstandingRouter, LeastOutstandingParams,
                    "least outstanding work: prompt + output tokens (--router-load requests: requests)"),
        PolicyEntry("prefix-affinity", PrefixAffinityRouter, PrefixAffinityParams,
                    "SGLang-style cache-aware: longest cached prefix, unless load is unbalanced"),
    ]
}

TABLES: dict[str, dict[str, PolicyEntry]] = {
    "schedulers": SCHEDULERS, "allocators": ALLOCATORS, "speculators": SPECULATORS,
    "routers": ROUTERS,
}

OPTION_PARAMS: dict[str, type] = {"decoding": DiffusionParams}
"""Params no table selects by name whose knobs are run options too, by kind: the decoding mode
(`--decoding` is itself one of `DiffusionParams`' knobs)."""


def lookup(table: Mapping[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}") from None
