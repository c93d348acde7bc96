"""The router contract: pick a replica for each arriving request, from what replicas report.

Routers see `ReplicaView`s, not engines: the load figures a real router could obtain (queued
and running requests, outstanding tokens) and, for cache-aware routing, how many leading
tokens of a prompt a replica's prefix cache holds right now.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from policies.types import Request


class ReplicaView(Protocol):
    @property
    def outstanding_requests(self) -> int:
        """Requests queued or running on the replica."""

    @property
    def outstanding_tokens(self) -> int:
        """Prompt plus output tokens of the requests on the replica, not yet all computed."""

    def cached_prefix_tokens(self, request: Request) -> int:
        """Leading prompt tokens of `request` the replica's prefix cache holds; asked only by
        a `CacheAwareRouter`, of replicas whose allocator is a `PrefixCache`."""


class Router(Protocol):
    def route(self, request: Request, replicas: Sequence[ReplicaView]) -> int:
        """Index of the replica that gets `request`."""


class CacheAwareRouter:
    """A router declares by subclassing this that it reads `cached_prefix_tokens`: a cluster
    builds it only over replicas that cache prefixes (an allocator that is a
    `policies.kv.base.PrefixCache`), and refuses other runs with a one-line error."""
