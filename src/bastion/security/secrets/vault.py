"""OpenBao / HashiCorp Vault KV v2 through ``hvac``: token or AppRole auth, lease renewal."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from bastion._extras import require
from bastion.errors import SecretError


class VaultBackend:
    """Secrets in a KV v2 mount of OpenBao or Vault.

    Auth is a token, or AppRole (``role_id`` + ``secret_id``) which logs in and re-logs in
    when the token can no longer be renewed. :meth:`start_renewal` keeps the token alive in
    a background thread, renewing at two thirds of its TTL.
    """

    name = "vault"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        mount: str = "secret",
        namespace: str | None = None,
        verify: bool | str = True,
        timeout_s: float = 10.0,
        name: str = "vault",
    ) -> None:
        hvac = require("hvac", extra="secrets", feature="the Vault/OpenBao secret backend")
        self.name = name
        self.url = url
        self.mount = mount
        self._role = (role_id, secret_id) if role_id and secret_id else None
        if not token and not self._role:
            raise SecretError("the vault backend needs a token or an AppRole role_id + secret_id",
                              fix="set secrets.vault.token or secrets.vault.role_id/secret_id")
        self._client = hvac.Client(url=url, token=token, namespace=namespace, verify=verify,
                                   timeout=timeout_s)
        self._exc = require("hvac.exceptions", extra="secrets", feature="vault")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.token_ttl: int | None = None
        self.renewals = 0
        if self._role:
            self.login()

    # ---- auth --------------------------------------------------------------------------------
    def login(self) -> None:
        """Log in with AppRole and keep the new token."""
        if not self._role:
            return
        try:
            resp = self._client.auth.approle.login(role_id=self._role[0], secret_id=self._role[1])
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, "AppRole login") from None
        auth = resp["auth"]
        self._client.token = auth["client_token"]
        self.token_ttl = int(auth.get("lease_duration") or 0)

    def renew(self) -> int:
        """Renew the token now; re-login with AppRole if renewal fails. Return the new TTL."""
        with self._lock:
            try:
                resp = self._client.auth.token.renew_self()
                ttl = int(resp["auth"].get("lease_duration") or 0)
            except Exception as exc:
                if not self._role:
                    # from None: hvac's error holds the token and the data
                    raise self._map(exc, "token renewal") from None
                self.login()
                ttl = self.token_ttl or 0
            self.token_ttl = ttl
            self.renewals += 1
            return ttl

    def token_info(self) -> dict[str, Any]:
        """Return the token's lookup data (ttl, renewable, policies)."""
        try:
            return dict(self._client.auth.token.lookup_self()["data"])
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, "token lookup") from None

    def start_renewal(self, min_interval_s: float = 1.0) -> None:
        """Renew the token in a background thread at two thirds of its TTL."""
        if self._thread is not None:
            return
        info = self.token_info()
        if not info.get("renewable") and not self._role:
            return  # e.g. a root token: nothing to renew

        def loop() -> None:
            ttl = int(info.get("ttl") or 0)
            while not self._stop.is_set():
                wait = max(ttl * 2 / 3, min_interval_s) if ttl else 60.0
                if self._stop.wait(wait):
                    return
                try:
                    ttl = self.renew()
                except SecretError:
                    ttl = 0  # try again shortly

        self._thread = threading.Thread(target=loop, name="bastion-vault-renew", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop renewing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---- KV v2 -------------------------------------------------------------------------------
    def get(self, path: str) -> dict[str, str]:
        """Return the latest version of the secret at ``path``."""
        try:
            resp = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount, raise_on_deleted_version=True)
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, f"read {path}") from None
        return {str(k): str(v) for k, v in resp["data"]["data"].items()}

    def put(self, path: str, data: Mapping[str, str]) -> None:
        """Write a new version of the secret at ``path``."""
        try:
            self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(data), mount_point=self.mount)
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, f"write {path}") from None

    def delete(self, path: str) -> None:
        """Delete every version and the metadata of ``path``."""
        try:
            self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=path, mount_point=self.mount)
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, f"delete {path}") from None

    # ---- versions (rotation) ------------------------------------------------------------------
    def put_version(self, path: str, data: Mapping[str, str]) -> tuple[str | None, str]:
        """Write a new KV v2 version; return (previous version, new version)."""
        try:
            meta = self._client.secrets.kv.v2.read_secret_metadata(path=path,
                                                                   mount_point=self.mount)
            old: str | None = str(meta["data"]["current_version"])
        except self._exc.InvalidPath:
            old = None
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, f"read metadata of {path}") from None
        try:
            resp = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(data), mount_point=self.mount)
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, f"write {path}") from None
        return old, str(resp["data"]["version"])

    def get_version(self, path: str, version: str) -> dict[str, str]:
        """Return version ``version`` of ``path`` (fails once it was destroyed)."""
        try:
            resp = self._client.secrets.kv.v2.read_secret_version(
                path=path, version=int(version), mount_point=self.mount,
                raise_on_deleted_version=True)
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, f"read {path} version {version}") from None
        data = resp["data"]["data"]
        if data is None:
            raise SecretError(f"vault: version {version} of {path} was destroyed")
        return {str(k): str(v) for k, v in data.items()}

    def destroy_version(self, path: str, version: str) -> None:
        """Destroy version ``version`` of ``path`` (its data is removed for good)."""
        try:
            self._client.secrets.kv.v2.destroy_secret_versions(
                path=path, versions=[int(version)], mount_point=self.mount)
        except Exception as exc:
            # from None: hvac's error holds the token and the data
            raise self._map(exc, f"destroy {path} version {version}") from None

    def list(self, prefix: str = "") -> list[str]:
        """Return every secret path under ``prefix`` (recursing into folders)."""
        out: list[str] = []
        todo = [prefix.strip("/")]
        while todo:
            folder = todo.pop()
            try:
                resp = self._client.secrets.kv.v2.list_secrets(path=folder, mount_point=self.mount)
            except self._exc.InvalidPath:
                continue
            except Exception as exc:
                # from None: hvac's error holds the token and the data
                raise self._map(exc, f"list {folder or '/'}") from None
            for key in resp["data"]["keys"]:
                full = f"{folder}/{key}".lstrip("/") if folder else key
                if key.endswith("/"):
                    todo.append(full.rstrip("/"))
                else:
                    out.append(full)
        return sorted(out)

    def _map(self, exc: Exception, what: str) -> SecretError:
        e = self._exc
        if isinstance(exc, e.InvalidPath):
            return SecretError(f"vault: no secret at {what.split(' ', 1)[-1]}",
                               fix="check the path (bastion secrets list --backend vault)")
        if isinstance(exc, (e.Forbidden, e.Unauthorized)):
            return SecretError(f"vault refused {what}: permission denied",
                               fix="check the token/AppRole policy")
        if isinstance(exc, e.VaultError):
            return SecretError(f"vault {what} failed: {exc}".splitlines()[0])
        return SecretError(f"vault at {self.url} is unreachable ({type(exc).__name__})",
                           fix="check secrets.vault.url and that the server is up")


def wait_ready(url: str, timeout_s: float = 10.0) -> None:
    """Block until a Vault/OpenBao server at ``url`` answers its health check."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/v1/sys/health", timeout=1.0).status_code in (200, 429, 473):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SecretError(f"vault at {url} did not become ready")
        time.sleep(0.05)
