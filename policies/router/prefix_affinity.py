"""Cache-aware routing in the style of SGLang's router.

While the cluster is balanced, a request goes to the replica whose prefix cache holds the
longest run of its prompt, if that run covers at least `affinity_threshold` of the prompt;
otherwise to the least-loaded replica. When the busiest and idlest replicas' outstanding
requests differ by more than `balance_abs` and by a factor above `balance_rel`, locality is
dropped and the least-loaded replica gets the request, so a popular prefix cannot pile the
whole load onto one replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from policies.router.base import CacheAwareRouter, ReplicaView
from policies.types import Request


@dataclass(frozen=True, slots=True)
class PrefixAffinityParams:
    affinity_threshold: float = 0.5
    balance_abs: int = 32
    balance_rel: float = 1.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.affinity_threshold <= 1.0:
            raise ValueError("affinity_threshold must lie in [0, 1]")


class PrefixAffinityRouter(CacheAwareRouter):
    def __init__(self, params: PrefixAffinityParams) -> None:
        self.params = params

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        loads = [r.outstanding_requests for r in replicas]
        least = loads.index(min(loads))
        busiest, idlest = max(loads), min(loads)
        if busiest - idlest > self.params.balance_abs and busiest > self.params.balance_rel * idlest:
            return least
        hits = [r.cached_prefix_tokens(request) for r in replicas]
        best = max(range(len(replicas)), key=lambda i: (hits[i], -loads[i]))
        if hits[best] >= self.params.affinity_threshold * request.prompt_tokens and hits[best] > 0:
            return best
        return least
