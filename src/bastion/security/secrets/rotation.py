"""Secret rotation: zero-downtime by default, emergency when a value leaked.

**Zero-downtime** (``rotate``): the new value is written as a new version (OpenBao/Vault KV v2
version; for sops, the current value moves to a sidecar ``*.previous`` sops file first).
Readers resolve references at every injection, so the next tool call gets the new value;
calls already running keep the old one, which stays readable (``get_version``) for a grace
period, after which :meth:`Rotator.sweep` destroys it (KV v2 ``destroy``, or re-encrypting
the sidecar without it). Pending retirements live in ``HOME/secrets/rotation.json``.

**Emergency** (``emergency=True``): the old versions are destroyed at once, the old values
are refused from then on (a backend still returning one is an error), tool calls running
with the reference are stopped (their sandboxes are killed), and a ``critical`` audit record
is written. The old values remain known to the redactor, so they are masked if they appear.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import SecretError
from bastion.security.audit import AuditLog
from bastion.security.secrets.base import SecretBackend, VersionedBackend
from bastion.security.secrets.resolver import SecretResolver

__all__ = ["Retirement", "RotationResult", "Rotator"]


@dataclass(slots=True)
class Retirement:
    """An old version waiting for the end of its grace period."""

    backend: str
    path: str
    version: str
    due: float


@dataclass(slots=True)
class RotationResult:
    """What one rotation did (never the values)."""

    ref: str
    old_version: str | None
    new_version: str
    emergency: bool
    keys: list[str]
    destroyed: list[str] = field(default_factory=list)
    retire_at: float | None = None
    stopped_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return asdict(self)


class Rotator:
    """Rotates secrets in versioned backends and retires old versions after a grace period."""

    def __init__(self, backends: Mapping[str, SecretBackend], state_path: Path, *,
                 audit: AuditLog | None = None, resolver: SecretResolver | None = None) -> None:
        self.backends = dict(backends)
        self.state_path = Path(state_path)
        self.audit = audit
        self.resolver = resolver

    def _backend(self, name: str) -> VersionedBackend:
        b = self.backends.get(name)
        if b is None:
            raise SecretError(f"unknown secret backend {name!r}",
                              fix="configure it under secrets: in bastion.yaml")
        if not isinstance(b, VersionedBackend):
            raise SecretError(f"the {name} backend cannot rotate (it keeps no versions)",
                              fix="rotate env secrets where they are set; use vault or sops")
        return b

    @contextlib.contextmanager
    def _state(self) -> Iterator[list[Retirement]]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_path.with_name(self.state_path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            items = ([Retirement(**r) for r in json.loads(self.state_path.read_text())]
                     if self.state_path.exists() else [])
            yield items
            tmp = self.state_path.with_name(self.state_path.name + ".tmp")
            tmp.write_text(json.dumps([asdict(r) for r in items], indent=1))
            tmp.replace(self.state_path)

    def rotate(self, backend: str, path: str, data: Mapping[str, str] | None = None, *,
               key: str = "value", value: str | None = None, grace_s: float = 3600.0,
               emergency: bool = False, actor: str = "cli") -> RotationResult:
        """Write a new version of ``backend/path`` and retire (or destroy) the old one.

        Without ``data`` only ``key`` changes: to ``value``, or to a fresh random value
        (32 bytes, URL-safe base64); the other keys of the secret are carried over.
        """
        b = self._backend(backend)
        try:
            old = b.get(path)
        except SecretError:
            old = {}
        fresh = value if value is not None else secrets.token_urlsafe(32)
        new = dict(data) if data is not None else {**old, key: fresh}
        old_version, new_version = b.put_version(path, new)
        result = RotationResult(f"secret://{backend}/{path}", old_version, new_version,
                                emergency, sorted(new))
        changed = [v for k, v in old.items() if new.get(k) != v]
        with self._state() as pending:
            if emergency:
                doomed = [r.version for r in pending if (r.backend, r.path) == (backend, path)]
                if old_version is not None:
                    doomed.append(old_version)
                for version in doomed:
                    b.destroy_version(path, version)
                pending[:] = [r for r in pending if (r.backend, r.path) != (backend, path)]
                result.destroyed = doomed
                if self.resolver is not None:
                    result.stopped_calls = self.resolver.revoke(changed, [f"{backend}/{path}"])
            elif old_version is not None:
                result.retire_at = time.time() + grace_s
                pending.append(Retirement(backend, path, old_version, result.retire_at))
        if self.audit is not None:
            self.audit.record(
                "secret.rotation.emergency" if emergency else "secret.rotation",
                actor=actor, decision="revoked" if emergency else "rotated",
                risk="critical" if emergency else "medium",
                detail={k: v for k, v in result.to_dict().items() if k != "keys"}
                | {"keys": result.keys})
        self.sweep()
        return result

    def sweep(self, now: float | None = None) -> list[Retirement]:
        """Destroy every old version whose grace period is over; return them."""
        now = time.time() if now is None else now
        with self._state() as pending:
            due = [r for r in pending if r.due <= now]
            for r in due:
                try:
                    self._backend(r.backend).destroy_version(r.path, r.version)
                except SecretError:
                    continue  # try again at the next sweep
                pending.remove(r)
                if self.audit is not None:
                    self.audit.record("secret.version_destroyed", actor="system",
                                      decision="destroyed", detail=asdict(r))
        return due

    def pending(self) -> list[Retirement]:
        """Return the old versions still in their grace period."""
        with self._state() as pending:
            return list(pending)
