"""Background health monitoring of every node.

Each round (``cluster.health_interval_s``) every node gets one check, concurrently:

* a node in good standing gets a liveness check (``GET /health``: any answer below 500 is
  alive); unreachable opens its breaker at once, a 5xx counts as a soft failure;
* a *suspect* node (a recent failed call) or a half-open one gets a real one-token chat
  completion as a probe: its success closes the breaker, its failure counts (a node that
  lists models fine but fails or stalls on completions is caught here);
* an open node still cooling down gets only the liveness check, to keep ``healthy`` fresh;
* a node found by mDNS that stayed unreachable for ``discovery.ttl_s`` is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import httpx

from bastion.cluster._errors import NodeFailed, classify_failure
from bastion.cluster.breaker import BreakerState
from bastion.cluster.node import Node
from bastion.cluster.service import ClusterService
from bastion.config.model import ClusterConfig
from bastion.messages import ChatSettings, Finish, Message

if TYPE_CHECKING:
    from bastion.cluster.model import ClusterModel

PROBE = [Message("user", "Say OK.")]


class HealthMonitor(ClusterService):
    """Checks nodes in the background and drives their breakers."""

    def __init__(self, cluster: ClusterModel, cfg: ClusterConfig) -> None:
        self.cluster = cluster
        self.router = cluster.router
        self.interval = cfg.health_interval_s
        self.timeout = cfg.health_timeout_s
        self.ttl = cfg.discovery.ttl_s
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self.router.listeners.append(lambda what, node: self.poke() if what != "removed" else None)

    async def start(self) -> None:
        """Start the background loop (first round right away)."""
        if self._task is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and close its HTTP client."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def describe(self) -> dict[str, object]:
        """Status entry."""
        return {"service": "health", "interval_s": self.interval, "rounds": self.rounds}

    def poke(self) -> None:
        """Run the next round now (e.g. after a node was added)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self.check_all()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def check_now(self) -> None:
        """Check every node now."""
        await self.check_all()

    async def check_all(self) -> None:
        """One round: check every node concurrently, then drop expired discovered nodes."""
        nodes = list(self.router.nodes.values())
        await asyncio.gather(*(self.check(n) for n in nodes), return_exceptions=True)
        self.rounds += 1
        now = time.monotonic()
        for node in nodes:
            if (
                node.source == "mdns"
                and node.unreachable_since is not None
                and now - node.unreachable_since >= self.ttl
                and node.name in self.router.nodes
            ):
                self.router.remove(node.name)

    async def check(self, node: Node) -> None:
        """Check one node and feed the verdict to its breaker."""
        breaker = node.breaker
        state = breaker.state
        if state is BreakerState.HALF_OPEN:
            if breaker.begin_probe():
                await self._probe(node)
            return
        if state is BreakerState.CLOSED and breaker.failures > 0:
            await self._probe(node)
            return
        failure = await self._liveness(node)
        self._mark(node, failure)
        if failure is not None and state is BreakerState.CLOSED:
            breaker.record_failure(hard=failure.kind == "hard")

    async def _liveness(self, node: Node) -> NodeFailed | None:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {node.spec.token}"} if node.spec.token else {}
        try:
            # /health: llama.cpp's llama-server and vLLM serve it; llama-cpp-python answers
            # 404 without taking its model lock (its /v1/models waits behind a generation)
            resp = await self._http.get(node.spec.url + "/health", headers=headers)
        except Exception as exc:  # noqa: BLE001 - every failure is a health verdict
            return classify_failure(exc)
        if resp.status_code >= 500:
            return NodeFailed("soft", f"health check HTTP {resp.status_code}")
        if resp.status_code in (401, 403):
            return NodeFailed("soft", f"health check refused (HTTP {resp.status_code}): token?")
        return None

    async def _probe(self, node: Node) -> None:
        """Send a one-token completion through the same client real requests use."""
        model = self.cluster.node_model(node)
        failure: NodeFailed | None = None
        finished = False
        try:
            async with asyncio.timeout(self.timeout):
                async for ev in model.chat(PROBE, settings=ChatSettings(max_tokens=1)):
                    if isinstance(ev, Finish):
                        finished = ev.reason != "error"
            if not finished:
                failure = NodeFailed("soft", "probe ended without a finish")
        except Exception as exc:  # noqa: BLE001 - every failure is a health verdict
            failure = classify_failure(exc)
        self._mark(node, failure)
        if failure is None:
            node.breaker.record_success()
        elif failure.kind == "client":
            node.breaker.end_probe()
        else:
            node.breaker.record_failure(hard=failure.kind == "hard")

    def _mark(self, node: Node, failure: NodeFailed | None) -> None:
        node.last_check = time.monotonic()
        ok = failure is None or failure.kind == "client"
        node.healthy = ok
        if ok:
            node.unreachable_since = None
        else:
            assert failure is not None
            node.last_error = failure.reason
            if node.unreachable_since is None:
                node.unreachable_since = node.last_check
        self.cluster.metrics.healthy.set(1 if ok else 0, node=node.name)
