"""TLS certificate pinning for bastion's outgoing HTTPS (SPKI SHA-256 pins, RFC 7469 form).

A pin is ``sha256/<base64 of SHA-256 over the certificate's SubjectPublicKeyInfo>``; pinning
the key rather than the certificate survives certificate renewal with the same key (list the
next key's pin too before rotating it). Pins are configured per host (all ports) or per
``host:port`` in ``crypto.tls_pins``.

The check runs inside the connection, right after the TLS handshake and *before* any request
byte is sent (an httpcore network-backend wrapper around ``start_tls``), so a server with the
wrong key never sees a header or an API key. The normal CA and hostname verification still
run first; the pin is an additional requirement. A mismatch raises
:class:`CertificatePinError` naming the host, the key it presented and the expected pins.

Used by the OpenAI-compatible model client (remote nodes) and by ``web_fetch``;
:func:`configure` installs the pins once per process (the composition root does it).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from bastion._extras import require
from bastion.errors import CryptoError

__all__ = ["CertificatePinError", "PinningBackend", "configure", "pin_for_der", "pins_for",
           "transport_for", "wrap_backend"]

_pins: dict[str, list[str]] = {}
_lock = threading.Lock()


class CertificatePinError(CryptoError):
    """A TLS server presented a key that is not pinned for its host."""


def pin_for_der(cert_der: bytes) -> str:
    """Return the ``sha256/...`` SPKI pin of a DER certificate."""
    x509 = require("cryptography.x509", extra="secrets", feature="certificate pinning")
    ser = require("cryptography.hazmat.primitives.serialization", extra="secrets",
                  feature="certificate pinning")
    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(ser.Encoding.DER,
                                          ser.PublicFormat.SubjectPublicKeyInfo)
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _normal(pin: str) -> str:
    pin = pin.strip()
    if not pin.startswith("sha256/"):
        raise CryptoError(f"unsupported pin {pin!r}", fix="pins look like sha256/<base64>")
    try:
        if len(base64.b64decode(pin[7:], validate=True)) != 32:
            raise ValueError
    except ValueError as exc:
        raise CryptoError(f"malformed pin {pin!r}",
                          fix="use bastion crypto pin HOST to print a server's pin") from exc
    return pin


def configure(pins: Mapping[str, Iterable[str]]) -> None:
    """Install the process's pins (``host`` or ``host:port`` -> pins); replaces earlier ones."""
    table = {k.strip().lower().rstrip("."): [_normal(p) for p in v] for k, v in pins.items()}
    with _lock:
        _pins.clear()
        _pins.update(table)


def pins_for(host: str, port: int) -> list[str] | None:
    """Return the pins that apply to ``host:port`` (None = not pinned)."""
    host = host.lower().rstrip(".").strip("[]")
    with _lock:
        found = _pins.get(f"{host}:{port}")
        return list(found) if found is not None else (
            list(_pins[host]) if host in _pins else None)


def check(host: str, port: int, cert_der: bytes | None,
          pins: list[str] | None = None) -> None:
    """Raise :class:`CertificatePinError` unless the certificate's key is pinned for host."""
    wanted = pins if pins is not None else pins_for(host, port)
    if wanted is None:
        return
    if not cert_der:
        raise CertificatePinError(f"{host}:{port} presented no certificate to check its pin")
    got = pin_for_der(cert_der)
    if got not in wanted:
        raise CertificatePinError(
            f"certificate pin mismatch for {host}:{port}: the server's key is {got}, "
            f"expected {' or '.join(wanted)}",
            fix="if the server's key changed on purpose, add its pin to crypto.tls_pins")


class _PinnedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, host: str, port: int) -> None:
        self._inner, self._host, self._port = inner, host, port

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        host = server_hostname or self._host
        obj = tls.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        try:
            check(host, self._port, der)
        except CertificatePinError:
            await tls.aclose()
            raise
        return tls

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class PinningBackend(httpcore.AsyncNetworkBackend):
    """Wraps a network backend so every TLS connection to a pinned host checks its pin."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        """Connect; the stream checks the pin when TLS starts on it."""
        stream = await self._inner.connect_tcp(host, port, timeout, local_address,
                                               socket_options)
        return _PinnedStream(stream, host, port)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        """Connect a unix socket (no TLS host to pin)."""
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        """Sleep with the inner backend."""
        await self._inner.sleep(seconds)


def wrap_backend(inner: httpcore.AsyncNetworkBackend) -> httpcore.AsyncNetworkBackend:
    """Return ``inner`` wrapped for pinning when any pins are configured."""
    with _lock:
        active = bool(_pins)
    return PinningBackend(inner) if active else inner


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(retries=0)
        ctx = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context()
        self._pool = httpcore.AsyncConnectionPool(  # httpx has no hook for the backend
            ssl_context=ctx, max_connections=100, max_keepalive_connections=20,
            network_backend=PinningBackend())


def transport_for(base_url: str, *, verify: ssl.SSLContext | bool = True
                  ) -> httpx.AsyncHTTPTransport | None:
    """Return a pin-checking transport for ``base_url``'s host, or None if it is not pinned."""
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    if pins_for(parts.hostname, parts.port or 443) is None:
        return None
    return _PinnedTransport(verify)


def fetch_pin(host: str, port: int = 443, *, cafile: str | None = None,
              timeout: float = 10.0) -> str:
    """Connect to ``host:port`` and return the pin of the key it presents (for setting up)."""
    import socket

    ctx = ssl.create_default_context(cafile=cafile)
    if cafile is None:  # printing a pin to review: accept what is shown, verify nothing
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise CryptoError(f"cannot read the certificate of {host}:{port}: {exc}",
                          fix="check the host name and port (HOST[:PORT]), or pin a PEM file "
                          "of its certificate") from exc
    if der is None:
        raise CryptoError(f"{host}:{port} presented no certificate")
    return pin_for_der(der)
