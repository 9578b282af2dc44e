"""The web UI: ``GET /`` (the shell page) and ``GET /web/...`` (its static files).

Also ``GET /v1/auth/providers`` (public): which sign-in ways this server offers, so a sign-in
page can show "Sign in with SSO" only when OpenID Connect is configured.

The files are package data under ``bastion/server/web`` and carry no user data: everything the
UI shows comes from the same token-protected JSON/SSE API other clients use, so both routes are
public. Every response carries a strict Content-Security-Policy (no inline script or style, no
plugins, no framing, no other origin to connect to) and an ``ETag``; a matching
``If-None-Match`` answers 304. The shell page links its files, and every script imports the
others, with ``?v=<version>`` (a hash of all the UI's files, written in when a file is first
read): such a URL never changes meaning, so it is cached for a year (``immutable``) and a
reload fetches nothing but ``/``; a new bastion has new URLs. The same file without that
``v`` (or with an old one) is revalidated on every load (``no-cache``); vendored libraries
have their version in the file name and are immutable either way. A browser that accepts
gzip gets the file compressed once, when first read (the stdlib's ``gzip``; the files are
package data, so there is nothing to compress per request).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from bastion.server.deps import BastionApp
from bastion.server.errors import ApiError

#: The UI's policy: its own scripts, styles and images only; fetch/SSE to this origin only.
WEB_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "font-src 'self'; connect-src 'self'; manifest-src 'self'; object-src 'none'; "
           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".txt":
          "text/plain; charset=utf-8", ".json": "application/json"}
_SAFE = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_NO_CACHE = "no-cache"
_IMMUTABLE = "public, max-age=31536000, immutable"

public_router = APIRouter(tags=["web"])


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    media_type: str
    etag: str
    cache: str
    gzipped: bytes | None  # the body compressed, when that makes it smaller


# A relative module specifier in the UI's scripts (static or dynamic import), and a /web/ URL
# in the shell page: both get ?v=<version>, so every importer names one module by one URL.
_IMPORT = re.compile(r"""((?:\bfrom|\bimport)\s*\(?\s*)(["'])(\.{1,2}/[^"'?]+\.js)\2""")
_LINK = re.compile(r'((?:href|src)=")(/web/[^"?]+)(")')


def _web() -> Traversable:
    return resources.files("bastion.server").joinpath("web")


@lru_cache(maxsize=1)
def version() -> str:
    """Return the UI's version: a hash of every file under ``web/`` (names and bytes)."""
    digest = hashlib.sha256()
    todo = [(_web(), "")]
    while todo:
        node, rel = todo.pop()
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                todo.append((child, f"{rel}{child.name}/"))
            else:
                digest.update(f"{rel}{child.name}\0".encode() + child.read_bytes())
    return digest.hexdigest()[:12]


def _versioned(rel: str, body: bytes) -> bytes:
    """Write ``?v=<version>`` into the shell page's links and the scripts' imports."""
    v = version()
    if rel == "index.html":
        return _LINK.sub(lambda m: f"{m[1]}{m[2]}?v={v}{m[3]}", body.decode()).encode()
    if rel.endswith(".js") and not rel.startswith("vendor/"):
        return _IMPORT.sub(lambda m: f"{m[1]}{m[2]}{m[3]}?v={v}{m[2]}", body.decode()).encode()
    return body


@lru_cache(maxsize=256)
def _load(rel: str) -> _File | None:
    """Return the packaged file ``rel`` under ``web/`` (``None``: no such file)."""
    if not _SAFE.fullmatch(rel) or ".." in rel:
        return None
    node = _web()
    for part in rel.split("/"):
        node = node.joinpath(part)
    if not node.is_file():
        return None
    name = rel.rsplit("/", 1)[-1]
    suffix = name[name.rfind("."):] if "." in name else ".txt"  # LICENSE files
    media_type = _TYPES.get(suffix)
    if media_type is None:
        return None
    body = _versioned(rel, node.read_bytes())
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    cache = _IMMUTABLE if rel.startswith("vendor/") and suffix == ".js" else _NO_CACHE
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    return _File(body, media_type, etag, cache, packed if len(packed) < len(body) else None)


def _accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip`` or ``*`` with a q above 0)."""
    for item in (accept_encoding or "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return float(q or 1) > 0
            except ValueError:
                return True
    return False


def _answer(f: _File, if_none_match: str | None, accept_encoding: str | None,
            immutable: bool = False) -> Response:
    headers = {"ETag": f.etag, "Cache-Control": _IMMUTABLE if immutable else f.cache,
               "Content-Security-Policy": WEB_CSP, "Vary": "Accept-Encoding"}
    if if_none_match is not None and f.etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    if f.gzipped is not None and _accepts_gzip(accept_encoding):
        headers["Content-Encoding"] = "gzip"
        return Response(f.gzipped, media_type=f.media_type, headers=headers)
    return Response(f.body, media_type=f.media_type, headers=headers)


def _missing(rel: str) -> ApiError:
    return ApiError(404, f"no web file {rel[:80]!r}", code="not_found",
                    fix="open the UI at / (its files live under /web/)")


@public_router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index(if_none_match: Annotated[str | None, Header()] = None,
                accept_encoding: Annotated[str | None, Header()] = None) -> Response:
    """Serve the web UI's shell page."""
    f = _load("index.html")
    if f is None:  # pragma: no cover - a broken install
        raise _missing("index.html")
    return _answer(f, if_none_match, accept_encoding)


@public_router.api_route("/web/{rel:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def web_file(rel: Annotated[str, Path()],
                   if_none_match: Annotated[str | None, Header()] = None,
                   accept_encoding: Annotated[str | None, Header()] = None,
                   v: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """Serve one static file of the web UI (scripts, styles, vendored libraries)."""
    f = _load(rel)
    if f is None:
        raise _missing(rel)
    return _answer(f, if_none_match, accept_encoding, immutable=v == version())


class Providers(BaseModel):
    """``GET /v1/auth/providers``: the sign-in ways this server offers."""

    api_key: bool = Field(description="POST /v1/auth/login with an API key (always)")
    oidc: bool = Field(description="single sign-on is configured (api.oidc.issuer)")
    oidc_login: str | None = Field(description="where the browser starts single sign-on")


@public_router.get("/v1/auth/providers", summary="Sign-in ways this server offers (no token)",
                   response_model=Providers)
async def providers(app: BastionApp) -> Providers:
    """Tell a sign-in page whether to offer single sign-on; says nothing about any user."""
    oidc = getattr(app.config.api, "oidc", None)
    on = bool(getattr(oidc, "issuer", None))
    return Providers(api_key=True, oidc=on, oidc_login="/v1/auth/oidc/login" if on else None)
