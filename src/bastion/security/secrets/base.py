"""The ``SecretBackend`` seam and ``secret://`` references."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from bastion.errors import SecretError

SCHEME = "secret://"


@runtime_checkable
class SecretBackend(Protocol):
    """Where secrets live. A secret is a small mapping of keys to string values at a path."""

    name: str

    def get(self, path: str) -> dict[str, str]:
        """Return the secret at ``path`` (raises :class:`SecretError` if missing)."""
        ...

    def put(self, path: str, data: Mapping[str, str]) -> None:
        """Create or replace the secret at ``path``."""
        ...

    def delete(self, path: str) -> None:
        """Delete the secret at ``path``."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Return the paths of all secrets under ``prefix``."""
        ...

    def close(self) -> None:
        """Stop background work and release connections (most backends have none)."""
        ...


@runtime_checkable
class VersionedBackend(SecretBackend, Protocol):
    """A backend that keeps old versions, so a rotation can be zero-downtime.

    ``put_version`` writes a new current version and returns (old version id or None, new
    version id); readers get the new one at once. ``get_version`` reads an old version still
    in its grace period; ``destroy_version`` removes one for good.
    """

    def put_version(self, path: str, data: Mapping[str, str]) -> tuple[str | None, str]:
        """Write a new current version of ``path``."""
        ...

    def get_version(self, path: str, version: str) -> dict[str, str]:
        """Return an older version of ``path`` (while it is kept)."""
        ...

    def destroy_version(self, path: str, version: str) -> None:
        """Destroy one version of ``path`` permanently."""
        ...


@dataclass(slots=True, frozen=True)
class SecretRef:
    """A parsed ``secret://backend/path#key`` reference (``key`` defaults to ``value``)."""

    backend: str
    path: str
    key: str = "value"

    def __str__(self) -> str:
        return f"{SCHEME}{self.backend}/{self.path}#{self.key}"


def is_ref(text: str) -> bool:
    """Return whether ``text`` is a ``secret://`` reference."""
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_ref(text: str) -> SecretRef:
    """Parse ``secret://backend/path#key``."""
    if not is_ref(text):
        raise SecretError(f"not a secret reference: {text!r}",
                          fix="write it as secret://BACKEND/PATH#KEY, e.g. secret://vault/app#token")
    parts = urlsplit(text)
    backend = parts.netloc
    path = parts.path.lstrip("/")
    if not backend or not path:
        raise SecretError(f"incomplete secret reference: {text!r}",
                          fix="write it as secret://BACKEND/PATH#KEY")
    return SecretRef(backend, path, parts.fragment or "value")


def pick(data: Mapping[str, str], ref: SecretRef) -> str:
    """Return ``data[ref.key]`` or a clear error."""
    if ref.key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise SecretError(f"secret {ref.backend}/{ref.path} has no key {ref.key!r} (keys: {keys})",
                          fix=f"use one of its keys after '#', e.g. #{next(iter(data), 'value')}")
    return str(data[ref.key])
