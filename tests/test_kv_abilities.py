"""Which allocator declares which ability, and what a run needing an ability it lacks gets.

The allocator contract is a small core (`KVAllocator`) plus opt-in protocols a class declares
by subclassing (`policies/kv/base.py`); callers ask `isinstance` once, when they are built.
"""

from __future__ import annotations

import inspect

import pytest

from policies.beam import BeamParams, RandomBeamReparenter
from policies.engine import Engine
from policies.fast_forward import GrowsInLockstep
from policies.kv.base import (ForksSequences, KVAllocator, KVUsage, PageTableAllocator,
                              PrefixCache, ShrinksSlots, kv_tokens_needed)
from policies.kv.layout import KVLayout
from policies.kv.paged import PagedAllocator, PagedParams, PagedPrefixAllocator, PagedPrefixParams
from policies.registry import ALLOCATORS, SCHEDULERS, SPECULATORS, PolicyEntry
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.speculative.base import SpecParams
from policies.speculative.planner import SpeculativeScheduler
from policies.types import Request, Sequence
from sim.api import simulate
from sim.config import ReplayOptions, resolve

ABILITIES = (PrefixCache, ForksSequences, ShrinksSlots, PageTableAllocator, GrowsInLockstep)
WINDOWED = KVLayout(full_units=1, window_units=2, window_tokens=8)


def build(name: str, layout: KVLayout = KVLayout()) -> object:
    entry = ALLOCATORS[name]
    return entry.policy(entry.make_params({"num_blocks": 64, "block_size": 4,
                                           "max_model_len": 256, "layout": layout}))


def declared(allocator: object) -> set[str]:
    return {p.__name__ for p in ABILITIES if p in type(allocator).__mro__}


def test_each_allocator_declares_its_abilities():
    assert {name: declared(build(name)) for name in ALLOCATORS} == {
        "paged": {"ForksSequences", "ShrinksSlots", "PageTableAllocator", "GrowsInLockstep"},
        "paged-prefix": {"PrefixCache", "ForksSequences", "ShrinksSlots", "PageTableAllocator",
                         "GrowsInLockstep"},
        "radix": {"PrefixCache", "ForksSequences", "ShrinksSlots", "GrowsInLockstep"},
        "contiguous": {"ForksSequences", "ShrinksSlots", "PageTableAllocator", "GrowsInLockstep"},
    }
    # a hybrid layout (sliding window) gets the hybrid classes: no page table for the backend
    assert declared(build("paged", WINDOWED)) == {"ForksSequences", "ShrinksSlots",
                                                   "GrowsInLockstep"}
    assert declared(build("paged-prefix", WINDOWED)) == {"PrefixCache", "ForksSequences",
                                                          "ShrinksSlots", "GrowsInLockstep"}


@pytest.mark.parametrize("name,layout", [(name, KVLayout()) for name in ALLOCATORS]
                         + [(name, WINDOWED) for name in ("paged", "paged-prefix", "radix")],
                         ids=lambda value: value if isinstance(value, str) else
                         "plain" if value.is_plain else "windowed")
def test_declared_means_implemented_and_undeclared_means_absent(name, layout):
    """A declared ability has every method of its own (no protocol stub inherited); an
    undeclared one has none of its methods (no no-op stand-ins), and `isinstance` agrees."""
    allocator = build(name, layout)
    cls = type(allocator)
    for protocol in (KVAllocator, *ABILITIES):
        methods = [n for n, member in vars(protocol).items()
                   if inspect.isfunction(member) and not n.startswith("_")]
        if protocol is KVAllocator or protocol in cls.__mro__:
            assert protocol is KVAllocator or isinstance(allocator, protocol)
            for method in methods:
                owner = next(c for c in cls.__mro__ if method in vars(c))
                assert owner not in (KVAllocator, *ABILITIES), f"{cls.__name__}.{method}"
        else:
            assert not isinstance(allocator, protocol)
            assert not [m for m in methods if hasattr(allocator, m)], protocol.__name__


def test_paged_classes_refuse_params_of_the_other_kind():
    with pytest.raises(ValueError, match="make_paged_allocator picks the class"):
        PagedAllocator(PagedPrefixParams(block_size=4, num_blocks=8))
    with pytest.raises(ValueError, match="make_paged_allocator picks the class"):
        PagedPrefixAllocator(PagedParams(block_size=4, num_blocks=8))


class CoreOnlyAllocator(KVAllocator):
    """The core contract and nothing else: whole blocks per sequence, counted, no ids."""

    def __init__(self, params: PagedParams) -> None:
        self.block_size = params.block_size
        self.num_blocks = params.num_blocks
        self._held_blocks: dict[int, int] = {}
        self._held_tokens: dict[int, int] = {}

    def never_fits_reason(self, request: Request) -> str | None:
        need = self.blocks_for(kv_tokens_needed(request))
        return None if need <= self.num_blocks else f"needs {need} blocks of {self.num_blocks}"

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate_slots(self, seq: Sequence, num_tokens: int, num_cached_tokens: int = 0) -> bool:
        held = self._held_blocks.get(seq.seq_id, 0)
        need = max(held, self.blocks_for(num_tokens))
        if need - held > self.num_blocks - sum(self._held_blocks.values()):
            return False
        self._held_blocks[seq.seq_id] = need
        self._held_tokens[seq.seq_id] = max(num_tokens, self._held_tokens.get(seq.seq_id, 0))
        return True

    def free(self, seq: Sequence) -> None:
        self._held_blocks.pop(seq.seq_id, None)
        self._held_tokens.pop(seq.seq_id, None)

    def usage(self) -> KVUsage:
        return KVUsage(self.num_blocks * self.block_size,
                       sum(self._held_blocks.values()) * self.block_size,
                       sum(self._held_tokens.values()))


@pytest.fixture
def core_only(monkeypatch):
    monkeypatch.setitem(ALLOCATORS, "core-only", PolicyEntry(
        "core-only", CoreOnlyAllocator, PagedParams, "the core allocator contract alone"))


def test_the_core_alone_runs_a_replica(core_only):
    """Admission, growth, preemption and release need nothing beyond the core; the summary
    reports no prefix caching."""
    summary = simulate(resolve(ReplayOptions(allocator="core-only", max_requests=60,
                                             num_gpu_blocks=400, rate_scale=4.0))).summary
    assert summary["requests_finished"] == 60 and summary["preemptions"] > 0
    assert summary["prefix_hit_rate"] is None and summary["evictions"] == 0


@pytest.mark.parametrize("options,message", [
    (dict(n=2), "--n and --beam-width fork a request into sequences sharing its KV, which "
                "--allocator core-only cannot do"),
    (dict(beam_width=2), "--n and --beam-width fork a request"),
    (dict(speculator="ngram"), "speculation gives back rejected drafts' KV slots, which a "
                               "CoreOnlyAllocator cannot do"),
    (dict(replicas=2, router="prefix-affinity"),
     "--router prefix-affinity routes by cached prefixes, but --allocator core-only caches none"),
])
def test_a_run_needing_an_ability_the_allocator_lacks_is_refused_when_built(core_only, options,
                                                                           message):
    with pytest.raises(ValueError, match=message):
        simulate(resolve(ReplayOptions(allocator="core-only", max_requests=10, **options)))


def test_policies_built_by_hand_refuse_a_missing_ability_too():
    allocator = CoreOnlyAllocator(PagedParams(block_size=4, num_blocks=8))
    scheduler = ContinuousScheduler(ContinuousParams(), allocator)
    with pytest.raises(ValueError, match="speculation gives back"):
        SpeculativeScheduler(scheduler, SPECULATORS["ngram"].policy(SpecParams(spec_k=2)), 64)
    with pytest.raises(ValueError, match="beam search forks sequences"):
        Engine(scheduler, executor=None, max_model_len=64,
               beams=RandomBeamReparenter(BeamParams()))
    engine = Engine(SCHEDULERS["continuous"].policy(ContinuousParams(), allocator),
                    executor=None, max_model_len=64)
    assert engine.prefix_cache is None


def test_one_replica_never_routes_so_any_allocator_goes_with_any_router():
    summary = simulate(resolve(ReplayOptions(max_requests=10, router="prefix-affinity"))).summary
    assert summary["requests_finished"] == 10
