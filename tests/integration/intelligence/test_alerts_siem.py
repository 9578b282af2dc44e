"""Alert rules to a real rsyslog and a webhook; SIEM export to local HTTP receivers that follow
each vendor's documented wire format, and to rsyslog as CEF; resume without loss or repeats.

There is no Splunk, Elasticsearch or Datadog here: the receivers check what the vendors
document (HEC event objects and ``Authorization: Splunk``; ``_bulk`` NDJSON with ``create``
semantics, 409 on a repeated ``_id``; Datadog's JSON array and ``DD-API-KEY``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bastion.app import App, build_app
from bastion.config.model import (
    AlertMatchConfig,
    AlertRuleConfig,
    AlertsConfig,
    Config,
    IntelligenceConfig,
    MemoryConfig,
    NotifierConfig,
    SiemSinkConfig,
)
from bastion.intelligence.setup import intel_dir
from bastion.intelligence.siem import Cursor, Shipper, make_sink
from bastion.messages import ToolCall
from bastion.testing import ScriptedModel
from tests.integration.intelligence.conftest import Rsyslog


@pytest.fixture
def apps() -> Iterator[list[App]]:
    made: list[App] = []
    yield made
    for a in made:
        for close in reversed(a.closers):
            close()
        a.audit.close()


def _wait(pred: Any, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


async def test_alert_rule_fires_to_rsyslog_webhook_and_file(
        rsyslog: Rsyslog, http_receiver: Any, tmp_path: Path, apps: list[App]) -> None:
    hook_url, hook = http_receiver()
    alerts = AlertsConfig(
        rules=[AlertRuleConfig(name="denial-burst", threshold=3, window_s=60, cooldown_s=300,
                               match=AlertMatchConfig(kind="tool_call", decision="denied"),
                               group_by=["actor"], severity="warning",
                               notify=["hook", "syslog-udp", "syslog-tcp", "file"])],
        notifiers=[NotifierConfig(name="hook", type="webhook", url=f"{hook_url}/alerts"),
                   NotifierConfig(name="syslog-udp", type="syslog", port=rsyslog.udp_port),
                   NotifierConfig(name="syslog-tcp", type="syslog", port=rsyslog.tcp_port,
                                  protocol="tcp"),
                   NotifierConfig(name="file", type="file", path=tmp_path / "alerts.jsonl")],
        poll_interval_s=0.05)
    cfg = Config(memory=MemoryConfig(enabled=False),
                 intelligence=IntelligenceConfig(enabled=True, alerts=alerts))
    cfg.security.tools = {"shell": "deny"}
    app = build_app(cfg, model=ScriptedModel())
    apps.append(app)
    assert app.intel is not None and app.intel.alerts is not None
    engine = app.intel.alerts
    for i in range(2):
        r = await app.gateway.execute(ToolCall("shell", {"command": f"echo {i}"}))
        assert r.decision == "denied"
    assert await app.gateway.execute(ToolCall("list_files", {})) is not None  # not counted
    r = await app.gateway.execute(ToolCall("shell", {"command": "id"}))
    assert r.decision == "denied"

    assert _wait(lambda: len(hook.requests) == 1 and len(rsyslog.lines()) >= 2)
    body = json.loads(hook.requests[0]["body"])
    assert body["rule"] == "denial-burst" and body["count"] == 3
    assert body["group"] == {"actor": "agent"}
    lines = rsyslog.wait_lines(2)
    for line in lines:  # what rsyslog parsed out of our RFC 5424 messages
        pri, version, appname, msgid, sd, msg = line.split("|", 5)
        assert (pri, version, appname, msgid) == ("108", "1", "bastion", "alert")
        assert sd.startswith('[bastion@32473 rule="denial-burst" count="3"')
        assert 'actor="agent"' in sd
        assert msg.strip().startswith("bastion alert denial-burst: 3 x tool_call shell denied")
    filed = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["rule"] for a in filed] == ["denial-burst"]

    # three more denials inside the cooldown: counted, but not alerted again
    for _ in range(3):
        await app.gateway.execute(ToolCall("shell", {"command": "id"}))
    last = app.audit.events(limit=1)[0].id
    assert _wait(lambda: engine.seen_id >= last)
    assert len(hook.requests) == 1 and len(engine.fired) == 1
    audited = app.audit.events(kind="intel.alert")
    assert len(audited) == 1
    assert sorted(audited[0].detail["delivered"]) == ["file", "hook", "syslog-tcp", "syslog-udp"]


class FakeElastic:
    """``_bulk`` with create semantics: a repeated ``_id`` is a 409 (the document is kept)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.order: list[int] = []
        self.fail_first = fail_first
        self.requests = 0

    def __call__(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self.requests += 1
        assert path == "/_bulk"
        assert headers["content-type"] == "application/x-ndjson"
        assert body.endswith(b"\n")
        if self.requests <= self.fail_first:
            return 503, {"error": "unavailable"}
        lines = body.decode().splitlines()
        assert len(lines) % 2 == 0
        items = []
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            action = json.loads(action_line)
            assert list(action) == ["create"]
            meta = action["create"]
            assert meta["_index"] == "bastion-audit" and len(meta["_id"]) == 64
            doc = json.loads(doc_line)
            assert doc["@timestamp"].endswith("Z") and doc["event"]["action"]
            if meta["_id"] in self.docs:
                items.append({"create": {"_id": meta["_id"], "status": 409, "error": {
                    "type": "version_conflict_engine_exception", "reason": "exists"}}})
            else:
                self.docs[meta["_id"]] = doc
                self.order.append(doc["bastion"]["id"])
                items.append({"create": {"_id": meta["_id"], "status": 201}})
        return 200, {"took": 3, "errors": any(i["create"]["status"] >= 300 for i in items),
                     "items": items}


async def _records(app: App, n: int) -> list[int]:
    for i in range(n):
        await app.gateway.execute(ToolCall("list_files", {"path": "."}, id=f"c{i}"))
    app.audit.flush()
    return sorted(e.id for e in app.audit.events(limit=None))


async def test_elasticsearch_export_resumes_exactly_once(
        http_receiver: Any, apps: list[App], monkeypatch: pytest.MonkeyPatch) -> None:
    es = FakeElastic(fail_first=1)  # the first request meets a 503: retried with backoff
    url, _ = http_receiver(es)
    app = build_app(Config(memory=MemoryConfig(enabled=False)), model=ScriptedModel())
    apps.append(app)
    ids = await _records(app, 12)
    sink_cfg = SiemSinkConfig(name="es", type="elasticsearch", url=url, batch_size=5,
                              backoff_s=0.01)
    cursor_dir = intel_dir() / "siem"

    def shipper() -> Shipper:
        return Shipper(make_sink(sink_cfg), sink_cfg, app.audit.path, cursor_dir)

    first = shipper()
    assert first.push(limit=5) == 5
    first.close()  # "restart"
    # crash after the receiver took a batch but before the cursor was written
    real_write = Cursor.write
    calls = {"n": 0}

    def crash_once(self: Cursor, last_id: int, last_hash: str | None) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("killed")
        real_write(self, last_id, last_hash)

    monkeypatch.setattr(Cursor, "write", crash_once)
    second = shipper()
    with pytest.raises(KeyboardInterrupt):
        second.push()
    second.close()
    monkeypatch.setattr(Cursor, "write", real_write)
    third = shipper()
    assert third.push() == len(ids) - 5  # the unacknowledged batch is sent again ...
    assert third.pending() == 0
    third.close()
    assert es.order == ids  # ... and Elasticsearch kept each record once, in order
    assert len(es.docs) == len(ids)


async def test_splunk_and_datadog_formats_and_resume(http_receiver: Any, apps: list[App]
                                                     ) -> None:
    hec_events: list[dict[str, Any]] = []
    dd_events: list[dict[str, Any]] = []

    def hec(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        assert path == "/services/collector/event"
        assert headers["authorization"] == "Splunk hec-token-1"
        dec, text, pos = json.JSONDecoder(), body.decode(), 0
        while pos < len(text):  # concatenated event objects, as HEC documents
            while text[pos].isspace():
                pos += 1
            obj, pos = dec.raw_decode(text, pos)
            assert set(obj) == {"time", "host", "source", "sourcetype", "index", "event"}
            assert obj["sourcetype"] == "bastion:audit" and obj["index"] == "security"
            assert isinstance(obj["time"], float | int)
            hec_events.append(obj)
        return 200, {"text": "Success", "code": 0}

    def datadog(path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        assert path == "/api/v2/logs"
        assert headers["dd-api-key"] == "dd-key-1"
        items = json.loads(body)
        assert isinstance(items, list) and 0 < len(items) <= 1000
        for it in items:
            assert {"ddsource", "ddtags", "hostname", "service", "message"} <= set(it)
            assert it["ddtags"].startswith("kind:")
        dd_events.extend(items)
        return 202, {}

    hec_url, _ = http_receiver(hec)
    dd_url, _ = http_receiver(datadog)
    app = build_app(Config(memory=MemoryConfig(enabled=False)), model=ScriptedModel())
    apps.append(app)
    ids = await _records(app, 8)
    for cfg in (SiemSinkConfig(name="splunk", type="splunk_hec", url=hec_url,
                               token=SecretStr("hec-token-1"), index="security", batch_size=3),
                SiemSinkConfig(name="dd", type="datadog", url=dd_url,
                               token=SecretStr("dd-key-1"), batch_size=4)):
        s = Shipper(make_sink(cfg), cfg, app.audit.path, intel_dir() / "siem")
        assert s.push(limit=4) == 4
        s.close()
        s = Shipper(make_sink(cfg), cfg, app.audit.path, intel_dir() / "siem")  # restarted
        assert s.push() == len(ids) - 4
        s.close()
    assert [e["event"]["id"] for e in hec_events] == ids
    assert [json.loads(e["message"])["id"] for e in dd_events] == ids


async def test_syslog_cef_export_to_rsyslog(rsyslog: Rsyslog, apps: list[App]) -> None:
    app = build_app(Config(memory=MemoryConfig(enabled=False)), model=ScriptedModel())
    apps.append(app)
    ids = await _records(app, 5)
    cfg = SiemSinkConfig(name="cef", type="syslog", port=rsyslog.tcp_port, protocol="tcp",
                         format="cef")
    s = Shipper(make_sink(cfg), cfg, app.audit.path, intel_dir() / "siem")
    assert s.push() == len(ids)
    s.close()
    lines = rsyslog.wait_lines(len(ids))
    assert len(lines) == len(ids)
    for line, rid in zip(lines, ids, strict=True):
        _pri, version, appname, _msgid, _sd, msg = line.split("|", 5)
        assert version == "1" and appname == "bastion"
        assert msg.startswith("CEF:0|bastion|bastion|")
        assert f"externalId={rid}" in msg


async def test_background_shipping_while_the_app_runs(http_receiver: Any, apps: list[App]
                                                      ) -> None:
    es = FakeElastic()
    url, _ = http_receiver(es)
    cfg = Config(memory=MemoryConfig(enabled=False), intelligence=IntelligenceConfig(
        enabled=True, siem={"background": True, "poll_interval_s": 0.05,
                            "sinks": [{"name": "es", "type": "elasticsearch", "url": url}]}))
    app = build_app(cfg, model=ScriptedModel())
    apps.append(app)
    ids = await _records(app, 6)
    assert _wait(lambda: es.order[: len(ids)] == ids)
