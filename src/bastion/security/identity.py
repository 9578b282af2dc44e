"""Who is asking: the principal of a request (user, roles, key id, scopes).

The server authenticates a request (``bastion.security.keystore``) and sets the principal
for the task that serves it (:func:`acting_as`); the gateway's scope stage and the audit log
read it with :func:`current`. A context variable, so it follows the request into the agent's
tool-call tasks and never leaks into another request's.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from bastion.security.gateway import CallRequest, Next, ToolResult, denied

ROLES = ("admin", "user", "approver")
SCOPES = ("chat", "sessions:read", "sessions:write", "knowledge:write", "approvals",
          "audit:read", "models:admin", "tasks", "tasks:trigger", "admin")
"""Fixed scopes; ``tools:<glob>`` (e.g. ``tools:read_*``) names which tools a key may call."""
TOOLS_PREFIX = "tools:"


def scope_problem(scope: str) -> str | None:
    """Return why ``scope`` is not a scope (``None`` when it is one)."""
    if scope in SCOPES:
        return None
    if scope.startswith(TOOLS_PREFIX) and scope[len(TOOLS_PREFIX):].strip():
        return None
    return f"unknown scope {scope!r}"


@dataclass(frozen=True, slots=True)
class Quota:
    """The limits of one key or one user (``None``: unlimited)."""

    requests: str | None = None
    tokens: str | None = None
    tool_calls: str | None = None
    concurrent: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Quota:
        """Return the quota a stored JSON object describes."""
        data = data or {}
        return cls(data.get("requests"), data.get("tokens"), data.get("tool_calls"),
                   data.get("concurrent"))

    def to_dict(self) -> dict[str, Any]:
        """Return the set limits as a JSON-ready mapping."""
        return {k: v for k, v in (("requests", self.requests), ("tokens", self.tokens),
                                  ("tool_calls", self.tool_calls),
                                  ("concurrent", self.concurrent)) if v is not None}

    def __bool__(self) -> bool:
        """Whether any limit is set."""
        return bool(self.to_dict())


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user acting through one API key."""

    user: str
    key_id: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    key_name: str = ""
    tool_globs: tuple[str, ...] = field(default=())
    all_users: bool = False  # an admin's explicit ?all_users=true (audited by the server)
    key_quota: Quota = field(default_factory=Quota)
    user_quota: Quota = field(default_factory=Quota)

    @property
    def is_admin(self) -> bool:
        """Whether the key carries the ``admin`` scope (every scope, every tool)."""
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        """Whether the key's scopes cover ``scope`` (``admin`` covers all; ``""``: any key)."""
        return not scope or self.is_admin or scope in self.scopes

    def may_call(self, tool: str) -> bool:
        """Whether this key's turns may call ``tool``.

        A key without any ``tools:`` scope may call every tool (the gateway's policy still
        applies); with some, only the tools one of the globs matches.
        """
        if self.is_admin or not self.tool_globs:
            return True
        return any(fnmatch.fnmatchcase(tool, g) for g in self.tool_globs)

    def audit_fields(self) -> dict[str, Any]:
        """Return what every audit record written for this principal carries."""
        return {"user": self.user, "key_id": self.key_id}


def make_principal(user: str, key_id: str, roles: set[str] | frozenset[str],
                   scopes: list[str] | tuple[str, ...], key_name: str = "",
                   key_quota: Quota | None = None, user_quota: Quota | None = None
                   ) -> Principal:
    """Return a :class:`Principal`, splitting ``tools:`` globs out of the scopes."""
    globs = tuple(s[len(TOOLS_PREFIX):] for s in scopes if s.startswith(TOOLS_PREFIX))
    return Principal(user, key_id, frozenset(roles), frozenset(scopes), key_name, globs,
                     key_quota=key_quota or Quota(), user_quota=user_quota or Quota())


_current: ContextVar[Principal | None] = ContextVar("bastion_principal", default=None)


def current() -> Principal | None:
    """Return the principal of the request being served (``None``: the local CLI)."""
    return _current.get()


@contextlib.contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """Run the body as ``principal`` (restored afterwards)."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


ADMIN_OWNER = "admin"
"""Owner of what the local CLI (the machine's owner) and the api.token create."""


def owner_filter() -> str | None:
    """Return whose sessions and documents the current request may see (``None``: all).

    The local CLI (no principal) and an admin's ``all_users`` request see everything.
    """
    p = _current.get()
    return None if p is None or p.all_users else p.user


def owner_name() -> str:
    """Return the owner of what the current request creates."""
    p = _current.get()
    return ADMIN_OWNER if p is None else p.user


def set_current(principal: Principal | None) -> None:
    """Set the principal for the rest of this task (a request's own task: the server)."""
    _current.set(principal)


class ToolScopeStage:
    """Gateway stage: a call to a tool the request's key has no ``tools:`` scope for is refused.

    The model gets the refusal as the tool's result, so it can tell the user why.
    """

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Refuse the call unless the current principal may call ``req.tool``."""
        principal = current()
        if principal is None or principal.may_call(req.tool.name):
            return await nxt(req)
        allowed = ", ".join(principal.tool_globs)
        return denied(req, f"{req.tool.name} refused: this API key (user {principal.user}, "
                           f"key {principal.key_id}) may only call tools matching {allowed}; "
                           "an admin can widen it: bastion keys create --scope tools:<glob>")
