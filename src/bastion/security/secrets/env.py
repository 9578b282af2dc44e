"""Secrets from environment variables (``BASTION_SECRET_<PATH>``), read-only."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping

from bastion.errors import SecretError


def _var(prefix: str, path: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9]", "_", path).upper()


class EnvBackend:
    """``secret://env/db_password`` reads ``$BASTION_SECRET_DB_PASSWORD`` (key ``value``)."""

    name = "env"

    def __init__(self, prefix: str = "BASTION_SECRET_",
                 environ: MutableMapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = environ if environ is not None else os.environ

    def get(self, path: str) -> dict[str, str]:
        """Return ``{"value": $PREFIX<PATH>}``."""
        var = _var(self.prefix, path)
        if var not in self.environ:
            raise SecretError(f"environment secret {path!r} is not set", fix=f"export {var}=...")
        return {"value": self.environ[var]}

    def put(self, path: str, data: Mapping[str, str]) -> None:
        """Environment secrets are set outside bastion."""
        raise SecretError("the env backend is read-only",
                          fix=f"export {_var(self.prefix, path)}=... before starting bastion")

    def delete(self, path: str) -> None:
        """Environment secrets are removed outside bastion."""
        raise SecretError("the env backend is read-only", fix=f"unset {_var(self.prefix, path)}")

    def list(self, prefix: str = "") -> list[str]:
        """Return the paths (lower-case) of every ``BASTION_SECRET_*`` variable."""
        out = [k[len(self.prefix):].lower() for k in self.environ if k.startswith(self.prefix)]
        return sorted(p for p in out if p.startswith(prefix.lower()))

    def close(self) -> None:
        """Nothing to release (no connection or background work)."""
