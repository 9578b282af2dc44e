"""External anchors for the audit log's signed head: copies kept where the log's writer cannot
take them back, so a rollback to an old (genuinely signed) state of the log is detectable.

An anchor receives every head the writer signs, as one JSON object per line:
``{"seq": N, "hash": "...", "ts": T, "signature": "...", "public_key": "..."}``.

- :class:`FileAnchor` appends to a file (``O_APPEND``): put it on a remote append-only mount,
  a WORM volume or a file made ``chattr +a``.
- :class:`SyslogAnchor` sends each head as an RFC 5424 message (UDP) to a syslog server or a
  SIEM collector; export what it stored to a file to check it with ``audit verify --anchor``.

:func:`read_anchor` reads the heads back from either: any line holding such a JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["FileAnchor", "HeadAnchor", "SyslogAnchor", "read_anchor"]

_log = logging.getLogger(__name__)
_FIELDS = ("seq", "hash", "ts", "signature", "public_key")


class HeadAnchor(Protocol):
    """Somewhere signed heads are copied to, out of the log writer's reach."""

    def publish(self, head: dict[str, Any]) -> None:
        """Send one signed head (never raises: an anchor outage must not stop the gateway)."""
        ...

    def close(self) -> None:
        """Release the file or socket."""
        ...


def _line(head: dict[str, Any]) -> str:
    return json.dumps({k: head[k] for k in _FIELDS}, separators=(",", ":"))


class FileAnchor:
    """Appends each head as a JSON line to ``path`` (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._warned = False

    def publish(self, head: dict[str, Any]) -> None:
        """Append one head (one ``write`` of one line, so concurrent writers do not interleave)."""
        data = (_line(head) + "\n").encode()
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                os.write(self._fd, data)
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    _log.warning("audit anchor %s not written: %s", self.path, exc)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class SyslogAnchor:
    """Sends each head to a syslog server over UDP as an RFC 5424 message (facility local0)."""

    def __init__(self, host: str, port: int = 514) -> None:
        self.address = (host, port)
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                   socket.SOCK_DGRAM)
        self._host = socket.gethostname()[:255] or "-"
        self._warned = False

    def publish(self, head: dict[str, Any]) -> None:
        """Send one head (a lost datagram only widens the window a rollback goes unnoticed)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        msg = f"<134>1 {stamp} {self._host} bastion {os.getpid()} audit-head - {_line(head)}"
        try:
            self._sock.sendto(msg.encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                _log.warning("audit anchor syslog %s:%s not reached: %s", *self.address, exc)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def read_anchor(path: Path) -> list[dict[str, Any]]:
    """Return the heads found in an anchor file or a syslog/SIEM export (one per line)."""
    heads: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            start = line.find('{"seq"')
            if start < 0:
                continue
            try:
                obj = json.loads(line[start:].strip())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict) and all(k in obj for k in _FIELDS):
                heads.append(obj)
    return heads
