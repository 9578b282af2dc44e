"""The audit log's ``record``, as the stages and managers that write audit records see it.

``AuditLog.record`` satisfies it; so does a test's recording fake. One protocol instead of a
copy per writer, so an ``audit: Any`` never stands in for it.
"""

from __future__ import annotations

from typing import Any, Protocol


class AuditRecorder(Protocol):
    """Append one audit record and return its id."""

    def record(self, kind: str, *, actor: str | None = ..., session_id: str | None = ...,
               tool: str | None = ..., decision: str | None = ..., risk: str | None = ...,
               arguments: Any = ..., result: str | None = ..., duration_ms: float | None = ...,
               detail: Any = ...) -> int:
        """Append one audit record."""
        ...
