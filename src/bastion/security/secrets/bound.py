"""Secrets bound to destinations: the sandbox holds a placeholder, the wire gets the value.

A secret configured as ``{ref, hosts, header, format, query}`` under ``secrets.tools`` is never
put into the sandbox. The secrets stage issues a random placeholder per call
(``bst_ph_...``), puts *that* into the tool's environment and records here which value it
stands for and where that value may go. The credential proxy on the tool's egress path
(:mod:`bastion.security.egress.credproxy`) swaps the placeholder for the value only in a
request to a bound ``host:port`` (in the configured header or query parameter); anywhere
else the placeholder leaves unchanged, worthless, and the attempt is audited.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

PREFIX = "bst_ph_"


@dataclass(frozen=True, slots=True)
class Binding:
    """Where one tool's secret may be sent, and how it is written there."""

    tool: str
    env: str  # the variable the tool reads (its placeholder)
    ref: str  # secret://... (never the value)
    hosts: tuple[tuple[str, int], ...]  # (lower-case host, port)
    header: str | None = "Authorization"
    fmt: str | None = None  # the header's whole value, {} = the secret; None: replace in place
    query: str | None = None  # or a query parameter carrying it

    def binds(self, host: str, port: int) -> bool:
        """Return whether ``host:port`` is a destination this secret is bound to."""
        return (host.lower().rstrip("."), port) in self.hosts

    @property
    def destinations(self) -> list[str]:
        """The bound destinations as ``host:port`` strings (for audit records)."""
        return [f"{h}:{p}" for h, p in self.hosts]


def parse_host(entry: str, default_port: int = 443) -> tuple[str, int]:
    """Return ``(host, port)`` of ``api.example.com`` or ``api.example.com:8443``."""
    host, sep, port = entry.strip().lower().rstrip(".").rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host.strip("[]"), int(port)
    return entry.strip().lower().rstrip(".").strip("[]"), default_port


@dataclass(frozen=True, slots=True)
class Issued:
    """One placeholder handed to a sandbox, the binding it obeys and the value it stands for."""

    placeholder: str
    binding: Binding
    value: str


class PlaceholderBook:
    """The live placeholders of all calls (thread-safe: the proxy runs on its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued: dict[str, Issued] = {}

    def issue(self, binding: Binding, value: str) -> str:
        """Return a fresh placeholder that stands for ``value`` under ``binding``."""
        placeholder = PREFIX + secrets.token_hex(16)
        with self._lock:
            self._issued[placeholder] = Issued(placeholder, binding, value)
        return placeholder

    def release(self, placeholder: str) -> None:
        """Forget ``placeholder`` (the call ended): it no longer swaps to anything."""
        with self._lock:
            self._issued.pop(placeholder, None)

    def live(self) -> list[Issued]:
        """Return every live placeholder."""
        with self._lock:
            return list(self._issued.values())
