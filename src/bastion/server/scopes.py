"""Which scope each API route needs: one table, checked before a request body is read.

A route not listed needs ``admin`` (deny by default): a new route module is admin-only until
its line is added here. ``admin`` covers every scope.
"""

from __future__ import annotations

import re
from functools import lru_cache

ANY = "*"
AUTHENTICATED = ""  # any valid key
_READ = ("GET", "HEAD")

# (methods or ANY, path regex, scope); the first match wins.
ROUTE_SCOPES: list[tuple[tuple[str, ...] | str, str, str]] = [
    (ANY, r"/openapi\.json", AUTHENTICATED),
    (_READ, r"/v1/auth/me", AUTHENTICATED),
    (ANY, r"/v1/chat/completions", "chat"),
    (_READ, r"/v1/models/pulled", "models:admin"),
    (ANY, r"/v1/models/pull", "models:admin"),
    (("POST",), r"/v1/models/use", "models:admin"),
    (("DELETE",), r"/v1/models/pulled/[^/]+", "models:admin"),
    (_READ, r"/v1/models(/[^/]+)?", "chat"),
    (ANY, r"/v1/audio/(transcriptions|speech)", "chat"),
    (("WEBSOCKET",), r"/v1/voice/ws", "chat"),
    (_READ, r"/v1/voice", "chat"),
    (("POST",), r"/v1/sessions/[^/]+/messages", "chat"),
    (_READ, r"/v1/sessions(/.*)?", "sessions:read"),
    (ANY, r"/v1/sessions(/.*)?", "sessions:write"),
    (("POST",), r"/v1/search", "sessions:read"),
    (_READ, r"/v1/knowledge", "sessions:read"),
    (ANY, r"/v1/(ingest|knowledge(/.*)?)", "knowledge:write"),
    (ANY, r"/v1/approvals(/.*)?", "approvals"),
    (_READ, r"/v1/runs(/[0-9a-f]{16}(/receipt)?)?", "tasks"),
    (ANY, r"/v1/audit(/.*)?", "audit:read"),
    (_READ, r"/v1/intel(/.*)?", "audit:read"),
    (("POST",), r"/v1/privacy/scan", "chat"),
    (("POST",), r"/v1/tasks/[^/]+/trigger", "tasks:trigger"),
    (ANY, r"/v1/tasks(/.*)?", "tasks"),
]
_COMPILED = [(m, re.compile(p), s) for m, p, s in ROUTE_SCOPES]


@lru_cache(maxsize=1024)
def _lookup(method: str, path: str) -> str:
    for methods, pattern, scope in _COMPILED:
        if (methods == ANY or method in methods) and pattern.fullmatch(path):
            return scope
    return "admin"


def scope_for(kind: str, method: str, path: str) -> str:
    """Return the scope a request needs (``""``: any valid key); unlisted routes need admin."""
    if len(path) > 512:  # not cached: an attacker's long paths must not fill the cache
        return "admin"
    return _lookup("WEBSOCKET" if kind == "websocket" else method.upper(), path)
