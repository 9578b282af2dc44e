"""SIEM export: ship audit records in order to Splunk HEC, Elasticsearch, Datadog or syslog.

Each sink keeps a cursor file (``HOME/intel/siem/<sink>.cursor``: last shipped id and its
chain hash, replaced atomically and fsynced) that advances only after the receiver accepted
a batch, so a restart resumes where the last acknowledged batch ended: nothing is lost.
Delivery is at-least-once at the wire: if a process dies after the receiver took a batch
but before the cursor was written, that batch is sent again. Elasticsearch makes this
exactly-once (each document is ``create``d with the record's chain hash as ``_id``; a
repeat answers 409 and counts as delivered); Splunk and Datadog events carry the chain hash
(``bastion_hash``) so a search can drop repeats. Failures are retried with exponential
backoff and jitter (connection errors, 408, 429, 5xx); other 4xx stop the push with the
receiver's message and leave the cursor where it was.

Wire formats follow each vendor's documentation:

- Splunk HEC: ``POST /services/collector/event``, ``Authorization: Splunk <token>``, body of
  concatenated ``{"time", "host", "source", "sourcetype", "index", "event"}`` objects.
- Elasticsearch: ``POST /_bulk``, ``application/x-ndjson``, ``{"create": {"_index", "_id"}}``
  action lines each followed by the document (``@timestamp``, ECS ``event``/``user`` fields,
  ``bastion`` with arguments/detail as JSON strings so mappings stay stable).
- Datadog: ``POST /api/v2/logs``, ``DD-API-KEY`` header, a JSON array of
  ``{"ddsource", "ddtags", "hostname", "service", "message", "timestamp", ...}`` (at most
  1000 per request).
- syslog: RFC 5424 with the record as structured data, or CEF in the message, UDP or TCP.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from bastion.config.model import SiemSinkConfig
from bastion.intelligence._syslog import SyslogSender, cef, rfc5424
from bastion.intelligence.anomaly import IntelError
from bastion.intelligence.tail import AuditTail
from bastion.security.audit import AuditEvent

_HOST = socket.gethostname() or "bastion"
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class Retryable(Exception):
    """A failure worth retrying (connection, 408/429/5xx)."""


class Sink(Protocol):
    """Sends one batch; raises :class:`Retryable` or :class:`IntelError`."""

    name: str
    max_batch: int

    def send(self, batch: list[AuditEvent]) -> None:
        """Deliver ``batch`` (oldest first)."""
        ...

    def close(self) -> None:
        """Release the sink's connection or socket."""
        ...


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _outcome(decision: str | None) -> str:
    return {"allowed": "success", "approved": "success", "denied": "failure",
            "error": "failure"}.get(decision or "", "unknown")


def _url(base: str, path: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(path) else base + path


class _HttpSink:
    name: str
    max_batch = 1000

    def __init__(self, cfg: SiemSinkConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.client = httpx.Client(timeout=cfg.timeout_s)

    def _post(self, url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        try:
            r = self.client.post(url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        if r.status_code in RETRY_STATUS:
            raise Retryable(f"HTTP {r.status_code}: {r.text[:200]}")
        if r.status_code >= 300:
            raise IntelError(f"SIEM sink {self.name} refused the batch: HTTP {r.status_code} "
                             f"{r.text[:300]}", fix="check the sink's url, token and index")
        return r

    def _token(self) -> str:
        return self.cfg.token.get_secret_value() if self.cfg.token else ""

    def close(self) -> None:
        self.client.close()


class SplunkHecSink(_HttpSink):
    """Splunk HTTP Event Collector (``/services/collector/event``)."""

    def payload(self, batch: list[AuditEvent]) -> bytes:
        """Return the HEC body: one JSON event object after another."""
        out = []
        for e in batch:
            obj: dict[str, Any] = {"time": round(e.ts, 6), "host": _HOST, "source": "bastion",
                                   "sourcetype": "bastion:audit",
                                   "event": {**e.to_dict(), "bastion_hash": e.hash}}
            if self.cfg.index:
                obj["index"] = self.cfg.index
            out.append(json.dumps(obj, ensure_ascii=False, default=str))
        return "\n".join(out).encode()

    def send(self, batch: list[AuditEvent]) -> None:
        """POST the batch."""
        r = self._post(_url(str(self.cfg.url), "/services/collector/event"), self.payload(batch),
                       {"Authorization": f"Splunk {self._token()}",
                        "Content-Type": "application/json"})
        body = r.json() if r.content else {}
        if isinstance(body, dict) and body.get("code", 0) != 0:
            raise IntelError(f"Splunk HEC error {body.get('code')}: {body.get('text')}")


class ElasticsearchSink(_HttpSink):
    """Elasticsearch ``_bulk`` with ``create`` + ``_id`` = chain hash (idempotent)."""

    def payload(self, batch: list[AuditEvent]) -> bytes:
        """Return the NDJSON bulk body (action line, document line; trailing newline)."""
        index = self.cfg.index or "bastion-audit"
        lines = []
        for e in batch:
            lines.append(json.dumps({"create": {"_index": index, "_id": e.hash}}))
            doc = {
                "@timestamp": _iso(e.ts),
                "event": {"id": str(e.id), "action": e.kind, "outcome": _outcome(e.decision),
                          "kind": "event", "dataset": "bastion.audit"},
                "user": {"name": e.actor},
                "bastion": {"id": e.id, "kind": e.kind, "session_id": e.session_id,
                            "tool": e.tool, "decision": e.decision, "risk": e.risk,
                            "result": e.result, "duration_ms": e.duration_ms, "hash": e.hash,
                            "arguments_json": json.dumps(e.arguments, ensure_ascii=False,
                                                         default=str),
                            "detail_json": json.dumps(e.detail, ensure_ascii=False,
                                                      default=str)},
            }
            lines.append(json.dumps(doc, ensure_ascii=False, default=str))
        return ("\n".join(lines) + "\n").encode()

    def send(self, batch: list[AuditEvent]) -> None:
        """POST the batch; 409 (already indexed) counts as delivered."""
        headers = {"Content-Type": "application/x-ndjson"}
        if self.cfg.token:
            headers["Authorization"] = f"ApiKey {self._token()}"
        r = self._post(_url(str(self.cfg.url), "/_bulk"), self.payload(batch), headers)
        body = r.json()
        if not body.get("errors"):
            return
        retry: list[dict[str, Any]] = []
        fatal: list[dict[str, Any]] = []
        for item in body.get("items", []):
            res: dict[str, Any] = next(iter(item.values()), {})
            status = int(res.get("status", 0))
            if status in (200, 201, 409):
                continue
            (retry if status in RETRY_STATUS else fatal).append(res)
        if fatal:
            err = fatal[0].get("error", {})
            raise IntelError(f"Elasticsearch rejected {len(fatal)} documents: "
                             f"{err.get('type')}: {err.get('reason')}",
                             fix="check the index mapping")
        if retry:
            raise Retryable(f"{len(retry)} documents were not indexed (status "
                            f"{retry[0].get('status')})")


class DatadogSink(_HttpSink):
    """Datadog logs intake v2 (``/api/v2/logs``)."""

    def payload(self, batch: list[AuditEvent]) -> bytes:
        """Return the JSON array body."""
        items = []
        for e in batch:
            tags = [f"kind:{e.kind}"] + [f"{k}:{v}" for k, v in (
                ("tool", e.tool), ("decision", e.decision), ("risk", e.risk)) if v]
            items.append({"ddsource": "bastion", "service": "bastion", "hostname": _HOST,
                          "ddtags": ",".join(tags), "timestamp": int(e.ts * 1000),
                          "message": json.dumps(e.to_dict(), ensure_ascii=False, default=str),
                          "bastion_hash": e.hash, "status": "warn" if e.decision in (
                              "denied", "error") else "info"})
        return json.dumps(items, ensure_ascii=False).encode()

    def send(self, batch: list[AuditEvent]) -> None:
        """POST the batch (202 Accepted)."""
        self._post(_url(str(self.cfg.url), "/api/v2/logs"), self.payload(batch),
                   {"DD-API-KEY": self._token(), "Content-Type": "application/json"})


class SyslogSink:
    """Records as CEF or RFC 5424 over UDP/TCP."""

    max_batch = 500

    def __init__(self, cfg: SiemSinkConfig) -> None:
        self.name = cfg.name
        self.format = cfg.format
        self.sender = SyslogSender(cfg.host, cfg.port, cfg.protocol, cfg.timeout_s)

    def message(self, e: AuditEvent) -> bytes:
        """Return one record as a syslog message."""
        rec = e.to_dict()
        sev = "warning" if e.decision in ("denied", "error") else "info"
        if self.format == "cef":
            return rfc5424(cef(rec), severity=sev, msgid=e.kind, ts=e.ts)
        params = {"id": e.id, "kind": e.kind, "actor": e.actor, "session": e.session_id,
                  "tool": e.tool, "decision": e.decision, "risk": e.risk, "hash": e.hash}
        return rfc5424(json.dumps(rec, ensure_ascii=False, default=str), severity=sev,
                       msgid=e.kind, params=params, ts=e.ts)

    def send(self, batch: list[AuditEvent]) -> None:
        """Send the batch."""
        try:
            self.sender.send([self.message(e) for e in batch])
        except OSError as exc:
            raise Retryable(str(exc)) from exc

    def close(self) -> None:
        """Close the socket."""
        self.sender.close()


def make_sink(cfg: SiemSinkConfig) -> Sink:
    """Return the sink for one config entry."""
    kinds: dict[str, Callable[[SiemSinkConfig], Sink]] = {
        "splunk_hec": SplunkHecSink, "elasticsearch": ElasticsearchSink,
        "datadog": DatadogSink, "syslog": SyslogSink}
    return kinds[cfg.type](cfg)


class Cursor:
    """The last shipped record (id and chain hash), persisted atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> tuple[int, str | None]:
        """Return (last id, its hash); (0, None) before the first push."""
        if not self.path.exists():
            return 0, None
        d = json.loads(self.path.read_text())
        return int(d["last_id"]), d.get("last_hash")

    def write(self, last_id: int, last_hash: str | None) -> None:
        """Replace the cursor (write, fsync, rename, fsync the folder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump({"last_id": last_id, "last_hash": last_hash, "ts": time.time()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Shipper:
    """Moves records from the audit log to one sink, batch by batch, behind its cursor."""

    def __init__(self, sink: Sink, cfg: SiemSinkConfig, audit_path: Path, cursor_dir: Path,
                 *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sink = sink
        self.cfg = cfg
        self.tail = AuditTail(audit_path)
        self.cursor = Cursor(cursor_dir / f"{cfg.name}.cursor")
        self.sleep = sleep
        self.last_error: str | None = None
        self.shipped = 0

    def _check_cursor(self) -> int:
        last_id, last_hash = self.cursor.read()
        if last_id and last_hash:
            now = self.tail.hash_of(last_id)
            if now is not None and now != last_hash:
                raise IntelError(f"SIEM cursor of {self.cfg.name} points at record {last_id}, "
                                 "which has changed (was the audit log replaced?)",
                                 fix=f"delete {self.cursor.path} to ship from the start")
        return last_id

    def push(self, limit: int | None = None) -> int:
        """Ship records after the cursor until the log's end (or ``limit``); return how many."""
        cursor = self._check_cursor()
        sent = 0
        size = min(self.cfg.batch_size, self.sink.max_batch)
        while limit is None or sent < limit:
            want = size if limit is None else min(size, limit - sent)
            batch = self.tail.after(cursor, want)
            if not batch:
                break
            self._send(batch)
            cursor = batch[-1].id
            self.cursor.write(cursor, batch[-1].hash)
            sent += len(batch)
            self.shipped += len(batch)
        return sent

    def _send(self, batch: list[AuditEvent]) -> None:
        for attempt in range(self.cfg.max_retries + 1):
            try:
                self.sink.send(batch)
                self.last_error = None
                return
            except Retryable as exc:
                self.last_error = str(exc)
                if attempt == self.cfg.max_retries:
                    # from None: httpx's error holds the request and its auth
                    raise IntelError(f"SIEM sink {self.cfg.name} failed after "
                                     f"{attempt + 1} tries: {exc}",
                                     fix="is the receiver up? the cursor did not move") from None
                delay = self.cfg.backoff_s * (2 ** attempt)
                self.sleep(min(60.0, delay * (0.5 + random.random())))

    def pending(self) -> int:
        """Return how many records are not shipped yet."""
        return max(0, self.tail.last_id() - self.cursor.read()[0])

    def close(self) -> None:
        """Close the sink and the reader."""
        self.sink.close()
        self.tail.close()


class Follower:
    """A background thread that calls ``step`` every ``interval_s`` until closed."""

    def __init__(self, step: Callable[[], None], interval_s: float, name: str) -> None:
        self._step = step
        self._interval = interval_s
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # keep following; the error is shown by `intel status`
                self.errors = [*self.errors[-9:], f"{type(exc).__name__}: {exc}"]
            self._stop.wait(self._interval)

    def close(self) -> None:
        """Stop after the current step (one last step runs first)."""
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            self._step()
        except Exception as exc:
            self.errors.append(str(exc))
