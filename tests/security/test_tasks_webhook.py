"""Attacks on unattended tasks' API: forged, replayed and stale webhook triggers; another user's
task; a key without the scope; secrets where they must not be.

In-process API (``create_app``) over real SQLite (the task store, users and keys, the audit
log) with the scheduler's run engine replaced by a recording one; the live-server run of a
signed trigger is ``tests/integration/server/test_tasks_live.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bastion.app import build_app
from bastion.config.model import Config
from bastion.security.keystore import open_store
from bastion.server.app import create_app
from bastion.tasks.triggers import signature
from bastion.testing import ScriptedModel
from tests.fakes.run_starter import RecordingStarter

ADMIN = "tasks-admin-token-0123456789abcdef"


class World:
    def __init__(self, home: Path) -> None:
        self.home = home
        keys = open_store(home)
        try:
            for user in ("alice", "bob"):
                keys.add_user(user)
            self.alice = keys.create_key("alice", scopes=["tasks", "tasks:trigger"])[0]
            self.alice_chat = keys.create_key("alice", scopes=["chat"])[0]
            self.bob = keys.create_key("bob", scopes=["tasks", "tasks:trigger"])[0]
        finally:
            keys.close()
        self.client: TestClient | None = None
        self.starter = RecordingStarter()
        self.start()

    def start(self) -> None:
        """Start (or restart) the API over this home; one per module keeps the tests quick."""
        config = Config.model_validate({"api": {"token": ADMIN},
                                        "memory": {"enabled": False},
                                        "tasks": {"scheduler": False}})
        before = os.environ.get("BASTION_HOME")
        os.environ["BASTION_HOME"] = str(self.home)  # what start-up opens lives here
        try:
            self.app = build_app(config, model=ScriptedModel())
            self.client = TestClient(create_app(self.app, close_app=True))
            self.client.__enter__()
        finally:
            if before is None:
                os.environ.pop("BASTION_HOME", None)
            else:
                os.environ["BASTION_HOME"] = before
        state = self.client.app.state  # type: ignore[attr-defined]
        state.keystore = open_store(self.home)  # users and keys of this home, not a test's
        state.tasks.starter = self.starter

    def stop(self) -> None:
        assert self.client is not None
        self.client.__exit__(None, None, None)

    def call(self, key: str, method: str, path: str, **kw: object):  # type: ignore[no-untyped-def]
        assert self.client is not None
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}  # type: ignore[dict-item]
        return self.client.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]

    def trigger(self, key: str, name: str, secret: str, body: bytes = b'{"alert": "disk"}', *,
                ts: int | None = None, nonce: str | None = None, sig: str | None = None):  # type: ignore[no-untyped-def]
        ts = int(time.time()) if ts is None else ts
        nonce = nonce or secrets.token_hex(16)
        sig = sig or signature(secret, str(ts), nonce, body)
        return self.call(key, "POST", f"/v1/tasks/{name}/trigger", content=body, headers={
            "X-Bastion-Timestamp": str(ts), "X-Bastion-Nonce": nonce,
            "X-Bastion-Signature": sig, "Content-Type": "application/json"})


@pytest.fixture(scope="module")
def _world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("tasks-security-home"))
    yield w
    w.stop()


@pytest.fixture
def world(_world: World) -> World:
    """The module's API with no tasks and a fresh recording engine."""
    assert _world.client is not None
    sched = _world.client.app.state.tasks  # type: ignore[attr-defined]
    for task in sched.store.list_tasks():
        sched.store.remove(task.spec.owner, task.spec.name)
    _world.starter = RecordingStarter()
    sched.starter = _world.starter
    return _world


def _add_hook(world: World, key: str, name: str = "triage") -> str:
    r = world.call(key, "POST", "/v1/tasks", json={
        "name": name, "prompt": "triage this alert", "schedule": {"kind": "webhook"}})
    assert r.status_code == 201, r.text
    secret = r.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    return str(secret)


def test_a_signed_trigger_starts_one_run_with_the_body_as_payload(world: World) -> None:
    secret = _add_hook(world, world.alice)
    r = world.trigger(world.alice, "triage", secret)
    assert r.status_code == 202, r.text
    assert r.json() == {"task": "triage", "run_id": "run-1"}
    spec, trig = world.starter.started[0]
    assert (spec.owner, spec.name, trig.kind, trig.payload) == (
        "alice", "triage", "webhook", '{"alert": "disk"}')


def test_forged_signature_is_refused(world: World) -> None:
    secret = _add_hook(world, world.alice)
    forged = world.trigger(world.alice, "triage", "whsec_guessed")  # signed with a wrong key
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "bad_signature"
    ts, nonce = str(int(time.time())), secrets.token_hex(16)
    good = signature(secret, ts, nonce, b'{"alert": "disk"}')
    tampered = world.trigger(world.alice, "triage", secret, b'{"alert": "rm -rf"}',
                             ts=int(ts), nonce=nonce, sig=good)  # body changed under the MAC
    assert tampered.status_code == 401 and tampered.json()["error"]["code"] == "bad_signature"
    unsigned = world.call(world.alice, "POST", "/v1/tasks/triage/trigger", content=b"{}")
    assert unsigned.status_code == 422  # the signature headers are required
    assert world.starter.started == []


def test_replayed_nonce_is_refused_even_after_a_restart(world: World) -> None:
    secret = _add_hook(world, world.alice)
    ts, nonce = int(time.time()), secrets.token_hex(16)
    assert world.trigger(world.alice, "triage", secret, ts=ts, nonce=nonce).status_code == 202
    again = world.trigger(world.alice, "triage", secret, ts=ts, nonce=nonce)
    assert again.status_code == 401 and again.json()["error"]["code"] == "replayed"
    world.stop()
    world.start()  # bastion restarted: the nonce store is on disk
    again = world.trigger(world.alice, "triage", secret, ts=ts, nonce=nonce)
    assert again.status_code == 401 and again.json()["error"]["code"] == "replayed"
    assert len(world.starter.started) == 1


def test_stale_or_future_timestamp_is_refused(world: World) -> None:
    secret = _add_hook(world, world.alice)
    # a minute beyond the 300 s window either way: a loaded CI machine may take seconds between
    # computing the timestamp and the server reading its clock (+301 was accepted once so)
    for ts in (int(time.time()) - 360, int(time.time()) + 360):
        r = world.trigger(world.alice, "triage", secret, ts=ts)  # correctly signed, wrong time
        assert r.status_code == 401 and r.json()["error"]["code"] == "stale_timestamp"
    assert world.starter.started == []


def test_another_users_task_is_not_found(world: World) -> None:
    secret = _add_hook(world, world.alice)
    r = world.trigger(world.bob, "triage", secret)  # bob holds alice's secret, not her key
    assert r.status_code == 404, r.text
    for method, path in [("GET", "/v1/tasks/triage"), ("POST", "/v1/tasks/triage/pause"),
                         ("POST", "/v1/tasks/triage/run"), ("DELETE", "/v1/tasks/triage"),
                         ("POST", "/v1/tasks/triage/secret")]:
        r = world.call(world.bob, method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["message"].startswith("no task named 'triage'")
    assert world.call(world.bob, "GET", "/v1/tasks").json() == {"tasks": []}
    assert world.starter.started == []
    assert world.call(world.alice, "GET", "/v1/tasks/triage").json()["paused"] is False


def test_a_key_without_the_tasks_scope_is_refused(world: World) -> None:
    secret = _add_hook(world, world.alice)
    assert world.call(world.alice_chat, "GET", "/v1/tasks").status_code == 403
    assert world.trigger(world.alice_chat, "triage", secret).status_code == 403
    assert world.starter.started == []


def test_the_secret_is_shown_once_and_kept_nowhere(world: World) -> None:
    secret = _add_hook(world, world.alice)
    shown = world.call(world.alice, "GET", "/v1/tasks/triage").text
    listed = world.call(world.alice, "GET", "/v1/tasks").text
    assert secret not in shown and secret not in listed
    world.trigger(world.alice, "triage", secret)
    world.trigger(world.alice, "triage", "whsec_wrong")
    world.app.audit.flush()
    for path in world.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_an_oversized_body_is_refused_before_it_is_read(world: World) -> None:
    secret = _add_hook(world, world.alice)
    body = json.dumps({"x": "a" * 70_000}).encode()
    r = world.trigger(world.alice, "triage", secret, body)
    assert r.status_code == 413 and world.starter.started == []
