"""The base of a cluster's background parts (health monitor, mDNS discovery)."""

from __future__ import annotations


class ClusterService:
    """A background part of the cluster (health monitor, mDNS discovery)."""

    discovers = False  # True for services that add nodes (the first request waits briefly)

    async def start(self) -> None:
        """Start; idempotent."""

    async def stop(self) -> None:
        """Stop and release resources."""

    def describe(self) -> dict[str, object]:
        """Return a short status entry."""
        return {}

    async def check_now(self) -> None:
        """Do one round of the service's work now (health: check every node)."""
