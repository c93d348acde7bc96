"""Load-only routers: round-robin, and least outstanding work (requests or tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from policies.knobs import check_knobs, knob
from policies.router.base import ReplicaView
from policies.types import Request

LOAD_MEASURES = ("requests", "tokens")


@dataclass(frozen=True, slots=True)
class RoundRobinParams:
    pass


class RoundRobinRouter:
    def __init__(self, params: RoundRobinParams) -> None:
        self._next = 0

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        choice = self._next % len(replicas)
        self._next += 1
        return choice


@dataclass(frozen=True, slots=True)
class LeastOutstandingParams:
    router_load: str = knob("tokens", choices=LOAD_MEASURES, help=(
        "least-outstanding: count requests or tokens"))

    def __post_init__(self) -> None:
        check_knobs(self)


def load_of(replica: ReplicaView, measure: str) -> int:
    return replica.outstanding_requests if measure == "requests" else replica.outstanding_tokens


class LeastOutstandingRouter:
    """The replica with the least outstanding work; ties go to the lowest index."""

    def __init__(self, params: LeastOutstandingParams) -> None:
        self.measure = params.router_load

    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        loads = [load_of(r, self.measure) for r in replicas]
        return loads.index(min(loads))
