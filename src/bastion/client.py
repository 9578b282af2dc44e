"""A typed client of a running ``bastion serve``: the one the CLI uses for every call to it.

Built on ``httpx`` from the server's own models: requests from the route's request models
(``NodeIn``, ``DrainBody``, ``RotateBody``), so a body the client sends is one the server's
schema accepts; answers parsed into the response models of the OpenAPI document
(:mod:`bastion.server.responses`), so a caller gets typed fields, not dicts::

    from bastion.client import BastionClient

    with BastionClient.from_config() as api:  # api.host/api.port and api.token of the config
        sid = api.create_session().id
        print(api.send(sid, "hello").answer)

Failures are the project's one-line errors with a fix (:mod:`bastion.errors`):
:class:`ServerUnreachable` when nothing answers, :class:`ServerFailed` when the exchange
breaks, :class:`ServerRefused` for an error answer (the server's ``{"error": {"message",
"code", "fix"}}``, with its ``status`` and ``code``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from bastion.errors import AuthError, BastionError, NotFoundError, PolicyDenied
from bastion.server import responses as r
from bastion.server.schemas import DrainBody, RotateBody
from bastion.server.stream_events import TurnEvent, parse_turn_event

if TYPE_CHECKING:
    from bastion.cluster.admin import NodeIn
    from bastion.config.model import Config

__all__ = ["BastionClient", "ServerFailed", "ServerRefused", "ServerUnreachable"]

_ANY_ADDRESS = ("0.0.0.0", "::", "")
M = TypeVar("M", bound=BaseModel)


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
    @contextlib.contextmanager
    def _exchange(self) -> Iterator[None]:
        """Turn httpx's transport failures inside the block into one-line errors."""
        try:
            yield
        except httpx.ConnectError:
            # from None: httpx's error holds the request and its API key
            raise ServerUnreachable(f"no bastion server answers at {self.base_url}",
                                    fix="start it: bastion serve") from None
        except httpx.HTTPError as exc:
            # from None: httpx's error holds the request and its API key
            raise ServerFailed(
                f"the bastion server at {self.base_url} failed: {type(exc).__name__}",
                fix="see the server log (bastion serve)") from None

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request; return the 2xx response or raise a one-line error."""
        with self._exchange():
            resp = self._http.request(method, path, json=json, params=params)
        if resp.status_code >= 400:
            raise refusal(resp)
        return resp

    def _get(self, model: type[M], method: str, path: str, *, json: Any = None,
             params: dict[str, Any] | None = None) -> M:
        """Send one request; return its answer parsed into ``model``."""
        resp = self.request(method, path, json=json, params=params)
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            # from None: it quotes the response body (a new API key, a secret's value)
            raise ServerRefused(
                f"{method} {path} answered a body that is not a {model.__name__} ({where}: "
                f"{exc.errors()[0]['msg']})",
                fix="check that api.port is a bastion server of this version", status=200,
                code=None) from None

    # ---- health and models ----------------------------------------------------------------
    def health(self) -> r.Health:
        """``GET /health``: ``status`` ``ok`` or ``starting``, and the ``version`` (no token)."""
        return self._get(r.Health, "GET", "/health")

    def models(self) -> r.ModelList:
        """``GET /v1/models``: ``bastion-agent`` and the backend model."""
        return self._get(r.ModelList, "GET", "/v1/models")

    # ---- sessions -------------------------------------------------------------------------
    def create_session(self, session_id: str | None = None) -> r.SessionCreated:
        """``POST /v1/sessions``: a new session (this id, else a fresh one; 409 if taken)."""
        body = {"id": session_id} if session_id is not None else {}
        return self._get(r.SessionCreated, "POST", "/v1/sessions", json=body)

    def session(self, session_id: str, *, offset: int = 0, limit: int = 200) -> r.SessionPage:
        """``GET /v1/sessions/{id}``: one page of its stored messages (secrets redacted)."""
        return self._get(r.SessionPage, "GET", f"/v1/sessions/{session_id}",
                         params={"offset": offset, "limit": limit})

    def send(self, session_id: str, content: str) -> r.TurnAnswer:
        """``POST /v1/sessions/{id}/messages`` with ``stream: false``: one agent turn."""
        return self._get(r.TurnAnswer, "POST", f"/v1/sessions/{session_id}/messages",
                         json={"content": content, "stream": False})

    def stream(self, session_id: str, content: str) -> Iterator[TurnEvent]:
        """``POST /v1/sessions/{id}/messages`` streamed: the turn's events as they come.

        Each is the model its ``type`` names (:mod:`bastion.server.stream_events`):
        ``TextEvent`` pieces, ``ToolStartedEvent``/``ToolFinishedEvent``, ``ApprovalPendingEvent``
        while a call waits for a decision, then ``DoneEvent`` or ``ErrorEvent``.
        """
        path = f"/v1/sessions/{session_id}/messages"
        with self._exchange(), self._http.stream(
                "POST", path, json={"content": content, "stream": True}, timeout=None) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise refusal(resp)
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    yield self._event(path, line[5:])

    @staticmethod
    def _event(path: str, data: str) -> TurnEvent:
        try:
            return parse_turn_event(data)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "data"
            # from None: it quotes the event (a piece of the answer)
            raise ServerRefused(
                f"POST {path} streamed an event that is not a turn event ({where}: "
                f"{exc.errors()[0]['msg']})",
                fix="check that api.port is a bastion server of this version", status=200,
                code=None) from None

    def sessions(self) -> r.SessionList:
        """``GET /v1/sessions``: most recently used first."""
        return self._get(r.SessionList, "GET", "/v1/sessions")

    def delete_session(self, session_id: str) -> r.SessionDeleted:
        """``DELETE /v1/sessions/{id}`` (its name or id)."""
        return self._get(r.SessionDeleted, "DELETE", f"/v1/sessions/{session_id}")

    # ---- approvals ------------------------------------------------------------------------
    def approvals(self) -> r.PendingList:
        """``GET /v1/approvals``: the tool calls waiting for a decision, oldest first."""
        return self._get(r.PendingList, "GET", "/v1/approvals")

    def decide(self, approval_id: str, approve: bool, *, reason: str | None = None,
               scope: Literal["once", "session"] = "once") -> r.ApprovalDecided:
        """``POST /v1/approvals/{id}``: approve or deny one pending call."""
        return self._get(r.ApprovalDecided, "POST", f"/v1/approvals/{approval_id}",
                         json={"approve": approve, "reason": reason, "scope": scope})

    # ---- audit ----------------------------------------------------------------------------
    def audit_events(self, **filters: str | int) -> r.AuditEvents:
        """``GET /v1/audit/events`` with its filters (``kind``, ``tool``, ``limit``, ...)."""
        return self._get(r.AuditEvents, "GET", "/v1/audit/events", params=dict(filters))

    def audit_verify(self) -> r.AuditVerify:
        """``GET /v1/audit/verify``: the hash chain and signatures checked."""
        return self._get(r.AuditVerify, "GET", "/v1/audit/verify")

    # ---- cluster --------------------------------------------------------------------------
    def cluster_status(self) -> r.ClusterStatus:
        """``GET /v1/cluster``: nodes, health, breakers, load (409 ``no_cluster`` when off)."""
        return self._get(r.ClusterStatus, "GET", "/v1/cluster")

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        return self.request("GET", "/metrics").text

    def add_node(self, node: NodeIn) -> r.NodeStatus:
        """``POST /v1/cluster/nodes``: add a node now (its token included)."""
        body = node.model_dump(mode="json")
        if node.token is not None:
            body["token"] = node.token.get_secret_value()
        return self._get(r.NodeStatus, "POST", "/v1/cluster/nodes", json=body)

    def remove_node(self, name: str) -> r.NodeStatus:
        """``DELETE /v1/cluster/nodes/{name}``."""
        return self._get(r.NodeStatus, "DELETE", f"/v1/cluster/nodes/{name}")

    def drain_node(self, name: str, drain: bool = True) -> r.NodeStatus:
        """``POST /v1/cluster/nodes/{name}/drain``: drain (or resume with ``drain=False``)."""
        return self._get(r.NodeStatus, "POST", f"/v1/cluster/nodes/{name}/drain",
                         json=DrainBody(drain=drain).model_dump())

    # ---- browser --------------------------------------------------------------------------
    def browser_sessions(self) -> r.BrowserSessions:
        """``GET /v1/browser/sessions``: ``enabled``, ``sandboxed``, ``sessions``."""
        return self._get(r.BrowserSessions, "GET", "/v1/browser/sessions")

    def close_browser_session(self, session_id: str) -> r.BrowserClosed:
        """``DELETE /v1/browser/sessions/{id}`` (404 when none is open)."""
        return self._get(r.BrowserClosed, "DELETE", f"/v1/browser/sessions/{session_id}")

    # ---- secrets --------------------------------------------------------------------------
    def rotate_secret(self, body: RotateBody) -> r.Rotation:
        """``POST /v1/secrets/rotate``: the rotation's result (never the values)."""
        return self._get(r.Rotation, "POST", "/v1/secrets/rotate", json=body.model_dump())
