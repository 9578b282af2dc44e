"""MCP resources: the agent's workspace files and bastion's audit trail.

Workspace files are ``file://`` URIs of their real paths; the template
``file://<workspace>/{+path}`` takes a workspace-relative path. Every read is a call of the
unregistered :data:`READ_TOOL` through the gateway (``Gateway.execute(tool=...)``), so policy
(``security.tools: {read_resource: deny}``), the risk and approval stages, the output secret
scan and the audit log apply as to any tool call. Paths go through the file tools' own
confinement (:func:`open_in_workspace`: no ``..`` above the root, no symlink out of it).

Listing (``resources/list``), completing a path or an audit id (``completion/complete``) and
watching a file (``resources/subscribe``) are calls of the same tool with other arguments
(``{"list": "resources"}``, ``{"complete": kind, "value": partial}``, ``{"watch": uri}``),
so ``read_resource: deny`` hides the names too and every one of them is audited.

Audit resources (``bastion://audit/...``) expose the already-redacted audit records, so a
client can ask about what bastion did (the ``explain_audit_event`` and ``summarize_session``
prompts embed them).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from bastion.errors import ToolError
from bastion.messages import ToolCall, ToolSpec
from bastion.security.gateway import Gateway, ToolResult
from bastion.security.scanner import SecretScanner
from bastion.tools.base import Risk, ToolContext, ToolOutput
from bastion.tools.builtin._paths import open_in_workspace, require_regular, split_path

READ_TOOL = "read_resource"
AUDIT_SCHEME = "bastion"
AUDIT_RECENT = "bastion://audit/recent"
AUDIT_EVENT_TEMPLATE = "bastion://audit/events/{id}"
AUDIT_SESSION_TEMPLATE = "bastion://audit/sessions/{session_id}"
MAX_READ_BYTES = 4 * 1024 * 1024
MAX_LISTED = 2000
PAGE = 200
RECENT_EVENTS = 50


@dataclass(slots=True)
class Content:
    """One read resource: text, or binary bytes (sent as a base64 blob)."""

    uri: str
    mime_type: str
    text: str | None = None
    blob: bytes | None = None


class ResourceError(ToolError):
    """A resource URI that does not name a readable resource."""


def mime_of(name: str, binary: bool) -> str:
    """Return a MIME type for ``name`` (by extension; a generic one otherwise)."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed:
        return guessed
    return "application/octet-stream" if binary else "text/plain"


def _is_text(raw: bytes) -> bool:
    if b"\x00" in raw[:8192]:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def mask_binary(raw: bytes, scanner: SecretScanner) -> tuple[bytes, list[str]]:
    """Overwrite secrets found in ``raw`` with ``*`` (same length); return the rules hit.

    Bytes are read as latin-1 (one character per byte), so the scanner's spans are byte
    offsets. The file keeps its size and structure; only the secret's bytes change.
    """
    findings = scanner.scan(raw.decode("latin-1"))
    if not findings:
        return raw, []
    out = bytearray(raw)
    for f in findings:
        out[f.start:f.end] = b"*" * (f.end - f.start)
    return bytes(out), list(dict.fromkeys(f.rule for f in findings))


class Workspace:
    """The workspace as MCP resources: URIs, listing, confined reads."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.prefix = self.root.as_uri().rstrip("/") + "/"

    @property
    def template(self) -> str:
        """The resource template for any workspace file (``path`` is workspace-relative)."""
        return self.prefix + "{+path}"

    def uri(self, rel: str) -> str:
        """Return the ``file://`` URI of the workspace-relative ``rel``."""
        return self.prefix + quote(rel)

    def relative(self, uri: str) -> str:
        """Return the workspace-relative path a ``file://`` URI names (lexically).

        Anything outside the workspace is refused later by the confined open; here only the
        scheme and host are checked.
        """
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise ResourceError(f"unknown resource {uri!r}",
                                fix="use a file:// URI inside the workspace (see resources/list)")
        return unquote(parts.path)

    def walk(self, *, hidden: bool = False) -> Iterator[tuple[str, os.stat_result]]:
        """Yield (relative path, stat) of regular files, sorted, not following symlinks."""
        fd, _ = open_in_workspace(self.root, ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for top, dirnames, filenames, top_fd in os.fwalk(".", dir_fd=fd,
                                                            follow_symlinks=False):
                dirnames[:] = sorted(d for d in dirnames if hidden or not d.startswith("."))
                prefix = "" if top == "." else top[2:] + "/"
                for name in sorted(filenames):
                    if not hidden and name.startswith("."):
                        continue
                    st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        yield prefix + name, st
        finally:
            os.close(fd)

    def complete(self, partial: str, limit: int = 100) -> tuple[list[str], int]:
        """Return workspace paths (and directories, with ``/``) that start with ``partial``."""
        partial = partial.lstrip("/")
        seen: dict[str, None] = {}
        for rel, _ in self.walk(hidden=partial.startswith(".") or "/." in partial):
            if not rel.startswith(partial):
                continue
            cut = rel.find("/", len(partial))
            seen[rel if cut < 0 else rel[:cut + 1]] = None
            if len(seen) >= MAX_LISTED:
                break
        values = list(seen)
        return values[:limit], len(values)

    def read(self, rel: str, scanner: SecretScanner, max_bytes: int = MAX_READ_BYTES
             ) -> tuple[Content, dict[str, Any]]:
        """Read ``rel`` inside the workspace; binary secrets are masked in place."""
        fd, shown = open_in_workspace(self.root, rel, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = require_regular(fd, shown)
            if st.st_size > max_bytes:
                raise ResourceError(f"{shown} is {st.st_size} bytes; resources are served up "
                                    f"to {max_bytes} bytes",
                                    fix="read it in parts with the read_file tool")
            raw = os.pread(fd, max_bytes, 0)
        finally:
            os.close(fd)
        uri = self.uri(shown)
        info: dict[str, Any] = {"path": shown, "size": len(raw)}
        if _is_text(raw):
            return Content(uri, mime_of(shown, False), text=raw.decode("utf-8")), info
        masked, rules = mask_binary(raw, scanner)
        info["binary"] = True
        if rules:
            info["masked"] = rules
        return Content(uri, mime_of(shown, True), blob=masked), info


class ReadResourceTool:
    """The tool a resource read is, for the gateway (never offered to the model).

    Its output text is what the audit records and the output scan redacts: the file's text,
    or a one-line description of a binary file (whose bytes were scanned and masked here).
    """

    name = READ_TOOL
    description = ("Read, list, complete or watch MCP resources (workspace files, audit "
                   "records) for an MCP client.")
    parameters: dict[str, Any] = {"type": "object", "properties": {
        "uri": {"type": "string"}, "list": {"type": "string"}, "complete": {"type": "string"},
        "value": {"type": "string"}, "watch": {"type": "string"}}}
    risk = Risk.LOW
    sandboxed = False
    egress = False  # it reads the workspace and the audit log; nothing leaves through it

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def spec(self) -> ToolSpec:
        """Return the tool's description (for completeness; it is never offered)."""
        return ToolSpec(self.name, self.description, self.parameters)

    async def __call__(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        """Read ``args['uri']``; or list, complete or check a URI to watch (module doc)."""
        if "list" in args:
            listing = self.resources.listing()
            return ToolOutput(f"listed {len(listing)} resources", data={"listing": listing})
        if "complete" in args:
            values, total = self.resources.values(str(args["complete"]),
                                                  str(args.get("value", "")))
            return ToolOutput(f"{total} completions", data={"values": values, "total": total})
        if "watch" in args:
            rel = self.resources.watchable(str(args["watch"]))
            return ToolOutput(f"watching {rel}", data={"path": rel})
        uri = str(args.get("uri", ""))
        content, info = self.resources.load(uri)
        if content.text is not None:
            return ToolOutput(content.text, data={"content": content, **info})
        masked = f", secrets masked ({', '.join(info['masked'])})" if "masked" in info else ""
        text = f"{info['path']}: binary, {info['size']} bytes, {content.mime_type}{masked}"
        return ToolOutput(text, data={"content": content, **info})


class Resources:
    """Everything the MCP server serves as resources, read through the gateway."""

    def __init__(self, gateway: Gateway, scanner: SecretScanner, audit: Any = None) -> None:
        self.gateway = gateway
        self.workspace = Workspace(gateway.environment.workspace)
        self.scanner = scanner
        self.audit = audit
        self.tool = ReadResourceTool(self)

    # ---- listing ---------------------------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        """Return every listed resource as keyword arguments for ``types.Resource``."""
        out: list[dict[str, Any]] = []
        if self.audit is not None:
            out.append({"uri": AUDIT_RECENT, "name": "audit/recent",
                        "title": "Recent audit events",
                        "description": f"The last {RECENT_EVENTS} audit records (redacted)",
                        "mime_type": "application/json"})
        for n, (rel, st) in enumerate(self.workspace.walk()):
            if n >= MAX_LISTED:
                break
            out.append({"uri": self.workspace.uri(rel), "name": rel,
                        "mime_type": mime_of(rel, False), "size": st.st_size,
                        "description": "workspace file"})
        return out

    def templates(self) -> list[dict[str, Any]]:
        """Return the resource templates as keyword arguments for ``types.ResourceTemplate``."""
        out = [{"uri_template": self.workspace.template, "name": "workspace-file",
                "title": "Workspace file",
                "description": "Any file in bastion's workspace by its relative path "
                               "(traversal and symlinks out of the workspace are refused)"}]
        if self.audit is not None:
            out += [
                {"uri_template": AUDIT_EVENT_TEMPLATE, "name": "audit-event",
                 "title": "Audit event", "description": "One audit record by id (redacted)",
                 "mime_type": "application/json"},
                {"uri_template": AUDIT_SESSION_TEMPLATE, "name": "audit-session",
                 "title": "Audit trail of a session",
                 "description": "Every audit record of one session id (redacted)",
                 "mime_type": "application/json"},
            ]
        return out

    def values(self, kind: str, partial: str) -> tuple[list[str], int]:
        """Completion values of a workspace ``path`` or an audit ``event``/``session`` id."""
        if kind == "path":
            return self.workspace.complete(partial)
        if kind not in ("event", "session"):
            raise ResourceError(f"nothing to complete for {kind!r}")
        hits = [v for v in self.recent_ids(kind) if v.startswith(partial)]
        return hits[:100], len(hits)

    def watchable(self, uri: str) -> str:
        """Return the workspace path a subscription URI names, or raise ResourceError."""
        parts = split_path(self.workspace.relative(uri), self.workspace.root)
        if not parts:
            raise ResourceError("the workspace root is not a file",
                                fix="subscribe to a file:// URI of a file (see resources/list)")
        return "/".join(parts)

    # ---- through the gateway ---------------------------------------------------------------
    async def call(self, args: dict[str, Any], *, actor: str, session_id: str | None
                   ) -> dict[str, Any]:
        """Run ``read_resource(args)`` through the gateway; return its data or raise."""
        result = await self.gateway.execute(ToolCall(READ_TOOL, args), actor=actor,
                                            session_id=session_id, tool=self.tool)
        if not result.ok:
            raise ResourceError(result.error or result.text)
        return result.data if isinstance(result.data, dict) else {}

    async def read(self, uri: str, *, actor: str, session_id: str | None) -> Content:
        """Read ``uri`` through the gateway; raise :class:`ResourceError` when refused."""
        result = await self.gateway.execute(ToolCall(READ_TOOL, {"uri": uri}), actor=actor,
                                            session_id=session_id, tool=self.tool)
        return self.content_of(result)

    @staticmethod
    def content_of(result: ToolResult) -> Content:
        """Return the content a gateway result carries (its text already scanned)."""
        if not result.ok:
            raise ResourceError(result.error or result.text)
        data = result.data if isinstance(result.data, dict) else {}
        content = data.get("content")
        if not isinstance(content, Content):  # the scan withheld or rewrote it
            raise ResourceError(result.text)
        if content.text is not None:
            content.text = result.text  # the output scan's redacted text
        return content

    def load(self, uri: str) -> tuple[Content, dict[str, Any]]:
        """Read ``uri`` (called by :class:`ReadResourceTool` inside the gateway)."""
        if uri.startswith(f"{AUDIT_SCHEME}://"):
            return self._audit(uri)
        return self.workspace.read(self.workspace.relative(uri), self.scanner)

    def _audit(self, uri: str) -> tuple[Content, dict[str, Any]]:
        if self.audit is None:
            raise ResourceError(f"unknown resource {uri!r}")
        rest = uri[len(f"{AUDIT_SCHEME}://audit/"):] if uri.startswith(
            f"{AUDIT_SCHEME}://audit/") else ""
        if rest == "recent":
            events = self.audit.events(limit=RECENT_EVENTS)
        elif rest.startswith("events/") and rest[7:].isdigit():
            body = json.dumps(self._event(int(rest[7:])), ensure_ascii=False, indent=1)
            return Content(uri, "application/json", text=body), {"path": uri, "size": len(body)}
        elif rest.startswith("sessions/") and rest[9:]:
            events = self.audit.events(session_id=unquote(rest[9:]), limit=500)
        else:
            raise ResourceError(f"unknown resource {uri!r}",
                                fix=f"use {AUDIT_RECENT}, {AUDIT_EVENT_TEMPLATE} or "
                                    f"{AUDIT_SESSION_TEMPLATE}")
        body = json.dumps([e.to_dict() for e in events], ensure_ascii=False, indent=1)
        return Content(uri, "application/json", text=body), {"path": uri, "size": len(body)}

    def _event(self, event_id: int) -> dict[str, Any]:
        from bastion.security.audit import open_reader

        self.audit.flush()
        db = open_reader(self.audit.path)
        try:
            cur = db.execute("SELECT * FROM events WHERE id = ?", (event_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        finally:
            db.close()
        if row is None:
            raise ResourceError(f"no audit event {event_id}",
                                fix=f"see {AUDIT_RECENT} for recent ids")
        event = dict(zip(names, row, strict=True))
        for key in ("arguments", "detail"):
            if isinstance(event.get(key), str):
                event[key] = json.loads(event[key])
        return event

    def recent_ids(self, kind: str) -> list[str]:
        """Return recent audit event ids, or session ids (``kind='session'``), newest first."""
        if self.audit is None:
            return []
        events = self.audit.events(limit=200)
        if kind == "session":
            return list(dict.fromkeys(e.session_id for e in events if e.session_id))
        return [str(e.id) for e in events]


def blob_text(content: Content) -> str:
    """Return the base64 text of a binary content."""
    assert content.blob is not None
    return base64.b64encode(content.blob).decode("ascii")
