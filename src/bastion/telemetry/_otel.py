"""The OpenTelemetry side of :mod:`bastion.telemetry`: imported only when traces are on.

The SDK does the work (batching, sampling, resource, limits, the ``OTEL_*`` variables); this
module only chooses the OTLP exporter and adapts spans to the small :class:`Span` surface.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bastion import __version__
from bastion._extras import require

T = TypeVar("T")
_FEATURE = "OpenTelemetry traces (telemetry.otlp_endpoint)"

_sdk_trace = require("opentelemetry.sdk.trace", extra="telemetry", feature=_FEATURE)

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import propagate, trace  # noqa: E402
from opentelemetry.context import Context  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator  # noqa: E402
from opentelemetry.trace import (  # noqa: E402
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)

Record = tuple[str, int, int, str, int]  # name, start_ns, end_ns, decision, span_id


def _protocol() -> str:
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()


def _exporter(endpoint: str | None) -> SpanExporter:
    """OTLP over HTTP/protobuf (the OTel default) or gRPC (``OTEL_EXPORTER_OTLP_PROTOCOL``)."""
    if _protocol() == "grpc":
        grpc = require("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                       extra="telemetry", feature=_FEATURE)
        exporter: SpanExporter = grpc.OTLPSpanExporter(endpoint=endpoint)
        return exporter
    http = require("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                   extra="telemetry", feature=_FEATURE)
    if endpoint is not None and not urlsplit(endpoint).path.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"  # a collector's base URL, as in OTEL_*
    exporter = http.OTLPSpanExporter(endpoint=endpoint)
    return exporter


class _Span:
    """A live OpenTelemetry span behind the :class:`bastion.telemetry.Span` surface."""

    __slots__ = ("_ended", "raw", "tracing")

    def __init__(self, raw: Any, tracing: Tracing) -> None:
        self.raw = raw
        self.tracing = tracing
        self._ended = False

    def set(self, key: str, value: Any) -> None:
        if value is not None:
            self.raw.set_attribute(key, value)

    def content(self, key: str, text: str) -> None:
        if self.tracing.record_content:
            self.raw.set_attribute(key, self.tracing.redact(text))

    def fail(self, message: str) -> None:
        self.raw.set_status(Status(StatusCode.ERROR, message[:300]))

    def children(self, records: list[Record]) -> None:
        if records and self.raw.is_recording():
            pending = self.tracing.pending
            if len(pending) > 10_000:  # parents the batch queue dropped: never exported
                pending.clear()
            pending[self.raw.get_span_context().span_id] = records

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self.raw.end()


_STAGE: ContextVar[_Scope | None] = ContextVar("bastion_stage_scope", default=None)


class _Scope:
    """A child span known only by its id until it is made at export (see ``children``).

    Entering it costs one context-variable set: the OpenTelemetry context naming it as the
    parent is built only when a span actually starts inside it (:meth:`Tracing.start`).
    """

    __slots__ = ("_token", "parent", "span_id")

    def __init__(self, parent: Any, span_id: int) -> None:
        self.parent = parent  # the raw SDK span the stage belongs to
        self.span_id = span_id
        self._token: Token[_Scope | None] | None = None

    def enter(self) -> None:
        self._token = _STAGE.set(self)

    def leave(self) -> None:
        if self._token is not None:
            _STAGE.reset(self._token)
            self._token = None

    def context(self) -> Context:
        """Return a context whose current span is this child (for a span started in it)."""
        p = self.parent.get_span_context()
        return trace.set_span_in_context(NonRecordingSpan(SpanContext(
            p.trace_id, self.span_id, False, p.trace_flags, p.trace_state)))


class _WithChildren(SpanExporter):
    """Build the timed child spans of a span (gateway stages) on the exporter's thread.

    A gateway call records ``(name, start_ns, end_ns, decision, span_id)`` per stage: two
    clock reads and an append on the call's path. The spans themselves are made here, off
    that path, just before their parent is exported; their ids were drawn on the path
    (:class:`_Scope`), so the spans started inside a stage are already its children.
    """

    def __init__(self, inner: SpanExporter, pending: dict[int, list[Record]]) -> None:
        self.inner = inner
        self.pending = pending
        self.ids = RandomIdGenerator()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        out = list(spans)
        for span in spans:
            records = self.pending.pop(span.context.span_id, None)
            if records:
                out += [self._child(span, *r) for r in records]
        return self.inner.export(out)

    def _child(self, parent: ReadableSpan, name: str, start: int, end: int,
               decision: str, span_id: int) -> ReadableSpan:
        ctx = SpanContext(parent.context.trace_id, span_id or self.ids.generate_span_id(), False,
                          parent.context.trace_flags, parent.context.trace_state)
        return ReadableSpan(f"gateway.{name}", ctx, parent.context, resource=parent.resource,
                            attributes={"bastion.gateway.stage": name,
                                        "bastion.gateway.decision": decision},
                            kind=SpanKind.INTERNAL, start_time=start, end_time=end,
                            instrumentation_scope=parent.instrumentation_scope)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Tracing:
    """One tracer provider with one batching OTLP exporter for the process."""

    def __init__(self, endpoint: str | None, *, record_content: bool,
                 redact: Callable[[str], str]) -> None:
        self.record_content = record_content
        self.redact = redact
        attrs: dict[str, Any] = {"service.version": __version__}
        if "OTEL_SERVICE_NAME" not in os.environ:
            attrs["service.name"] = "bastion"
        self.provider = _sdk_trace.TracerProvider(resource=Resource.create(attrs))
        self.pending: dict[int, list[Record]] = {}
        self.ids = RandomIdGenerator()
        self.provider.add_span_processor(
            BatchSpanProcessor(_WithChildren(_exporter(endpoint), self.pending)))
        self.tracer = self.provider.get_tracer("bastion", __version__)

    def start(self, name: str, attrs: Mapping[str, Any] | None, parent: Any,
              client: bool) -> _Span:
        if isinstance(parent, _Span):
            ctx: Context | None = trace.set_span_in_context(parent.raw)
        else:  # inside a gateway stage (and no span of its own made current since): its child
            scope = _STAGE.get()
            ctx = (scope.context() if scope is not None
                   and trace.get_current_span() is scope.parent else None)
        kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
        return _Span(self.tracer.start_span(name, ctx, kind, attrs), self)

    def child_scope(self, parent: Any) -> _Scope:
        return _Scope(parent.raw, self.ids.generate_span_id())

    @contextlib.contextmanager
    def current(self, name: str, attrs: Mapping[str, Any] | None) -> Iterator[_Span]:
        span = self.start(name, attrs, None, False)
        try:
            with self.activate(span):
                yield span
        except BaseException as exc:
            span.fail(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            span.end()

    @contextlib.contextmanager
    def activate(self, span: Any) -> Iterator[object]:
        token = otel_context.attach(trace.set_span_in_context(span.raw))
        try:
            yield span
        finally:
            otel_context.detach(token)

    async def within(self, span: Any, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        ctx = trace.set_span_in_context(span.raw)  # once: this runs for every streamed token
        attach, detach = otel_context.attach, otel_context.detach
        try:
            while True:
                token = attach(ctx)
                try:
                    item = await anext(stream)
                except StopAsyncIteration:
                    return
                finally:
                    detach(token)
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def inject(self, headers: MutableMapping[str, str]) -> None:
        propagate.inject(headers)

    @contextlib.contextmanager
    def extracted(self, headers: Mapping[str, str]) -> Iterator[object]:
        token = otel_context.attach(propagate.extract(headers))
        try:
            yield None
        finally:
            otel_context.detach(token)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what the batch processor still holds
