"""Resolving ``secret://`` references at injection time, and the gateway's secrets stage."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from typing import Any

from bastion.errors import BastionError, SecretError
from bastion.security.gateway import CallRequest, Next, ToolResult, denied
from bastion.security.redact import Redactor
from bastion.security.secrets.base import SecretBackend, SecretRef, is_ref, parse_ref, pick
from bastion.security.secrets.bound import Binding, PlaceholderBook, parse_host

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretResolver:
    """Turns references into values and registers every value it hands out with the redactor.

    So a resolved value is masked in tool output, model context, audit records and logs.
    """

    def __init__(self, backends: Mapping[str, SecretBackend], redactor: Redactor | None = None
                 ) -> None:
        self.backends = dict(backends)
        self.redactor = redactor
        self.book = PlaceholderBook()  # placeholders of bound secrets, read by egress proxies
        # emergency rotation: values that must never be handed out again, and the tool calls
        # now running with each reference (so they can be stopped)
        self._revoked: set[str] = set()
        self._running: dict[asyncio.Task[ToolResult], set[str]] = {}
        self._stopped: set[asyncio.Task[ToolResult]] = set()
        self._lock = threading.Lock()

    def backend(self, name: str) -> SecretBackend:
        """Return the backend called ``name``."""
        try:
            return self.backends[name]
        except KeyError as exc:
            known = ", ".join(sorted(self.backends)) or "none"
            raise SecretError(f"unknown secret backend {name!r} (configured: {known})",
                              fix="configure it under secrets: in bastion.yaml") from exc

    def resolve(self, ref: str | SecretRef) -> str:
        """Return the value ``ref`` points at (and remember it for redaction)."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        value = pick(self.backend(parsed.backend).get(parsed.path), parsed)
        if self.redactor is not None:
            self.redactor.add_known(value)
        if value in self._revoked:
            raise SecretError(f"{parsed} still holds a revoked value",
                              fix="rotate it again: bastion secrets rotate --emergency")
        return value

    def revoke(self, values: list[str], refs: list[str]) -> int:
        """Refuse ``values`` from now on and stop running calls that use ``refs``.

        ``refs`` are ``backend/path`` strings (any key of the secret).

        Returns how many calls were stopped (their sandboxes are killed on cancellation).
        """
        with self._lock:
            self._revoked.update(v for v in values if v)
            hit = [t for t, used in self._running.items() if used & set(refs)]
            self._stopped.update(hit)
        for task in hit:
            task.get_loop().call_soon_threadsafe(task.cancel)
        if self.redactor is not None:
            for v in values:
                self.redactor.add_known(v)
        return len(hit)

    def track(self, task: asyncio.Task[ToolResult], refs: set[str]) -> None:
        """Remember that ``task`` runs with ``refs`` injected."""
        with self._lock:
            self._running[task] = refs

    def untrack(self, task: asyncio.Task[ToolResult]) -> bool:
        """Forget ``task``; return whether it was stopped by :meth:`revoke`."""
        with self._lock:
            self._running.pop(task, None)
            stopped = task in self._stopped
            self._stopped.discard(task)
        return stopped

    def preload(self, refs: list[str]) -> None:
        """Resolve ``refs`` once so their values are masked from the start (values not kept)."""
        for ref in refs:
            try:
                self.resolve(ref)
            except BastionError:
                continue


def tool_declarations(tool: Any, configured: Mapping[str, Mapping[str, Any]]
                      ) -> dict[str, str]:
    """Return {ENV_NAME: reference} a tool needs: its own ``secrets`` attribute plus config."""
    out: dict[str, str] = {}
    own = getattr(tool, "secrets", None)
    if isinstance(own, Mapping):
        out.update({str(k): str(v) for k, v in own.items()})
    for env, entry in configured.get(tool.name, {}).items():
        out[env] = str(getattr(entry, "ref", entry))
    return out


def tool_bindings(tool_name: str, configured: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, Binding]:
    """Return {ENV_NAME: binding} of the tool's bound secrets (``{ref, hosts, ...}`` entries)."""
    out: dict[str, Binding] = {}
    for env, entry in configured.get(tool_name, {}).items():
        if isinstance(entry, str) or not hasattr(entry, "hosts"):
            continue
        out[env] = Binding(tool_name, env, str(entry.ref),
                           tuple(parse_host(h) for h in entry.hosts), entry.header,
                           entry.format, entry.query)
    return out


class SecretsStage:
    """Fill ``CallRequest.secrets`` for tools that declare secrets.

    References are resolved here, after policy and approval, immediately before the tool
    runs; the values travel only in ``req.secrets`` -> ``ToolContext.secrets`` -> the
    sandbox's exec environment (never argv, never a file on disk, never a log line).
    A *bound* secret (``{ref, hosts, ...}``) never enters the sandbox: the tool gets a fresh
    placeholder, and the egress proxy swaps it for the value only on the wire to its hosts.
    """

    def __init__(self, resolver: SecretResolver,
                 tools: Mapping[str, Mapping[str, Any]] | None = None,
                 book: PlaceholderBook | None = None) -> None:
        self.resolver = resolver
        self.tools = {k: dict(v) for k, v in (tools or {}).items()}
        self.book = book if book is not None else resolver.book

    def declared(self, tool: Any) -> dict[str, str]:
        """Return the secrets ``tool`` is given."""
        return tool_declarations(tool, self.tools)

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Resolve the tool's declared secrets into ``req.secrets``, then continue."""
        wanted = self.declared(req.tool)
        bound = tool_bindings(req.tool.name, self.tools)
        issued: list[str] = []
        for env_name, ref in wanted.items():
            if not _ENV_NAME.match(env_name) or not is_ref(ref):
                return denied(req, f"{req.tool.name}: bad secret declaration {env_name!r}")
            try:
                value = self.resolver.resolve(ref)
            except SecretError as exc:
                for placeholder in issued:
                    self.book.release(placeholder)
                return denied(req, f"{req.tool.name} needs secret {env_name}: {exc.user_text()}")
            if env_name in bound:  # the sandbox gets a placeholder; the value stays here
                value = self.book.issue(bound[env_name], value)
                issued.append(value)
            req.secrets[env_name] = value
        if wanted:  # names and references only, for the audit record; never values
            req.annotations["secret_env"] = sorted(wanted)
            req.annotations["secret_refs"] = sorted(wanted.values())
            if bound:
                req.annotations["secret_bound"] = sorted(bound)
        else:
            return await nxt(req)
        inner = asyncio.ensure_future(nxt(req))  # an emergency rotation may cancel it
        self.resolver.track(inner, {f"{r.backend}/{r.path}" for r in map(parse_ref,
                                                                        wanted.values())})
        try:
            return await inner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if inner.cancelled() and not (current and current.cancelling()):
                return denied(req, f"{req.tool.name} was stopped: a secret it uses was revoked "
                                   "by an emergency rotation")
            raise
        finally:
            self.resolver.untrack(inner)
            req.secrets.clear()  # the values do not outlive the call
            for placeholder in issued:  # nor do the placeholders
                self.book.release(placeholder)
