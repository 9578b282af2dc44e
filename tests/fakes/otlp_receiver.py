"""A real OTLP/HTTP trace receiver on loopback, built from the official ``opentelemetry-proto``.

The OpenTelemetry Collector binary is not installable here, so the tests receive what
bastion's exporter sends the way a collector does: ``POST /v1/traces`` with an
``ExportTraceServiceRequest`` (protobuf, optionally gzip), answered with an
``ExportTraceServiceResponse``. Spans are decoded into :class:`ReceivedSpan` for assertions.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One exported span, decoded."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        if self.path != "/v1/traces" or "protobuf" not in self.headers.get("Content-Type", ""):
            self.send_response(404)
            self.end_headers()
            return
        req = ExportTraceServiceRequest()
        req.ParseFromString(raw)
        self.server.add(req)
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class OtlpReceiver(ThreadingHTTPServer):
    """Receive OTLP/HTTP traces on 127.0.0.1 (a free port) in a daemon thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[ReceivedSpan] = []
        self.raw: list[bytes] = []  # every request body as received (for leak checks)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The collector base URL (what ``telemetry.otlp_endpoint`` takes)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, req: ExportTraceServiceRequest) -> None:
        """Decode and keep every span of one export request."""
        out: list[ReceivedSpan] = []
        for rs in req.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(ReceivedSpan(
                        s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                        s.kind, {kv.key: _value(kv.value) for kv in s.attributes},
                        s.status.code, resource, s.start_time_unix_nano, s.end_time_unix_nano))
        with self._lock:
            self.raw.append(req.SerializeToString())
            self.spans.extend(out)

    def wait_for(self, done: Callable[[list[ReceivedSpan]], bool],
                 timeout: float = 30) -> list[ReceivedSpan]:
        """Return the spans once ``done(spans)`` holds; AssertionError at the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spans = list(self.spans)
            if done(spans):
                return spans
            time.sleep(0.05)
        raise AssertionError(f"spans never complete: {[s.name for s in self.spans]}")

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    """Return ``parent``'s direct children, in start order."""
    return sorted((s for s in spans if s.parent_id == parent.span_id), key=lambda s: s.start_ns)


def tree(spans: list[ReceivedSpan], root: ReceivedSpan) -> tuple[str, list[Any]]:
    """Return ``(name, [subtrees...])`` of ``root`` and its descendants, children in start order."""
    return (root.name, [tree(spans, kid) for kid in children(spans, root)])


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    """Return the only span called ``name``."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in spans]}"
    return found[0]
