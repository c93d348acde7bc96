"""Policies by name: one table per kind. Adding a policy is one class plus one line here.

Each entry pairs a policy class with its frozen params dataclass; `make` fills the params from
a flat options mapping (the CLI's option names), taking only the fields the params declare, so
every policy reads exactly the knobs it has.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from policies.kv.contiguous import ContiguousAllocator, ContiguousParams
from policies.kv.paged import PagedAllocator, PagedParams, PagedPrefixParams
from policies.kv.radix import RadixAllocator, RadixParams
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.scheduler.static import StaticParams, StaticScheduler


class UnknownNameError(ValueError):
    """A name not in a table; the message lists the valid ones."""


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    name: str
    policy: Callable[..., Any]
    params: type
    summary: str

    def make_params(self, options: Mapping[str, Any]) -> Any:
        accepted = {f.name for f in fields(self.params)}
        return self.params(**{k: v for k, v in options.items() if k in accepted and v is not None})


SCHEDULERS: dict[str, PolicyEntry] = {
    e.name: e
    for e in [
        PolicyEntry("static", StaticScheduler, StaticParams,
                    "FasterTransformer-style static batches run to their longest member"),
        PolicyEntry("continuous", ContinuousScheduler, ContinuousParams,
                    "Orca/vLLM iteration-level batching, whole-prompt prefills first"),
    ]
}

ALLOCATORS: dict[str, PolicyEntry] = {
    e.name: e
    for e in [
        PolicyEntry("paged", PagedAllocator, PagedParams,
                    "PagedAttention blocks, block tables, free list, all-or-nothing allocation"),
        PolicyEntry("paged-prefix", PagedAllocator, PagedPrefixParams,
                    "paged + automatic prefix caching: hash-chained full blocks, shared by "
                    "reference count, LRU cached-free pool evicted lazily, tail blocks first"),
        PolicyEntry("radix", RadixAllocator, RadixParams,
                    "SGLang RadixAttention: token-granular prefix matching in a radix tree of "
                    "token slots, reference-counted paths, LRU leaf eviction"),
        PolicyEntry("contiguous", ContiguousAllocator, ContiguousParams,
                    "one contiguous span per request reserved up front (--reserve max|pow2|oracle)"),
    ]
}

TABLES: dict[str, dict[str, PolicyEntry]] = {"schedulers": SCHEDULERS, "allocators": ALLOCATORS}


def lookup(table: Mapping[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise UnknownNameError(f"unknown {kind} {name!r}; choose one of: {', '.join(table)}") from None
