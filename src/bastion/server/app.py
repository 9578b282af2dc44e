"""The FastAPI application: ``create_app(app)`` includes every route module in ``ROUTE_MODULES``.

How to add routes (for every feature):

1. Write ``server/routes/<name>.py`` exposing ``router = APIRouter(...)``. Every route of it,
   HTTP and WebSocket alike, needs the bearer token: ``TokenGate`` checks it before a body
   is read, and ``require_token`` is added to the router (it also declares the scheme in the
   OpenAPI schema). Nothing is public by accident. A module may also expose
   ``public_router`` for the rare route that must answer without a token (``/health``, the
   static approvals page).
2. Add one line to ``ROUTE_MODULES`` below. Two modules defining the same method and path is
   an error at start-up, so clashes show up in your tests.
3. In a route, get the assembled :class:`bastion.app.App` with a parameter ``app:
   BastionApp`` (``bastion.server.deps``; ``get_app(conn)`` is the plain function), or
   ``request.app.state.bastion``.
4. Document what a route answers with ``bastion.server.contract`` (``errors(404, 409)``,
   ``sse(...)``, ``media(...)``; 401/503 and 422 are added for you); a switched-off feature
   raises ``feature_off(...)`` (409 with the setting). Fail by raising
   :class:`bastion.server.errors.ApiError` (status, one-line message, code, fix) or any
   :class:`bastion.errors.BastionError` (mapped: 400 user mistakes, 401 auth, 403 policy,
   404 ``NotFoundError``, 502 model, 503 unavailable component). Every error is a JSON body
   ``{"error": {"message", "type", "code", "param", "fix"}}``; never a traceback.
5. Stream with ``bastion.server.sse`` (``sse_event``/``sse_data``/``sse_response``), turn
   agent events into JSON with ``bastion.server.events.event_payload``, and pass any text
   you send through ``app.redactor`` (``StreamRedactor`` for deltas).

Approvals: the API has no human at a terminal, so the App keeps the non-interactive
``DenyApprover`` unless an API approver is installed with ``App.set_approver``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import compile_path

from bastion import __version__
from bastion.server._tasks import start_tasks, stop_tasks
from bastion.server._turns import BusySessions
from bastion.server.contract import AUTH_ERRORS, install_openapi
from bastion.server.deps import TokenGate, require_token
from bastion.server.errors import install_error_handlers
from bastion.server.headers import SecurityHeaders
from bastion.server.tracing import TraceContext

if TYPE_CHECKING:
    from bastion.app import App

ROUTE_MODULES = [
    "bastion.server.routes.cluster",  # GET /metrics, /v1/cluster (status, nodes add/remove/drain)
    "bastion.server.routes.models",  # GET /v1/models/pulled, POST /v1/models/pull (SSE)
    "bastion.server.routes.core",  # /health, /openapi.json, /v1/models, /v1/chat/completions
    "bastion.server.routes.sessions",  # /v1/sessions (create, read, messages with SSE)
    "bastion.server.routes.memory",  # /v1/sessions list/rename/delete/export, search, ingest
    "bastion.server.routes.voice",  # /v1/audio/transcriptions, /v1/audio/speech, WS /v1/voice/ws
    "bastion.server.routes.audit",  # /v1/audit events|stats|verify|export
    "bastion.server.routes.crypto",  # /v1/audit/proofs, count-proof; /v1/secrets/rotate; seal
    "bastion.server.routes.approvals",  # /v1/approvals (pending, decide, thresholds, SSE)
    "bastion.server.routes.privacy",  # POST /v1/privacy/scan (PII, routing decision)
    "bastion.server.routes.intel",  # /v1/intel summary|report, GET /intel dashboard page
    "bastion.server.routes.browser",  # /v1/browser/sessions (list, close)
    "bastion.server.routes.undo",  # GET|POST /v1/sessions/{id}/undo (workspace snapshots)
    "bastion.server.routes.auth",  # /v1/auth login|logout|me (browser cookie), OIDC sign-in
    "bastion.server.routes.web",  # GET / (the web UI) and /web/... (its static files)
    "bastion.server.routes.tasks",  # /v1/tasks (unattended tasks), signed trigger, run now
    "bastion.server.routes.runs",  # /v1/runs (start a one-off run, list, one, receipt); engine
]

DESCRIPTION = (
    "bastion's REST API. Every route except `GET /health` needs an API key as bearer token: "
    "a user's key (`bastion keys create --user NAME --scope ...`) with the route's scope "
    "(403 without it), or the admin's `api.token` from `bastion init`. Another user's sessions "
    "and documents answer 404; a used-up quota 429 with `Retry-After`. "
    "`POST /v1/chat/completions` and "
    "`GET /v1/models` are OpenAI-compatible: model `bastion-agent` runs the agent with its "
    "tools; the backend's model name passes straight through."
)


def _load(name: str) -> object:
    """Import a listed route module; one that is missing or fails to import is an error.

    Never a silent skip: a typo in :data:`ROUTE_MODULES` would quietly remove routes.
    """
    return importlib.import_module(name)


def _claim_routes(seen: dict[tuple[str, str], str], router: APIRouter, owner: str) -> None:
    """Record the router's (method, path) pairs; a pair claimed twice is a start-up error."""
    for route in router.routes:  # nested include_router()s are not inspected
        if isinstance(route, APIRoute):
            keys = [(m, route.path) for m in sorted(route.methods or ())]
        elif isinstance(route, APIWebSocketRoute):
            keys = [("WEBSOCKET", route.path)]
        else:
            continue
        for key in keys:
            if key in seen and seen[key] != owner:
                raise RuntimeError(
                    f"route {key[0]} {key[1]} is defined by both {seen[key]} and {owner}"
                )
            seen[key] = owner


def _route_methods(seen: dict[tuple[str, str], str]) -> list[tuple[re.Pattern[str], set[str]]]:
    by_path: dict[str, set[str]] = {}
    for method, path in seen:
        if method != "WEBSOCKET":
            by_path.setdefault(path, set()).add(method)
    return [(compile_path(path)[0], methods) for path, methods in by_path.items()]


def create_app(app: App | None = None, *, close_app: bool | None = None,
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """Return the API serving ``app`` (built from the config at start-up when ``None``).

    Args:
        app: the assembled bastion app; ``None`` builds one with ``build_app()`` when the
            server starts (so importing and creating stay cheap).
        close_app: close the bastion app when the server stops; default: only if it was
            built here.
        allowed_hosts: the ``Host`` headers accepted (a DNS-rebinding defence:
            ``bastion serve`` on loopback passes its loopback names); ``None`` accepts any.

    """
    owned = app is None if close_app is None else close_app

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if api.state.bastion is None:
            from bastion.app import build_app

            api.state.bastion = build_app()
        start_tasks(api, api.state.bastion)  # the scheduler of unattended tasks
        try:
            yield
        finally:
            await stop_tasks(api)
            store = getattr(api.state, "keystore", None)
            if store is not None:  # users and keys (opened on the first request)
                store.close()
                api.state.keystore = None
            if owned and api.state.bastion is not None:
                await api.state.bastion.aclose()

    api = FastAPI(
        title="bastion",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None,  # served by routes.core behind the token
        docs_url=None,  # the docs page cannot send the token, so it is not served
        redoc_url=None,
    )
    api.state.bastion = app
    api.state.busy_sessions = BusySessions()  # one running turn per session
    api.state.created_sessions = set()  # ids made by POST /v1/sessions, not yet used
    install_error_handlers(api)
    install_openapi(api)
    seen: dict[tuple[str, str], str] = {}
    public_paths: list[re.Pattern[str]] = []
    for name in ROUTE_MODULES:
        module = _load(name)
        public = getattr(module, "public_router", None)
        if public is not None:
            _claim_routes(seen, public, name)
            public_paths += [r.path_regex for r in public.routes
                             if isinstance(r, APIRoute | APIWebSocketRoute)]
            api.include_router(public)
        router = getattr(module, "router", None)
        if router is not None:
            _claim_routes(seen, router, name)
            api.include_router(router, dependencies=[Depends(require_token)],
                               responses=AUTH_ERRORS)
    api.state.route_methods = _route_methods(seen)  # the Allow header of a 405
    api.add_middleware(TokenGate, public=lambda path: any(p.match(path) for p in public_paths))
    if allowed_hosts is not None:
        api.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    api.add_middleware(TraceContext)  # a client's W3C traceparent parents its turn's spans
    api.add_middleware(SecurityHeaders)  # outermost: refusals are not frameable either
    return api
