"""Replicas behind routers: one pool, or a prefill pool feeding a decode pool.

Colocated (`--replicas N`): every arrival is routed to one of N identical replicas.

Arrivals are open-loop (each request at its trace time, `arrivals`) or, for a closed-loop
trace (inference-perf's `concurrent` stages, `traces.closed_loop`), sent as earlier requests
finish (`closed_loop`): a completion schedules an event at the request's finish time, which
wakes the sending process; each request is sent, and its arrival time set, at that instant.

Disaggregated (`--disaggregate P:D`, Splitwise / DistServe): arrivals are routed to P prefill
replicas, which compute the prompt and its first token only. The first token is streamed from
there (TTFT is the prefill side's); the sequence is then routed to one of D decode replicas,
which must give it memory for its whole context before the KV transfer starts. The transfer
takes `kv_link_latency_s + KV bytes per device / kv_link_bandwidth` (each device of the TP
group sends its shard over its own link) and is charged before the first decode step. The
prefill side releases the KV when its prefill ends (as with Splitwise's layer-wise transfer,
which overlaps the prefill), so a full decode pool shows up as queueing on the decode side,
not as back-pressure on prefills.

          arrivals --router--> [prefill 0 .. P-1] --first token--> router --> [decode 0 .. D-1]
                                                   KV transfer ----------^
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Callable, Generator

import simpy

from policies.engine import Engine
from policies.registry import ROUTERS, lookup
from policies.router.base import CacheAwareRouter, Router
from policies.types import Request, Sequence, sample_seq_id
from sim.config import SimConfig
from sim.cost.roofline import CostModel
from sim.replica import SimReplica
from traces.closed_loop import ClosedLoop

BuildEngine = Callable[[Callable[[Sequence], None]], Engine]


class Cluster:
    def __init__(self, env: simpy.Environment, config: SimConfig, cost: CostModel,
                 build_engine: BuildEngine, on_done: Callable[[Sequence], None]) -> None:
        self.env = env
        self.config = config
        self.cost = cost
        self._on_done = on_done
        self._end_s = math.inf if config.options.horizon_s is None else config.options.horizon_s
        self.next_arrival_s = self._end_s
        self._loop: ClosedLoop | None = None
        self._slot_freed = env.event()
        pools = config.options.pools
        end_s = self._end_s
        if len(pools) == 1:
            self.prefill = [SimReplica(env, build_engine(self._request_done), self._next_change_s,
                                       end_s) for _ in range(pools[0])]
            self.decode: list[SimReplica] = []
        else:
            self.prefill = [SimReplica(env, build_engine(self._on_prefill_done),
                                       self._next_change_s, end_s) for _ in range(pools[0])]
            self.decode = [SimReplica(env, build_engine(self._request_done),
                                      self._next_transfer_s, end_s) for _ in range(pools[1])]
        if pools == (1,):  # no router reads the replica when a request arrives
            self.prefill[0].engine.arrivals_unobserved = True
        self._prefill_router = self._router()
        self._decode_router = self._router()
        if isinstance(self._prefill_router, CacheAwareRouter):
            self._check_routed_caches()
        self._originals: dict[int, Request] = {}
        self._handoffs: list[float] = []  # heap of pending hand-off times
        self._frontend_s = config.frontend_latency_s

    def _router(self) -> Router:
        entry = lookup(ROUTERS, "router", self.config.options.router)
        return entry.policy(entry.make_params(self.config.policy_options))

    def _check_routed_caches(self) -> None:
        """A cache-aware router reads the prefix cache of every replica it picks from."""
        routed = [r.engine for pool in (self.prefill, self.decode) if len(pool) > 1 for r in pool]
        if any(engine.prefix_cache is None for engine in routed):
            o = self.config.options
            raise ValueError(f"--router {o.router} routes by cached prefixes, but --allocator "
                             f"{o.allocator} caches none (use --allocator paged-prefix or radix)")

    @property
    def engines(self) -> list[Engine]:
        """Prefill (or colocated) replicas first, then decode replicas."""
        return [r.engine for r in self.prefill + self.decode]

    def _next_change_s(self) -> float:
        """The next arrival (or the run's end): until then no replica's work changes from
        outside, since routers only look at replicas when a request arrives."""
        return self.next_arrival_s

    def _next_transfer_s(self) -> float:
        """A decode replica's work also changes when a prefilled sequence is handed over: at
        a hand-off already under way, or at the end of a prefill step yet to start, which
        starts when a busy prefill replica's current step ends or an arrival wakes an idle
        one."""
        now_s = self.env.now
        return min(self.next_arrival_s, self._handoffs[0] if self._handoffs else math.inf,
                   *(replica.busy_until_s for replica in self.prefill
                     if replica.busy_until_s >= now_s))

    def arrivals(self, requests: list[Request]) -> Generator[simpy.Event, None, None]:
        """Send each request at its trace time; its engine sees it `frontend_latency_s`
        later (sim.config.SimConfig.frontend_latency_s)."""
        env = self.env
        for request in requests:
            queued_s = request.arrival_time_s + self._frontend_s
            delay = queued_s - env.now
            if delay > 0:
                self.next_arrival_s = min(queued_s, self._end_s)
                yield env.timeout(delay)
            self._send(request)
        self.next_arrival_s = self._end_s

    def closed_loop(self, loop: ClosedLoop) -> Generator[simpy.Event, None, None]:
        """Send `loop`'s requests, each at the instant a slot of its stage frees (the start,
        or an earlier request's finish), with that instant as its arrival time. The engines
        do not fast-forward decodes here (`sim.assembly.build_engine`): a finish changes their
        work at once, and only the step that finishes a request reveals when."""
        self._loop = loop
        while True:
            for request in loop.due():
                sent = dataclasses.replace(request, arrival_time_s=self.env.now)
                if self._frontend_s > 0:
                    queued = self.env.timeout(self._frontend_s, sent)
                    queued.callbacks.append(lambda event: self._send(event.value))
                else:
                    self._send(sent)
            if loop.all_sent:
                return
            self._slot_freed = self.env.event()
            yield self._slot_freed

    def _send(self, request: Request) -> None:
        if self.decode and request.output_tokens > 1:
            # The prefill side computes the prompt and samples the first token only.
            self._originals[request.request_id] = request
            request = dataclasses.replace(request, output_tokens=1)
        self._pick(self.prefill, self._prefill_router, request).submit(request)

    def _request_done(self, seq: Sequence) -> None:
        """A request finished or was rejected (`seq` is its first sample). The engine reports
        it when it commits the step; a closed loop's slot frees when that step ends."""
        self._on_done(seq)
        if self._loop is not None:
            done = self.env.timeout(self._finished_at_s(seq) - self.env.now)
            done.callbacks.append(self._free_slot)

    def _free_slot(self, _: simpy.Event) -> None:
        self._loop.finished()
        if not self._slot_freed.triggered:
            self._slot_freed.succeed()

    def _finished_at_s(self, seq: Sequence) -> float:
        """When the request of `seq` ended: its last sample's finish (samples of `--n` may
        finish apart)."""
        others = [sample_seq_id(seq.request, k) for k in range(1, seq.request.n)]
        ends = [engine.sequences[i].finish_s for engine in self.engines for i in others
                if i in engine.sequences]
        return max([seq.finish_s, *(end for end in ends if end is not None)])

    def _pick(self, pool: list[SimReplica], router: Router, request: Request) -> SimReplica:
        if len(pool) == 1:
            return pool[0]
        return pool[router.route(request, [r.engine for r in pool])]

    def transfer_time(self, num_tokens: int) -> float:
        o = self.config.options
        per_device = num_tokens * self.cost.kv_bytes_per_token_replica / o.tp
        return o.kv_link_latency_s + per_device / (o.kv_link_bandwidth_gb_s * 1e9)

    def _on_prefill_done(self, prefilled: Sequence) -> None:
        original = self._originals.pop(prefilled.seq_id, None)
        if original is None or not prefilled.token_times_s:
            self._request_done(prefilled)  # one-token request, or rejected by the prefill pool
            return
        # The engine commits at the step's start; the hand-off happens at its end.
        first_token_s = prefilled.token_times_s[0]
        self.env.process(self._hand_off(prefilled, original, first_token_s))

    def _hand_off(self, prefilled: Sequence, original: Request,
                  first_token_s: float) -> Generator[simpy.Event, None, None]:
        heapq.heappush(self._handoffs, first_token_s)
        yield self.env.timeout(first_token_s - self.env.now)
        heapq.heappop(self._handoffs)
        seq = Sequence(original, num_computed_tokens=original.prompt_tokens, num_output_tokens=1,
                       num_preemptions=prefilled.num_preemptions,
                       num_recomputed_tokens=prefilled.num_recomputed_tokens,
                       first_scheduled_s=prefilled.first_scheduled_s)
        seq.token_times_s.append(first_token_s)
        replica = self._pick(self.decode, self._decode_router, original)
        replica.submit_transferred(seq, self.transfer_time(original.prompt_tokens))
