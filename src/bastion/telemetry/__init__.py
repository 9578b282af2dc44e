"""Traces for operators (OpenTelemetry, off by default) behind one-line call sites.

Off (no ``telemetry.otlp_endpoint`` and no ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``), every
function here hands back a shared no-op and nothing from ``opentelemetry`` is imported: the
cost of a call site is one function call. On, spans follow the OpenTelemetry GenAI semantic
conventions and leave through a batching OTLP exporter (:mod:`bastion.telemetry._otel`).

Spans that stay open across ``yield`` (a turn, a model call) are started with :func:`start`
and made current only around awaits, with :func:`activate` or :func:`within`, so a context is
never attached in one step of an async generator and detached in another.

Process metrics (always on) are in :mod:`bastion.telemetry.metrics`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from bastion.telemetry._otel import Tracing

T = TypeVar("T")
AttrValue = str | bool | int | float | list[str]
Record = tuple[str, int, int, str, int]
"""A timed child made at export: ``(name, start_ns, end_ns, decision, span_id)``."""

_tracing: Tracing | None = None
_owner: object | None = None  # who configured it (that one shuts it down)


class Span(Protocol):
    """What call sites may do with a span (the no-op and the real one alike)."""

    def set(self, key: str, value: AttrValue | None) -> None:
        """Set one attribute (``None`` is skipped)."""
        ...

    def content(self, key: str, text: str) -> None:
        """Record prompt/tool content, only with ``telemetry.record_content``, redacted."""
        ...

    def fail(self, message: str) -> None:
        """Mark the span as failed with a one-line reason."""
        ...

    def children(self, records: list[Record]) -> None:
        """Attach timed children ``(name, start_ns, end_ns, decision, span_id)``, made at export.

        For many short steps (gateway stages): only the clock reads are on the caller's path.
        ``span_id`` comes from :func:`child_scope` (0: a fresh one), so spans started inside
        the step while its scope was entered are its children. Call it before :meth:`end`.
        """
        ...

    def end(self) -> None:
        """End the span (a second call does nothing)."""
        ...


class _NoopSpan:
    __slots__ = ()

    def set(self, key: str, value: AttrValue | None) -> None:
        pass

    def content(self, key: str, text: str) -> None:
        pass

    def fail(self, message: str) -> None:
        pass

    def children(self, records: list[Record]) -> None:
        pass

    def end(self) -> None:
        pass


class Scope(Protocol):
    """A child of a span that is made at export (:meth:`Span.children`) but has its id now.

    Between :meth:`enter` and :meth:`leave` it is the current span, so spans started there
    (an approval wait, a sandbox start) are its children. Enter and leave in the same task.
    """

    span_id: int

    def enter(self) -> None:
        """Make this child the current span."""
        ...

    def leave(self) -> None:
        """Restore the span that was current before :meth:`enter`."""
        ...


class _NoopScope:
    __slots__ = ()
    span_id = 0

    def enter(self) -> None:
        pass

    def leave(self) -> None:
        pass


NOOP: Span = _NoopSpan()
NOOP_SCOPE: Scope = _NoopScope()
_NULL = contextlib.nullcontext(NOOP)


def enabled() -> bool:
    """Return True when traces are being exported."""
    return _tracing is not None


def recording() -> bool:
    """Return True when spans record prompt and tool content (``telemetry.record_content``).

    Call sites check it before building the text, so that costs nothing otherwise.
    """
    return _tracing is not None and _tracing.record_content


def env_endpoint() -> str | None:
    """Return the OTLP endpoint the standard ``OTEL_*`` variables name, if any."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)


def configure(
    endpoint: str | None,
    *,
    record_content: bool = False,
    redact: Callable[[str], str] | None = None,
    owner: object | None = None,
) -> bool:
    """Switch traces on when ``endpoint`` (or ``OTEL_EXPORTER_OTLP_*ENDPOINT``) is set.

    Only the first configuration of a process takes effect (one exporter per process); later
    calls keep it. Content is never recorded without ``redact``. Returns :func:`enabled`.

    Raises:
        MissingExtraError: the ``telemetry`` extra is not installed.
    """
    global _tracing, _owner
    if _tracing is not None:
        return True
    if endpoint is None and env_endpoint() is None:
        return False
    from bastion.telemetry._otel import Tracing

    _tracing = Tracing(endpoint, record_content=record_content and redact is not None,
                       redact=redact or (lambda text: text))
    _owner = owner
    return True


def shutdown(owner: object | None = None) -> None:
    """Flush and stop the exporter (only ``owner``'s, when given)."""
    global _tracing, _owner
    if _tracing is None or (owner is not None and owner is not _owner):
        return
    tracing, _tracing, _owner = _tracing, None, None
    tracing.shutdown()


def start(
    name: str,
    attrs: Mapping[str, AttrValue] | None = None,
    *,
    parent: Span | None = None,
    client: bool = False,
) -> Span:
    """Start a span (child of ``parent``, else of the current one) that is not made current.

    End it with :meth:`Span.end`; make it current around awaits with :func:`activate`.
    ``client`` marks a call leaving the process (a model server).
    """
    if _tracing is None:
        return NOOP
    return _tracing.start(name, attrs, parent, client)


def span(
    name: str, attrs: Mapping[str, AttrValue] | None = None
) -> contextlib.AbstractContextManager[Span]:
    """Return a context manager: a span, current inside the block, ended at its end.

    Use it only around code that does not ``yield`` (see the module docstring).
    """
    if _tracing is None:
        return _NULL
    return _tracing.current(name, attrs)


def child_scope(parent: Span) -> Scope:
    """Return a numbered child of ``parent`` for a step timed by :meth:`Span.children`."""
    if _tracing is None or parent is NOOP:
        return NOOP_SCOPE
    return _tracing.child_scope(parent)


def activate(span: Span) -> contextlib.AbstractContextManager[object]:
    """Make ``span`` current inside the block (which must not ``yield``)."""
    if _tracing is None or span is NOOP:
        return _NULL
    return _tracing.activate(span)


def within(span: Span, stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """Return ``stream`` with ``span`` current while each of its items is produced."""
    if _tracing is None or span is NOOP:
        return stream
    return _tracing.within(span, stream)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the W3C ``traceparent`` (and ``tracestate``) of the current span to ``headers``."""
    if _tracing is not None:
        _tracing.inject(headers)


async def httpx_hook(request: Any) -> None:
    """An httpx ``request`` event hook propagating the current trace to the server called."""
    if _tracing is not None:
        _tracing.inject(request.headers)


def remote_parent(headers: Mapping[str, str]) -> contextlib.AbstractContextManager[object]:
    """Inside the block, the trace context of an incoming request (``traceparent``) is current."""
    if _tracing is None:
        return _NULL
    return _tracing.extracted(headers)

