"""JSON errors for every failure: one clear line, never a traceback.

Bodies follow the OpenAI shape so its clients show the message::

    {"error": {"message": "...", "type": "invalid_request_error", "code": "...",
               "param": null, "fix": "..."}}

Route code raises :class:`ApiError` (or any :class:`bastion.errors.BastionError`, mapped to
a status by :func:`status_for`); everything else becomes a 500 with a generic message and is
logged server-side.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from bastion import errors as e
from bastion.memory.store import SessionAmbiguous

log = logging.getLogger("bastion.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    502: "upstream_error",
    503: "unavailable_error",
}

# Most specific first: the first class in the exception's MRO found here decides.
_STATUS: dict[type[e.BastionError], int] = {
    e.AuthError: 401,
    e.PolicyDenied: 403,
    e.NotFoundError: 404,
    e.ToolNotFoundError: 404,
    e.ToolArgumentsError: 400,
    e.ToolError: 400,
    e.ConfigError: 400,
    e.AudioError: 400,
    e.ModelError: 502,
    e.ClusterError: 503,
    e.SandboxError: 503,
    e.MissingExtraError: 503,
    SessionAmbiguous: 409,
    e.MemoryStoreError: 503,
    e.SecretError: 503,
    e.BastionError: 400,
}


class ApiError(Exception):
    """An error with an HTTP status, raised by route code.

    Args:
        status: the HTTP status code.
        message: one line saying what is wrong.
        code: a short machine-readable code, e.g. ``model_not_found``.
        fix: what the caller can do about it.
        param: the request field at fault, if any.
        headers: extra response headers.

    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        fix: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.fix = fix
        self.param = param
        self.headers = headers

    def as_body(self) -> dict[str, Any]:
        """Return the JSON error body (for errors inside an SSE stream)."""
        return error_body(self.status, self.message, code=self.code, fix=self.fix,
                          param=self.param)


def status_for(exc: e.BastionError) -> int:
    """Return the HTTP status for a bastion error (400/401/403/404/502/503)."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    fix: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """Return the JSON error body (message on one line, fix appended to it)."""
    line = " ".join(message.split())
    if fix and fix not in line:
        line = f"{line} (fix: {fix})"
    return {
        "error": {
            "message": line,
            "type": _TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "code": code,
            "param": param,
            "fix": fix,
        }
    }


def _redact(conn: HTTPConnection, text: str | None) -> str | None:
    bastion = getattr(conn.app.state, "bastion", None)
    if text is None or bastion is None:
        return text
    return str(bastion.redactor.text(text))


def error_response(
    conn: HTTPConnection,
    status: int,
    message: str,
    *,
    code: str | None = None,
    fix: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build a JSON error response with secrets redacted from the text."""
    body = error_body(
        status, _redact(conn, message) or "", code=code, fix=_redact(conn, fix), param=param
    )
    return JSONResponse(body, status_code=status, headers=headers)


def bastion_error_payload(conn: HTTPConnection, exc: e.BastionError) -> dict[str, Any]:
    """Return the error body for a bastion error (used inside SSE streams too)."""
    return error_body(
        status_for(exc),
        _redact(conn, exc.message) or "",
        code=type(exc).__name__,
        fix=_redact(conn, exc.fix),
    )


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """Return a one-line description of a request validation failure and the field at fault."""
    errs = list(exc.errors())
    if not errs:
        return "invalid request", None
    first = errs[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return f"request body is not valid JSON{': ' + str(detail) if detail else ''}", None
    if not loc and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return "request body must be a JSON object (Content-Type: application/json)", None
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        msg = "field required"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    if where is None:
        return f"invalid request body: {msg}{more}", None
    return f"invalid request body: {where}: {msg}{more}", where


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        request, exc.status, exc.message, code=exc.code, fix=exc.fix, param=exc.param,
        headers=exc.headers,
    )


async def _on_bastion_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.BastionError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(
        request, status, exc.message, code=type(exc).__name__, fix=exc.fix, headers=headers
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(exc)
    return error_response(request, 422, message, code="invalid_body", param=param)


def allowed_methods(conn: HTTPConnection) -> list[str]:
    """Return every method some route serves on this path.

    Starlette's own ``Allow`` names only the first route matching the path, but several route
    modules may serve one path (``GET /v1/sessions/{id}`` and ``DELETE`` of the same path);
    ``create_app`` records every (path, methods) pair in ``state.route_methods``.
    """
    matches = [(regex.groups, served) for regex, served
               in getattr(conn.app.state, "route_methods", ()) if regex.match(conn.url.path)]
    fewest = min((n for n, _ in matches), default=0)  # /a/events before /a/{id}
    return sorted({m for n, served in matches if n == fewest for m in served})


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        headers = {**headers, "Allow": ", ".join(allowed_methods(request))}
    else:
        message = str(exc.detail)
    return error_response(
        request, exc.status_code, message, code=f"http_{exc.status_code}", headers=headers,
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unexpected error on %s %s: %s", request.method, request.url.path,
        _redact(request, f"{type(exc).__name__}: {exc}"),
    )
    return error_response(
        request, 500, "internal error while handling the request", code="internal_error",
        fix="see the server log (bastion serve) for details",
    )


def install_error_handlers(api: FastAPI) -> None:
    """Make every error a JSON body with one clear line."""
    api.add_exception_handler(ApiError, _on_api_error)
    api.add_exception_handler(e.BastionError, _on_bastion_error)
    api.add_exception_handler(RequestValidationError, _on_validation)
    api.add_exception_handler(StarletteHTTPException, _on_http)
    api.add_exception_handler(Exception, _on_unexpected)
