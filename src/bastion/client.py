"""A typed client of a running ``bastion serve``: the one the CLI uses for every call to it.

Built on ``httpx`` from the server's own request models (``NodeIn``, ``DrainBody``,
``RotateBody``), so a body the client sends is one the server's schema accepts::

    from bastion.client import BastionClient

    with BastionClient.from_config() as api:  # api.host/api.port and api.token of the config
        print(api.cluster_status())

Failures are the project's one-line errors with a fix (:mod:`bastion.errors`):
:class:`ServerUnreachable` when nothing answers, :class:`ServerFailed` when the exchange
breaks, :class:`ServerRefused` for an error answer (the server's ``{"error": {"message",
"code", "fix"}}``, with its ``status`` and ``code``).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from bastion.errors import AuthError, BastionError, NotFoundError, PolicyDenied
from bastion.server.schemas import DrainBody, RotateBody

if TYPE_CHECKING:
    from bastion.cluster.admin import NodeIn
    from bastion.config.model import Config

__all__ = ["BastionClient", "ServerFailed", "ServerRefused", "ServerUnreachable"]

_ANY_ADDRESS = ("0.0.0.0", "::", "")


class ServerUnreachable(BastionError):
    """No bastion server answers at the configured address."""


class ServerFailed(BastionError):
    """The server was reached but the exchange broke (timeout, dropped connection)."""


class ServerRefused(BastionError):
    """The server answered with an error: its one line and fix, its status and code."""

    def __init__(self, message: str, *, fix: str | None, status: int,
                 code: str | None) -> None:
        super().__init__(message, fix=fix)
        self.status = status
        self.code = code


class AuthRefused(ServerRefused, AuthError):
    """401: no key, or a wrong one."""


class ScopeRefused(ServerRefused, PolicyDenied):
    """403: the key lacks the route's scope (or the policy refuses)."""


class NotFoundRefused(ServerRefused, NotFoundError):
    """404: no such resource."""


_BY_STATUS: dict[int, type[ServerRefused]] = {
    401: AuthRefused, 403: ScopeRefused, 404: NotFoundRefused}


def refusal(resp: httpx.Response) -> ServerRefused:
    """Return the error a server's error answer (status >= 400) stands for."""
    message, fix, code = resp.text[:200] or f"HTTP {resp.status_code}", None, None
    try:
        err = resp.json()["error"]
        message, fix, code = str(err.get("message", message)), err.get("fix"), err.get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    if fix and message.endswith(f" (fix: {fix})"):  # the server's line carries its fix too
        message = message[: -len(f" (fix: {fix})")]
    cls = _BY_STATUS.get(resp.status_code, ServerRefused)  # also AuthError, NotFoundError, ...
    return cls(message, fix=fix, status=resp.status_code,
               code=code if isinstance(code, str) else None)


class BastionClient:
    """Calls one bastion server's REST API with its bearer token.

    Args:
        base_url: the server root, e.g. ``http://127.0.0.1:8765``.
        token: the API token (``None``: send none).
        timeout: seconds per request.
        transport: an ``httpx`` transport (tests).

    """

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  transport=transport)

    @classmethod
    def from_config(cls, config: Config | None = None, *, timeout: float = 30.0
                    ) -> BastionClient:
        """Return a client of the server this config serves (loopback for a wildcard bind)."""
        if config is None:
            from bastion.config.loader import load

            config = load()
        host = "127.0.0.1" if config.api.host in _ANY_ADDRESS else config.api.host
        if ":" in host:
            host = f"[{host}]"
        token = config.api.token.get_secret_value() if config.api.token is not None else None
        return cls(f"http://{host}:{config.api.port}", token, timeout=timeout)

    def __enter__(self) -> BastionClient:
        """Return the client (closed on exit)."""
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the connection pool."""
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ---- the one request path -------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request; return the 2xx response or raise a one-line error."""
        try:
            resp = self._http.request(method, path, json=json, params=params)
        except httpx.ConnectError:
            raise ServerUnreachable(f"no bastion server answers at {self.base_url}",
                                    fix="start it: bastion serve") from None
        except httpx.HTTPError as exc:
            raise ServerFailed(
                f"the bastion server at {self.base_url} failed: {type(exc).__name__}",
                fix="see the server log (bastion serve)") from None
        if resp.status_code >= 400:
            raise refusal(resp)
        return resp

    def _json(self, method: str, path: str, *, json: Any = None,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        data = self.request(method, path, json=json, params=params).json()
        if not isinstance(data, dict):
            raise ServerRefused(f"{method} {path} answered {type(data).__name__}, not an object",
                                fix="check that api.port is a bastion server", status=200,
                                code=None)
        return data

    # ---- health ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``GET /health``: ``{"status": "ok"|"starting", "version"}`` (no token needed)."""
        return self._json("GET", "/health")

    # ---- cluster --------------------------------------------------------------------------
    def cluster_status(self) -> dict[str, Any]:
        """``GET /v1/cluster``: nodes, health, breakers, load (409 ``no_cluster`` when off)."""
        return self._json("GET", "/v1/cluster")

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        return self.request("GET", "/metrics").text

    def add_node(self, node: NodeIn) -> dict[str, Any]:
        """``POST /v1/cluster/nodes``: add a node now (its token included)."""
        body = node.model_dump(mode="json")
        if node.token is not None:
            body["token"] = node.token.get_secret_value()
        return self._json("POST", "/v1/cluster/nodes", json=body)

    def remove_node(self, name: str) -> dict[str, Any]:
        """``DELETE /v1/cluster/nodes/{name}``."""
        return self._json("DELETE", f"/v1/cluster/nodes/{name}")

    def drain_node(self, name: str, drain: bool = True) -> dict[str, Any]:
        """``POST /v1/cluster/nodes/{name}/drain``: drain (or resume with ``drain=False``)."""
        return self._json("POST", f"/v1/cluster/nodes/{name}/drain",
                          json=DrainBody(drain=drain).model_dump())

    # ---- browser --------------------------------------------------------------------------
    def browser_sessions(self) -> dict[str, Any]:
        """``GET /v1/browser/sessions``: ``enabled``, ``sandboxed``, ``sessions``."""
        return self._json("GET", "/v1/browser/sessions")

    def close_browser_session(self, session_id: str) -> dict[str, Any]:
        """``DELETE /v1/browser/sessions/{id}`` (404 when none is open)."""
        return self._json("DELETE", f"/v1/browser/sessions/{session_id}")

    # ---- secrets --------------------------------------------------------------------------
    def rotate_secret(self, body: RotateBody) -> dict[str, Any]:
        """``POST /v1/secrets/rotate``: the rotation's result (never the values)."""
        return self._json("POST", "/v1/secrets/rotate", json=body.model_dump())
