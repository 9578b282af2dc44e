"""Users and scoped API keys against a live ``python -m bastion serve`` (issue #19).

Two users (alice, bob) and their keys, made with the CLI, against one served home whose
model is the scripted OpenAI-compatible server. Each test is an attack: a chat-only key
reading the audit log, a revoked key, an expired key, a key whose ``tools:`` scope excludes
``shell`` asking the model to run it. Revocation is done with the CLI while the server runs:
refused on the very next request, no restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI, PermissionDeniedError

from bastion.security.keystore import open_store
from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.server.test_live_server import _bastion, serving

TOKEN = "users-live-admin-token-0123456789abcdef"


@dataclass
class Served:
    base: str
    home: Path
    keys: dict[str, str]  # label -> key
    ids: dict[str, str]  # label -> key id

    def api(self, label: str) -> httpx.Client:
        key = TOKEN if label == "admin" else self.keys[label]
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"},
                            timeout=60)


def _cli(home: Path, *args: str) -> str:
    done = _bastion(*args, home=home)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _new_key(home: Path, user: str, *scopes: str) -> tuple[str, str]:
    store = open_store(home)  # what `bastion keys create` calls (its CLI: test_users_cli.py)
    try:
        key, info = store.create_key(user, scopes=scopes)
    finally:
        store.close()
    return key, info.id


def _store_do(home: Path, method: str, *args: object) -> None:
    store = open_store(home)
    try:
        getattr(store, method)(*args)
    finally:
        store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("users-home")
    with FakeOpenAIServer() as fake:
        (home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},
            "api": {"token": TOKEN},
            "memory": {"enabled": True, "semantic": False},
            "intelligence": {"enabled": False},
        }))
        _cli(home, "users", "add", "alice")  # the CLI, once; the rest through its store
        _store_do(home, "add_user", "bob")
        keys, ids = {}, {}
        for label, user, scopes in [
            ("alice", "alice", ("chat", "sessions:read", "sessions:write", "tools:list_*")),
            ("alice_chat", "alice", ("chat",)),
            ("bob", "bob", ("chat", "sessions:read", "sessions:write", "knowledge:write")),
            ("doomed", "bob", ("chat",)),
        ]:
            keys[label], ids[label] = _new_key(home, user, *scopes)
        with serving(home) as base:
            yield Served(base, home, keys, ids)


def test_a_chat_only_key_cannot_read_the_audit_log(served: Served) -> None:
    with served.api("alice_chat") as api:
        for path in ("/v1/audit/events", "/v1/audit/stats", "/v1/audit/export",
                     "/v1/audit/verify", "/v1/sessions", "/v1/cluster", "/metrics"):
            r = api.get(path)
            assert r.status_code == 403, (path, r.text)
            err = r.json()["error"]
            assert err["code"] == "insufficient_scope" and "bastion keys create" in err["fix"]
        assert api.get("/v1/models").status_code == 200  # what chat allows works
    with served.api("admin") as api:
        assert api.get("/v1/audit/stats").status_code == 200


def test_the_official_openai_client_works_with_a_user_key(served: Served) -> None:
    client = OpenAI(base_url=f"{served.base}/v1", api_key=served.keys["alice_chat"],
                    max_retries=0, timeout=60)
    out = client.chat.completions.create(
        model="bastion-agent", messages=[{"role": "user", "content": "hello there"}])
    assert "echo: hello there" in (out.choices[0].message.content or "")
    bob = OpenAI(base_url=f"{served.base}/v1", api_key=served.keys["bob"], max_retries=0)
    with pytest.raises(PermissionDeniedError):  # bob's key has no models:admin
        bob.get("/models/pulled", cast_to=httpx.Response)


def test_a_revoked_key_is_refused_on_the_next_request(served: Served) -> None:
    with served.api("doomed") as api:
        assert api.get("/v1/models").status_code == 200
        _cli(served.home, "keys", "revoke", served.ids["doomed"])  # while the server runs
        r = api.get("/v1/models")
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        assert served.keys["doomed"] not in r.text


def test_an_expired_key_is_refused(served: Served) -> None:
    store = open_store(served.home)
    try:
        key, info = store.create_key("bob", scopes=["chat"], expires_at=time.time() + 1.5)
    finally:
        store.close()
    with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.get("/v1/models").status_code == 200
        time.sleep(1.6)
        r = api.get("/v1/models")
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_a_disabled_user_is_refused_and_enabled_again(served: Served) -> None:
    _store_do(served.home, "add_user", "carol")
    key, _ = _new_key(served.home, "carol", "chat")
    with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.get("/v1/models").status_code == 200
        _store_do(served.home, "set_disabled", "carol", True)
        r = api.get("/v1/models")
        assert r.status_code == 401 and "disabled" in r.json()["error"]["message"]
        _store_do(served.home, "set_disabled", "carol", False)
        assert api.get("/v1/models").status_code == 200


def test_a_tool_outside_the_keys_tools_scope_is_refused_at_the_gateway(served: Served) -> None:
    with served.api("alice") as api:
        r = api.post("/v1/sessions/alice-tools/messages",
                     json={"content": "run shell: echo pwned > /tmp/x", "stream": False})
        assert r.status_code == 200, r.text
        body = r.json()
        # the model saw the gateway's refusal as the tool result and repeated its first line
        assert "shell refused: this API key" in body["answer"], body
        assert "tools matching list_*" in body["answer"]
    with served.api("admin") as api:
        events = api.get("/v1/audit/events", params={"user": "alice", "tool": "shell"}).json()
    rec = events["events"][0]
    assert rec["decision"] == "denied" and rec["tool"] == "shell"
    assert rec["detail"]["principal"] == {"user": "alice", "key_id": served.ids["alice"]}


def test_audit_records_name_the_user_and_key_and_filter_by_user(served: Served) -> None:
    with served.api("bob") as api:
        assert api.post("/v1/sessions/bob-audit/messages",
                        json={"content": "hi from bob", "stream": False}).status_code == 200
    out = _cli(served.home, "audit", "events", "--user", "bob", "--json", "-n", "200")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(r["detail"]["principal"]["user"] == "bob" for r in rows)
    store = open_store(served.home)
    try:
        bobs = {k.id for k in store.keys("bob")}
    finally:
        store.close()
    assert served.ids["bob"] in {r["detail"]["principal"]["key_id"] for r in rows}
    assert {r["detail"]["principal"]["key_id"] for r in rows} <= bobs
