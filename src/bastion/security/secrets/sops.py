"""Secrets in a sops-format file (YAML or JSON) encrypted to age recipients.

The file is interoperable with ``sops``: bastion reads files ``sops`` wrote (and checks their
MAC) and ``sops`` (or any sops decoder) reads bastion's. Plaintext exists only in memory:
writes encrypt first and replace the file atomically (mode 0600).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.errors import SecretError
from bastion.security.secrets._sops_format import decrypt_tree, encrypt_tree


def load_identities(path: Path, *, create: bool = False) -> list[Any]:
    """Read age identities (``AGE-SECRET-KEY-1...`` lines) from ``path``; create one if asked."""
    pyrage = require("pyrage", extra="secrets", feature="sops files with age recipients")
    from bastion.crypto.sealed import is_sealed, read_unsealed

    sealed = is_sealed(path)  # sealed mode: readable only once `bastion crypto unseal` ran
    if not sealed and not path.exists():
        if not create:
            raise SecretError(f"no age key at {path}", fix="run `bastion secrets set` once to "
                              "create one, or set secrets.sops.identity_file")
        ident = pyrage.x25519.Identity.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"# public key: {ident.to_public()}\n{ident}\n")
    out = []
    text = read_unsealed(path).decode() if sealed else path.read_text()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            out.append(pyrage.x25519.Identity.from_str(line))
    if not out:
        raise SecretError(f"{path} holds no age identity",
                          fix="it needs an AGE-SECRET-KEY-1... line")
    return out


class SopsBackend:
    """``secret://sops/db#password`` reads key ``password`` of mapping ``db`` in the file.

    A path names a mapping (its scalar leaves are the keys) or a scalar (key ``value``);
    ``a/b`` descends into nested mappings.
    """

    name = "sops"

    def __init__(self, path: Path, identity_file: Path, recipients: list[str] | None = None,
                 *, name: str = "sops") -> None:
        self.name = name
        self.path = Path(path)
        self.identity_file = Path(identity_file)
        self.extra_recipients = list(recipients or [])
        self._lock = threading.Lock()

    # ---- file ------------------------------------------------------------------------------
    def _identities(self, create: bool = False) -> list[Any]:
        return load_identities(self.identity_file, create=create)

    def recipients(self) -> list[str]:
        """Return the age recipients new writes encrypt to (bastion's own first)."""
        own = [str(i.to_public()) for i in self._identities(create=True)]
        return list(dict.fromkeys(own + self.extra_recipients))

    def _is_json(self) -> bool:
        return self.path.suffix.lower() == ".json"

    def read_all(self) -> dict[str, Any]:
        """Decrypt and return the whole file (empty if it does not exist yet)."""
        if not self.path.exists():
            return {}
        text = self.path.read_text()
        if self._is_json():
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text) or {}
        if not isinstance(doc, dict):
            raise SecretError(f"{self.path} is not a sops mapping")
        tree, _ = decrypt_tree(doc, self._identities())
        return tree

    def write_all(self, tree: Mapping[str, Any]) -> None:
        """Encrypt ``tree`` to the recipients and replace the file atomically."""
        doc = encrypt_tree(dict(tree), self.recipients())
        if self._is_json():
            text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        else:
            import yaml

            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True,
                                  default_flow_style=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    # ---- SecretBackend ---------------------------------------------------------------------
    def get(self, path: str) -> dict[str, str]:
        """Return the secret at ``path``."""
        node: Any = self.read_all()
        for part in _parts(path):
            if not isinstance(node, dict) or part not in node:
                raise SecretError(f"sops file {self.path.name} has no secret {path!r}",
                                  fix="bastion secrets list --backend sops")
            node = node[part]
        if isinstance(node, dict):
            return {str(k): _scalar(v) for k, v in node.items() if not isinstance(v, (dict, list))}
        return {"value": _scalar(node)}

    def put(self, path: str, data: Mapping[str, str]) -> None:
        """Set the secret at ``path`` (a single ``value`` key is stored as a scalar)."""
        with self._lock:
            tree = self.read_all()
            parts = _parts(path)
            node = tree
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = node[part] = {}
                node = nxt
            node[parts[-1]] = data["value"] if set(data) == {"value"} else dict(data)
            self.write_all(tree)

    def delete(self, path: str) -> None:
        """Remove the secret at ``path``."""
        with self._lock:
            tree = self.read_all()
            parts = _parts(path)
            node: Any = tree
            for part in parts[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if not isinstance(node, dict) or parts[-1] not in node:
                raise SecretError(f"sops file has no secret {path!r}")
            del node[parts[-1]]
            self.write_all(tree)

    # ---- versions (rotation) ------------------------------------------------------------------
    def _previous(self) -> SopsBackend:
        """Return the sidecar sops file of versions in their grace period (same recipients)."""
        side = SopsBackend(self.path.with_name(self.path.name + ".previous"), self.identity_file,
                           self.extra_recipients, name=self.name)
        side._lock = self._lock
        return side

    def put_version(self, path: str, data: Mapping[str, str]) -> tuple[str | None, str]:
        """Keep the current value in the sidecar file, then write ``data`` as current."""
        import time

        try:
            old = self.get(path)
        except SecretError:
            old = None
        version = f"{time.time_ns()}"
        old_id = None
        if old is not None:
            old_id = f"{version}-previous"
            side = self._previous()
            tree = side.read_all()
            tree.setdefault(_key(path), {})[old_id] = dict(old)
            side.write_all(tree)
        self.put(path, data)
        return old_id, version

    def get_version(self, path: str, version: str) -> dict[str, str]:
        """Return a previous value still in its grace period."""
        kept = self._previous().read_all().get(_key(path), {})
        if version not in kept:
            raise SecretError(f"sops: version {version} of {path} is gone")
        return {str(k): _scalar(v) for k, v in kept[version].items()}

    def destroy_version(self, path: str, version: str) -> None:
        """Remove a previous value from the sidecar file (re-encrypted without it)."""
        side = self._previous()
        with self._lock:
            tree = side.read_all() if side.path.exists() else {}
            kept = tree.get(_key(path), {})
            kept.pop(version, None)
            if not kept:
                tree.pop(_key(path), None)
            side.write_all(tree)

    def list(self, prefix: str = "") -> list[str]:
        """Return the path of every value (``db/password``); each is readable with ``get``."""
        out: list[str] = []

        def walk(node: dict[str, Any], base: str) -> None:
            for k, v in node.items():
                p = f"{base}/{k}" if base else str(k)
                if isinstance(v, dict):
                    walk(v, p)
                else:
                    out.append(p)

        walk(self.read_all(), "")
        return sorted(p for p in out if p.startswith(prefix))

    @staticmethod
    def reference(listed: str) -> str:
        """Return the reference form (``db#password``) of a path :meth:`list` returned."""
        path, _, key = listed.rpartition("/")
        return f"{path}#{key}" if path else listed

    def close(self) -> None:
        """Nothing to release (no connection or background work)."""

def _key(path: str) -> str:
    return "/".join(_parts(path)).replace("/", "__")


def _parts(path: str) -> list[str]:
    parts = [p for p in path.strip("/").split("/") if p]
    if not parts:
        raise SecretError("empty secret path", fix="name the secret, e.g. db/password")
    return parts


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
