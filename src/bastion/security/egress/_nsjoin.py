"""Create sockets in another network namespace (``setns(2)`` on a short-lived thread).

A socket belongs to the namespace of the thread that created it, for its whole life, so the
credential proxy can listen inside a sandbox's namespace (on its loopback, which the sandbox's
nftables accept) while it connects onward from bastion's own namespace. Python 3.11 has no
``os.setns``; this calls libc's through ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from bastion.errors import SandboxError

CLONE_NEWNET = 0x40000000
T = TypeVar("T")
_libc: ctypes.CDLL | None = None


def _setns(path: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise SandboxError(f"cannot join network namespace {path}: {os.strerror(err)}",
                               fix="egress control needs root (CAP_SYS_ADMIN)")
    finally:
        os.close(fd)


def enter(path: str) -> None:
    """Move the *calling thread* into the network namespace at ``path`` (for good)."""
    _setns(path)


def inside(path: str, make: Callable[[], T]) -> T:
    """Return ``make()`` run on a fresh thread that joined the namespace at ``path``."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            _setns(path)
            out.append(make())
        except BaseException as exc:  # handed back to the caller's thread
            err.append(exc)

    t = threading.Thread(target=run, name="netns-join", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
