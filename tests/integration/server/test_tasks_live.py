"""Unattended tasks against a live ``python -m bastion serve`` (real SQLite, real inotify, real
processes, the real run engine): an every-task fires from the server's scheduler, a signed
webhook starts a run (a forged and a replayed one do not), a new file in a watched folder fires,
and ``bastion task run-now`` in another process reaches the server through the task store; each
run it started ends ``done`` (GET /v1/runs/ID), the webhook's with the body as its payload.

The model is bastion.testing's scripted OpenAI-compatible server. Without a run engine
(``bastion.tasks.runs.build_starter``) every fire is recorded as "no run engine" and a webhook
answers 409: the assertions check exactly that then.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bastion.tasks.triggers import signature
from bastion.testing.openai_server import FakeOpenAIServer, serve
from tests.integration.server.test_live_server import _bastion, serving

TOKEN = "tasks-live-admin-token-0123456789abcdef"
ENGINE = (importlib.util.find_spec("bastion.tasks.runs") is not None
          and hasattr(importlib.import_module("bastion.tasks.runs"), "build_starter"))
NO_ENGINE = "no run engine is running in this bastion"


@dataclass
class Live:
    base: str
    home: Path
    workspace: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=60)

    def fires(self, name: str, deadline_s: float = 20.0) -> list[dict[str, object]]:
        end = time.monotonic() + deadline_s
        with self.api() as c:
            while time.monotonic() < end:
                fires = c.get(f"/v1/tasks/{name}").json()["fires"]
                if fires and not any(f["queued"] for f in fires):
                    return list(fires)
                time.sleep(0.2)
        raise AssertionError(f"task {name} did not fire within {deadline_s} s")


def _check_started(live: Live, fire: dict[str, object]) -> dict[str, object] | None:
    """Without the engine: the fire says so. With it: the run it started ends ``done``."""
    if not ENGINE:
        assert fire["run_id"] is None and fire["error"] == NO_ENGINE, fire
        return None
    assert fire["run_id"] and fire["error"] is None, fire
    end = time.monotonic() + 30
    with live.api() as c:
        while True:
            run = c.get(f"/v1/runs/{fire['run_id']}").json()
            if run.get("status") in ("done", "failed") or time.monotonic() > end:
                break
            time.sleep(0.2)
    assert run["status"] == "done", run
    assert run["trigger"]["kind"] == fire["kind"], run
    return dict(run)


@pytest.fixture(scope="module")
def fake_model() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(serve(FakeOpenAIServer(tokens=5), "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    srv.close()
    loop.run_until_complete(srv.wait_closed())
    loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, fake_model: str) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("tasks-home")
    ws = home / "workspace"
    ws.mkdir()
    (home / "bastion.yaml").write_text(yaml.safe_dump({
        "model": {"backend": "openai", "base_url": fake_model, "name": "fake",
                  "native_tools": True},
        "api": {"token": TOKEN},
        "agent": {"workspace": str(ws)},
        "memory": {"enabled": True, "semantic": False},
        "intelligence": {"enabled": False},
        "tasks": {"watch_debounce_ms": 100},
    }))
    with serving(home) as base:
        live = Live(base, home, ws)
        with live.api() as c:  # first, so its 10 s run while the other tests go
            r = c.post("/v1/tasks", json={"name": "tick", "prompt": "say hi",
                                          "schedule": {"kind": "every", "expr": "10s"}})
            assert r.status_code == 201, r.text
        yield live


def test_a_signed_webhook_starts_a_run_a_forged_or_replayed_one_does_not(live: Live) -> None:
    with live.api() as c:
        r = c.post("/v1/tasks", json={"name": "triage", "prompt": "triage the alert",
                                      "schedule": {"kind": "webhook"}})
        assert r.status_code == 201, r.text
        secret = r.json()["webhook_secret"]
        body = b'{"alert": "disk full on db1"}'
        ts, nonce = str(int(time.time())), secrets.token_hex(16)
        headers = {"X-Bastion-Timestamp": ts, "X-Bastion-Nonce": nonce,
                   "Content-Type": "application/json"}
        forged = c.post("/v1/tasks/triage/trigger", content=body, headers={
            **headers, "X-Bastion-Signature": signature("whsec_guess", ts, nonce, body)})
        assert forged.status_code == 401 and forged.json()["error"]["code"] == "bad_signature"
        signed = {**headers, "X-Bastion-Signature": signature(secret, ts, nonce, body)}
        ok = c.post("/v1/tasks/triage/trigger", content=body, headers=signed)
        if ENGINE:
            assert ok.status_code == 202 and ok.json()["run_id"], ok.text
        else:
            assert ok.status_code == 409 and ok.json()["error"]["code"] == "no_run_engine"
        replay = c.post("/v1/tasks/triage/trigger", content=body, headers=signed)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "replayed"
        fires = c.get("/v1/tasks/triage").json()["fires"]
    assert [f["kind"] for f in fires] == ["webhook"]
    run = _check_started(live, fires[0])
    if run is not None:  # the run got the request's body as its trigger's payload
        assert run["trigger"]["payload"] == body.decode()


def test_a_new_file_in_a_watched_folder_fires(live: Live) -> None:
    with live.api() as c:
        r = c.post("/v1/tasks", json={"name": "inbox", "prompt": "file the new documents",
                                      "schedule": {"kind": "file", "expr": "inbox"}})
        assert r.status_code == 201, r.text
    deadline = time.monotonic() + 10
    while not (live.workspace / "inbox").is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)  # the scheduler creates it and starts watching on its next tick
    time.sleep(1.0)
    (live.workspace / "inbox" / "invoice.pdf").write_bytes(b"%PDF-1.4 test")
    [fire] = live.fires("inbox")
    assert fire["kind"] == "file" and fire["detail"] == "1 new file(s) in inbox"
    run = _check_started(live, fire)
    if run is not None:
        assert run["trigger"]["payload"] == "inbox/invoice.pdf"


def test_run_now_from_another_process_reaches_the_server(live: Live) -> None:
    with live.api() as c:
        r = c.post("/v1/tasks", json={"name": "adhoc", "prompt": "check the inbox",
                                      "schedule": {"kind": "manual"}})
        assert r.status_code == 201, r.text
    done = _bastion("task", "run-now", "adhoc", home=live.home)  # the CLI: HOME/tasks.db
    if ENGINE:
        assert done.returncode == 0 and done.stdout.strip(), done.stderr
    else:
        assert done.returncode == 1 and NO_ENGINE in done.stderr, done.stderr
    [fire] = live.fires("adhoc")
    assert fire["kind"] == "manual" and fire["detail"] == "bastion task run-now"
    _check_started(live, fire)


def test_an_every_task_fires_from_the_servers_scheduler(live: Live) -> None:
    fires = live.fires("tick", deadline_s=30)
    assert fires[-1]["kind"] == "every" and fires[-1]["detail"] == "every 10"
    _check_started(live, fires[-1])
