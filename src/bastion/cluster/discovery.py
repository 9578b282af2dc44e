"""mDNS (zeroconf) announce and discovery of nodes.

``bastion node serve`` registers a ``_bastion-llm._tcp.local.`` service whose TXT record
carries the node's capabilities (engine, tier, models, max context, API path). A router
with ``cluster.discovery.enabled`` browses for that type, resolves each instance and adds it
to its router (source ``mdns``). A node that leaves says goodbye (removed at once); one that
vanishes silently is removed when its records expire (their TTL) or when it stayed
unreachable for ``discovery.ttl_s`` (the health monitor's sweep), whichever comes first.

Anything on the LAN can announce itself, so discovery trusts no announcement with a secret:
a bearer token goes only to a node listed in ``discovery.trusted`` (its name, the address it
must announce from, its own token), never to any other announcer; a node already known is
never moved to another address by a later announcement (it must leave or expire first); and
``tls`` (per trusted node, for all, or announced by the node) makes its URL ``https``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from bastion._extras import require
from bastion.cluster.node import TIERS, NodeSpec
from bastion.cluster.router import Router
from bastion.cluster.service import ClusterService
from bastion.config.model import ENGINES, ClusterDiscoveryConfig, TrustedNodeConfig
from bastion.errors import ConfigError

log = logging.getLogger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SERVICE_TYPE = "_bastion-llm._tcp.local."


def _zc() -> Any:
    return require("zeroconf", extra="cluster", feature="mDNS discovery")


@dataclass(slots=True, frozen=True)
class Announcement:
    """What a node tells the network about itself."""

    name: str
    port: int
    addresses: tuple[str, ...]
    engine: str = "llama_cpp"
    tier: str = "small"
    models: tuple[str, ...] = ()
    max_context: int = 2048
    ttl_s: int = 30
    tls: bool = False

    def properties(self) -> dict[str, str]:
        """Return the TXT record."""
        props = {
            "v": "1",
            "name": self.name,
            "engine": self.engine,
            "tier": self.tier,
            "models": ",".join(self.models),
            "max_context": str(self.max_context),
            "path": "/v1",
        }
        if self.tls:
            props["tls"] = "1"
        return props


def local_addresses() -> list[str]:
    """Non-loopback IPv4 addresses of this machine's interfaces."""
    import ifaddr

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
    return out


class Announcer:
    """Registers one node's service; :meth:`close` says goodbye."""

    def __init__(self, ann: Announcement, service_type: str = SERVICE_TYPE) -> None:
        self.ann = ann
        self.service_type = service_type
        self._azc: Any = None
        self._info: Any = None

    async def start(self) -> None:
        """Register (probing for name conflicts as mDNS requires)."""
        zc = _zc()
        from zeroconf.asyncio import AsyncZeroconf

        ann = self.ann
        host = socket.gethostname().split(".")[0] or "node"
        self._info = zc.ServiceInfo(
            self.service_type,
            f"{ann.name}.{self.service_type}",
            addresses=[socket.inet_aton(a) for a in ann.addresses],
            port=ann.port,
            properties=ann.properties(),
            server=f"{host}-{ann.name}.local.",
            host_ttl=ann.ttl_s,
            other_ttl=ann.ttl_s,
        )
        self._azc = AsyncZeroconf(interfaces=list(ann.addresses) or zc.InterfaceChoice.All)
        await self._azc.async_register_service(self._info)

    async def close(self) -> None:
        """Unregister (goodbye packets) and close the socket."""
        if self._azc is None:
            return
        with contextlib.suppress(Exception):
            await self._azc.async_unregister_service(self._info)
        await self._azc.async_close()
        self._azc = None


def spec_from_properties(
    props: dict[bytes, bytes | None], address: str, port: int, token: str | None,
    *, tls: bool = False,
) -> NodeSpec | None:
    """Build a node spec from a resolved service (None when the record is not ours).

    The URL is ``https`` when ``tls`` (configured) or when the node announces ``tls=1``.
    """
    p = {k.decode(): (v or b"").decode() for k, v in props.items()}
    name = p.get("name") or ""
    engine = p.get("engine", "llama_cpp")
    tier = p.get("tier", "small")
    if not name or engine not in ENGINES or tier not in TIERS:
        return None
    try:
        max_context = int(p.get("max_context") or 2048)
    except ValueError:
        return None
    models = tuple(m for m in (p.get("models") or "").split(",") if m)
    scheme = "https" if tls or p.get("tls") == "1" else "http"
    host = f"[{address}]" if ":" in address else address
    return NodeSpec(
        name=name,
        url=f"{scheme}://{host}:{port}",
        engine=engine,
        tier=tier,
        models=models,
        max_context=max_context,
        token=token,
    )


class DiscoveryService(ClusterService):
    """Browses for nodes and keeps the router's ``mdns`` members in sync."""

    discovers = True

    def __init__(self, router: Router, cfg: ClusterDiscoveryConfig) -> None:
        self.router = router
        self.service_type = cfg.service_type
        self.token = cfg.token.get_secret_value() if cfg.token else None
        self.tls = cfg.tls
        self.networks = [_network(n, "cluster.discovery.networks") for n in cfg.networks]
        self.trusted: dict[str, tuple[TrustedNodeConfig, Network]] = {
            t.name: (t, _network(t.address, f"cluster.discovery.trusted[{t.name}].address"))
            for t in cfg.trusted
        }
        if self.token is not None and not self.trusted:
            log.warning("cluster.discovery.token is sent to no discovered node: list the nodes "
                        "that may have it under cluster.discovery.trusted")
        self.ignored: set[str] = set()  # announcements refused by the network allowlist
        self.found: dict[str, str] = {}  # mDNS instance name -> node name
        self._azc: Any = None
        self._browser: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start browsing."""
        if self._azc is not None:
            return
        _zc()
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        self._azc = AsyncZeroconf()
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, self.service_type, handlers=[self._on_change]
        )

    async def stop(self) -> None:
        """Stop browsing."""
        for t in list(self._tasks):
            t.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            await self._azc.async_close()
            self._azc = None

    def describe(self) -> dict[str, object]:
        """Status entry."""
        return {
            "service": "mdns",
            "type": self.service_type,
            "found": sorted(self.found.values()),
            "ignored": sorted(self.ignored),
        }

    async def check_now(self) -> None:
        """Give mDNS a moment to answer (browsing itself runs in the background)."""
        await asyncio.sleep(1.5)

    def placement(self, name: str, addresses: list[str]
                  ) -> tuple[str, str | None, bool] | None:
        """Return (address, token, tls) for a node announced as ``name`` at ``addresses``.

        A trusted name must announce from its pinned address (else ``None``: an impostor)
        and gets its token; any other name gets no token at all.
        """
        pinned = self.trusted.get(name)
        if pinned is None:
            return addresses[0], None, self.tls
        entry, net = pinned
        inside = [a for a in addresses if ipaddress.ip_address(a) in net]
        if not inside:
            return None
        token = entry.token.get_secret_value() if entry.token else self.token
        return inside[0], token, self.tls or entry.tls

    def allowed(self, address: str) -> bool:
        """Return True when ``address`` is inside ``discovery.networks`` (or no list is set)."""
        if not self.networks:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.networks)

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            self._forget(name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, instance: str) -> None:
        node_name = self.found.pop(instance, None)
        node = self.router.nodes.get(node_name or "")
        if node is not None and node.source == "mdns":
            self.router.remove(node.name)

    async def _resolve(self, service_type: str, instance: str) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo

        info = AsyncServiceInfo(service_type, instance)
        if not await info.async_request(self._azc.zeroconf, 3000):
            return
        addresses = [a for a in info.parsed_addresses(IPVersion.V4Only) if self.allowed(a)]
        if not addresses or info.port is None:
            self.ignored.add(instance)
            return
        props = info.properties or {}
        name = (props.get(b"name") or b"").decode(errors="replace")
        placed = self.placement(name, addresses)
        if placed is None:
            self.ignored.add(instance)
            log.warning("mDNS: %s announced the trusted node name %r from %s, outside its "
                        "pinned address; ignored", instance, name, ", ".join(addresses))
            return
        address, token, tls = placed
        spec = spec_from_properties(props, address, info.port, token, tls=tls)
        if spec is None:
            return
        existing = self.router.nodes.get(spec.name)
        if existing is not None and existing.source != "mdns":
            return  # a configured node of the same name wins
        if existing is not None and existing.spec.url != spec.url:
            self.ignored.add(instance)  # never move a known node: it must leave or expire first
            log.warning("mDNS: node %s announced from %s while known at %s; ignored",
                        spec.name, spec.url, existing.spec.url)
            return
        self.found[instance] = spec.name
        self.router.add(spec, source="mdns", replace=True)


def _network(value: str, where: str) -> Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}", fix="use CIDRs such as 10.0.0.0/24") from exc
