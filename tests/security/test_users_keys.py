"""Users and scoped API keys against a live ``python -m bastion serve`` (issue #19).

Two users (alice, bob) and their keys against one served home whose model is the scripted
OpenAI-compatible server, with real SQLite sessions and the real embedding model. Each test
is an attack: a chat-only key reading the audit log, a revoked key, an expired key, a key
whose ``tools:`` scope excludes ``shell`` asking the model to run it, and bob trying to read,
search, export, continue, rename or delete alice's sessions and documents (404, the answer a
session that does not exist gets: no existence oracle). Revocation is done with the CLI while
the server runs: refused on the very next request, no restart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI, PermissionDeniedError

from bastion.security.identity import Quota
from bastion.security.keystore import open_store
from tests.fakes.scripted_chat_server import FakeOpenAIServer, ScriptedHandler
from tests.integration.server.test_live_server import _bastion, serving

TOKEN = "users-live-admin-token-0123456789abcdef"


class _UsageHandler(ScriptedHandler):
    """The scripted model, reporting token usage like llama.cpp's server (include_usage)."""

    def _script(self, body: dict[str, object]) -> Iterator[bytes]:
        for piece in super()._script(body):  # type: ignore[arg-type]
            if piece.startswith(b"data: ") and b'"finish_reason": "stop"' in piece:
                yield piece
                usage = {"id": "u", "object": "chat.completion.chunk", "model": "fake",
                         "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 10,
                                                  "total_tokens": 40}}
                yield f"data: {json.dumps(usage)}\n\n".encode()
            else:
                yield piece


@dataclass
class Served:
    base: str
    home: Path
    keys: dict[str, str]  # label -> key
    ids: dict[str, str]  # label -> key id

    def api(self, label: str) -> httpx.Client:
        key = TOKEN if label == "admin" else self.keys[label]
        return httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {key}"},
                            timeout=300)


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
    with FakeOpenAIServer(_UsageHandler) as fake:
        (home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},
            "api": {"token": TOKEN},
            "memory": {"enabled": True, "semantic": True},
            "intelligence": {"enabled": False},
        }))
        _cli(home, "users", "add", "alice")  # the CLI, once; the rest through its store
        _store_do(home, "add_user", "bob")
        keys, ids = {}, {}
        for label, user, scopes in [
            ("alice", "alice", ("chat", "sessions:read", "sessions:write", "knowledge:write",
                                "tools:list_*")),
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
                    max_retries=0, timeout=300)
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


@pytest.fixture(scope="module")
def alices(served: Served) -> dict[str, str]:
    """Alice's session (a server-made id) with a secret in it, and her ingested document."""
    with served.api("alice") as api:
        sid = api.post("/v1/sessions").json()["id"]
        r = api.post(f"/v1/sessions/{sid}/messages",
                     json={"content": "the spare key hides under the blue tulip pot",
                           "stream": False})
        assert r.status_code == 200, r.text
        r = api.post("/v1/ingest", json={"documents": [
            {"name": "plans.md", "content": "# Plans\n\nThe vault code is 4711 tulip."}]})
        assert r.json()["data"][0]["status"] == "added", r.text
        doc = api.get("/v1/knowledge").json()["data"][0]["id"]
    return {"sid": sid, "doc": doc}


def _not_found_like_nothing(r: httpx.Response, ghost: httpx.Response) -> None:
    """Another user's thing gets exactly what a thing that does not exist gets."""
    assert r.status_code == ghost.status_code == 404, (r.text, ghost.text)
    a, b = r.json()["error"], ghost.json()["error"]
    assert (a["code"], a["type"], a["fix"]) == (b["code"], b["type"], b["fix"])


def test_bob_cannot_reach_alices_sessions(served: Served, alices: dict[str, str]) -> None:
    sid, ghost = alices["sid"], "0123456789ab"
    assert len(sid) >= 12 and all(c in "0123456789abcdef" for c in sid)  # server-made, random
    with served.api("bob") as bob:
        assert sid not in {s["id"] for s in bob.get("/v1/sessions").json()["data"]}
        r = bob.post("/v1/search", json={"query": "spare key", "session": sid})
        assert r.status_code == 404  # (below, posting to that id makes bob a session of it)
        for method in ("GET", "POST"):  # undo: what a session without undoable calls gets
            r = bob.request(method, f"/v1/sessions/{sid}/undo")
            g = bob.request(method, f"/v1/sessions/{ghost}/undo")
            assert r.status_code == g.status_code
            assert r.text.replace(sid, ghost) == g.text
        for method, path, body in [
            ("GET", "/v1/sessions/{}", None),
            ("GET", "/v1/sessions/{}/export", None),
            ("GET", "/v1/sessions/{}/export?format=markdown", None),
            ("PATCH", "/v1/sessions/{}", {"name": "mine-now"}),
            ("DELETE", "/v1/sessions/{}", None),
            ("POST", "/v1/sessions/{}/messages", {"content": "what hides under the pot?",
                                                  "stream": False}),
        ]:
            r = bob.request(method, path.format(sid), json=body)
            g = bob.request(method, path.format(ghost), json=body)
            if method == "POST":  # alice's id, like any id bob has not: a new session of his
                assert r.status_code == g.status_code == 200, (r.text, g.text)
            else:
                _not_found_like_nothing(r, g)
            assert "tulip" not in r.text
        r = bob.post("/v1/chat/completions", headers={"X-Bastion-Session": sid}, json={
            "model": "bastion-agent", "messages": [{"role": "user", "content": "continue"}]})
        assert r.status_code == 200 and "tulip" not in r.text  # his own session of that name
    with served.api("alice") as api:  # untouched: still there, still alice's words only
        msgs = api.get(f"/v1/sessions/{sid}").json()["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        assert "tulip pot" in msgs[0]["content"]


def test_bob_cannot_search_or_touch_alices_documents(
        served: Served, alices: dict[str, str]) -> None:
    with served.api("bob") as bob:
        hits = bob.post("/v1/search", json={"query": "where is the spare key? vault code"}
                        ).json()["data"]
        assert hits == [] or all("tulip" not in h["text"] and "4711" not in h["text"]
                                 for h in hits)
        assert bob.get("/v1/knowledge").json()["data"] == []
        assert bob.delete(f"/v1/knowledge/{alices['doc']}").status_code == 404
        assert bob.delete("/v1/knowledge/plans.md").status_code == 404
        # bob's own plans.md is another document: alice's is not replaced
        r = bob.post("/v1/ingest", json={"documents": [
            {"name": "plans.md", "content": "# Plans\n\nBob's code is 1234."}]})
        assert r.json()["data"][0]["status"] == "added"
        assert [d["source"] for d in bob.get("/v1/knowledge").json()["data"]] == ["plans.md"]
    with served.api("alice") as api:
        hits = api.post("/v1/search", json={"query": "vault code"}).json()["data"]
        texts = " ".join(h["text"] for h in hits)
        assert "4711" in texts and "1234" not in texts


def test_admin_sees_everyone_only_when_asking_and_it_is_audited(
        served: Served, alices: dict[str, str]) -> None:
    with served.api("admin") as admin:
        assert alices["sid"] not in {s["id"] for s in admin.get("/v1/sessions").json()["data"]}
        every = admin.get("/v1/sessions", params={"all_users": "true"}).json()["data"]
        assert alices["sid"] in {s["id"] for s in every}
        assert admin.get(f"/v1/sessions/{alices['sid']}",
                         params={"all_users": "true"}).status_code == 200
        events = admin.get("/v1/audit/events", params={"kind": "access.all_users"}).json()
        paths = {e["detail"]["path"] for e in events["events"]}
        assert {"/v1/sessions", f"/v1/sessions/{alices['sid']}"} <= paths
        assert all(e["detail"]["principal"]["user"] == "admin" for e in events["events"])
    with served.api("bob") as bob:
        r = bob.get("/v1/sessions", params={"all_users": "true"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


def test_approvals_go_to_the_owner_or_an_approver_only(served: Served) -> None:
    _store_do(served.home, "add_user", "olga", ["user", "approver"])
    olga_key, olga_id = _new_key(served.home, "olga", "approvals")
    bob_appr, _ = _new_key(served.home, "bob", "approvals")
    alice_all, alice_id = _new_key(served.home, "alice", "chat", "sessions:write", "approvals")
    H = {"Authorization": f"Bearer {alice_all}"}  # noqa: N806
    with httpx.Client(base_url=served.base, headers=H, timeout=300) as alice:
        sid = alice.post("/v1/sessions").json()["id"]
        turn: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: turn.setdefault("r", alice.post(
            f"/v1/sessions/{sid}/messages",
            json={"content": "run shell: rm -rf ./precious", "stream": False})))
        worker.start()
        pending: list[dict[str, object]] = []
        deadline = time.monotonic() + 120
        while not pending and time.monotonic() < deadline:
            time.sleep(0.3)
            pending = alice.get("/v1/approvals").json()["pending"]
        assert pending and pending[0]["session_id"] == sid
        aid = str(pending[0]["id"])
        bob = httpx.Client(base_url=served.base, timeout=60,
                           headers={"Authorization": f"Bearer {bob_appr}"})
        assert bob.get("/v1/approvals").json()["pending"] == []
        assert bob.get(f"/v1/approvals/{aid}").status_code == 404
        assert bob.post(f"/v1/approvals/{aid}", json={"approve": True}).status_code == 404
        olga = httpx.Client(base_url=served.base, timeout=60,
                            headers={"Authorization": f"Bearer {olga_key}"})
        assert [p["id"] for p in olga.get("/v1/approvals").json()["pending"]] == [aid]
        assert olga.post(f"/v1/approvals/{aid}", json={"approve": False,
                                                       "reason": "not today"}).status_code == 200
        worker.join(120)
        assert turn["r"].status_code == 200
    with served.api("admin") as admin:
        recs = admin.get("/v1/audit/events", params={"kind": "approval.decision",
                                                     "session_id": sid}).json()["events"]
    text = json.dumps(recs[0])
    assert "api:olga" in text  # who decided
    assert recs[0]["detail"]["principal"] == {"user": "alice", "key_id": alice_id}  # who asked


def _limited_key(served: Served, user: str, quota: Quota) -> str:
    store = open_store(served.home)
    try:
        store.add_user(user)
        key, _ = store.create_key(user, scopes=["chat", "sessions:write"], quota=quota)
    finally:
        store.close()
    return key


def test_request_quota_429_retry_after_and_refill(served: Served) -> None:
    key = _limited_key(served, "rita", Quota(requests="3/4 seconds"))
    with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {key}"}) as api:
        assert [api.get("/v1/models").status_code for _ in range(3)] == [200, 200, 200]
        r = api.get("/v1/models")
        assert r.status_code == 429, r.text
        err = r.json()["error"]
        assert err["code"] == "quota_exceeded"
        assert "has used its requests quota (3 per 4 seconds)" in err["message"]
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 4 and f"retry after {wait} s" in err["fix"]
        time.sleep(wait + 0.2)
        assert api.get("/v1/models").status_code == 200  # the window refilled


def test_token_quota_refuses_the_next_turn_and_survives_a_restart(served: Served) -> None:
    key = _limited_key(served, "tom", Quota(tokens="50/day", concurrent=1))
    H = {"Authorization": f"Bearer {key}"}  # noqa: N806
    with httpx.Client(base_url=served.base, headers=H, timeout=300) as api:
        r = api.post("/v1/sessions/tom-1/messages", json={"content": "hi", "stream": False})
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] >= 30
        r = api.post("/v1/sessions/tom-1/messages", json={"content": "again", "stream": False})
        assert r.status_code == 200  # 40 of 50 spent before it: it may start, and spends 40
        r = api.post("/v1/sessions/tom-1/messages", json={"content": "more", "stream": False})
        assert r.status_code == 429 and "tokens quota (50 per day)" in r.json()["error"]["message"]
        assert int(r.headers["Retry-After"]) > 80_000
    with serving(served.home) as again:  # a second server process on the same home
        r = httpx.post(f"{again}/v1/sessions/tom-2/messages", headers=H, timeout=300,
                       json={"content": "new day?", "stream": False})
        assert r.status_code == 429  # the counters are on disk, not in the old process


def test_the_voice_websocket_takes_the_same_keys_and_scopes(served: Served) -> None:
    from tests.security.test_f21_api_tokens import _ws_accepted

    url = served.base.replace("http://", "ws://") + "/v1/voice/ws"
    chat_key, _ = _new_key(served.home, "bob", "chat")
    no_chat, _ = _new_key(served.home, "bob", "sessions:read")
    revoked, revoked_id = _new_key(served.home, "bob", "chat")
    _store_do(served.home, "revoke", revoked_id)
    assert _ws_accepted(url, additional_headers={"Authorization": f"Bearer {chat_key}"})
    assert _ws_accepted(url, subprotocols=["bastion", f"bastion.token.{chat_key}"])
    assert not _ws_accepted(url, additional_headers={"Authorization": f"Bearer {no_chat}"})
    assert not _ws_accepted(url, subprotocols=["bastion", f"bastion.token.{revoked}"])


def test_tool_call_quota_is_counted_at_the_gateway(served: Served) -> None:
    key = _limited_key(served, "tess", Quota(tool_calls="1/day"))
    H = {"Authorization": f"Bearer {key}"}  # noqa: N806
    with httpx.Client(base_url=served.base, headers=H, timeout=300) as api:
        r = api.post("/v1/sessions/tess-1/messages",
                     json={"content": "count files please", "stream": False})
        assert r.status_code == 200, r.text
        assert [s["name"] for s in r.json()["tool_steps"]] == ["list_files"]
        r = api.post("/v1/sessions/tess-1/messages",
                     json={"content": "count files again", "stream": False})
        assert r.status_code == 429
        assert "tool calls quota (1 per day)" in r.json()["error"]["message"]


def test_bobs_search_is_not_starved_by_alices_documents(
        served: Served, alices: dict[str, str]) -> None:
    """The owner filter is inside the vector query: alice's many close documents cannot push
    bob's own out of his top-k (a filter after top-k would leave him nothing)."""
    with served.api("alice") as api:
        r = api.post("/v1/ingest", json={"documents": [
            {"name": f"vault-{n}.md",
             "content": f"# Vault {n}\n\nThe vault access code for door {n} is {4700 + n}."}
            for n in range(12)]})
        assert all(d["status"] == "added" for d in r.json()["data"]), r.text
    with served.api("bob") as bob:
        r = bob.post("/v1/ingest", json={"documents": [
            {"name": "garden.md", "content": "# Garden\n\nBob keeps the shed key by the vault "
                                             "of roses; the code there is 1234."}]})
        assert r.json()["data"][0]["status"] == "added"
        hits = bob.post("/v1/search", json={"query": "vault access code for the door", "k": 3,
                                            "documents": True}).json()["data"]
    sources = [h["source"] for h in hits]
    assert "garden.md" in sources, hits
    assert not any(s.startswith("vault-") for s in sources)


def test_choosing_a_session_id_reveals_nothing_about_other_users(served: Served) -> None:
    """No existence oracle in chosen ids: bob picking an id alice has gets exactly what he
    gets for one nobody has."""
    with served.api("alice") as alice:
        assert alice.post("/v1/sessions", json={"id": "alice-plans"}).status_code == 201
    with served.api("bob") as bob:
        a = bob.post("/v1/sessions", json={"id": "alice-plans"})
        b = bob.post("/v1/sessions", json={"id": "alice-no-such-plans"})
        assert a.status_code == b.status_code, (a.text, b.text)
        assert bob.post("/v1/sessions", json={"id": "alice-plans"}).status_code == 409  # his own


def _messages(api: httpx.Client, name: str) -> list[str]:
    r = api.get(f"/v1/sessions/{name}")
    assert r.status_code == 200, r.text
    return [m["content"] for m in r.json()["messages"]]


def test_renaming_to_a_name_another_user_has_reveals_nothing(served: Served) -> None:
    with served.api("alice") as alice:
        assert alice.post("/v1/sessions", json={"id": "alice-diary"}).status_code == 201
    with served.api("bob") as bob:
        for scratch in ("bob-scratch-1", "bob-scratch-2"):
            assert bob.post("/v1/sessions", json={"id": scratch}).status_code == 201
        a = bob.patch("/v1/sessions/bob-scratch-1", json={"name": "alice-diary"})
        b = bob.patch("/v1/sessions/bob-scratch-2", json={"name": "nobody-diary"})
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        assert bob.patch("/v1/sessions/nobody-diary", json={"name": "alice-diary"}
                         ).status_code == 409  # his own names still clash
    with served.api("alice") as alice:  # hers is still hers, under its name
        assert "alice-diary" in {s["name"] for s in alice.get("/v1/sessions").json()["data"]}


def test_posting_to_a_name_another_user_has_is_a_session_of_ones_own(served: Served) -> None:
    with served.api("alice") as alice:
        r = alice.post("/v1/sessions/alice-notes/messages",
                       json={"content": "the safe code is 8812 tulip", "stream": False})
        assert r.status_code == 200, r.text
    with served.api("bob") as bob:
        for name in ("alice-notes", "nobody-notes"):  # the path and the header alike
            r = bob.post(f"/v1/sessions/{name}/messages",
                         json={"content": "bob was here", "stream": False})
            assert r.status_code == 200, r.text
            r = bob.post("/v1/chat/completions", headers={"X-Bastion-Session": name}, json={
                "model": "bastion-agent", "messages": [{"role": "user", "content": "and here"}]})
            assert r.status_code == 200 and "8812" not in r.text, r.text
            assert _messages(bob, name) == ["bob was here", "echo: bob was here", "and here",
                                            "echo: and here"]
    with served.api("alice") as alice:
        assert _messages(alice, "alice-notes") == ["the safe code is 8812 tulip",
                                                   "echo: the safe code is 8812 tulip"]


def test_both_users_have_a_session_called_main_and_cannot_touch_each_others(
        served: Served) -> None:
    """Alice's turn in her "main" waits for an approval; meanwhile bob's "main" is a session
    like any other of his: not busy, not hers to read, export, delete or list approvals of."""
    alice_key, _ = _new_key(served.home, "alice", "chat", "sessions:read", "sessions:write",
                            "approvals")
    bob_key, _ = _new_key(served.home, "bob", "chat", "sessions:read", "sessions:write",
                          "approvals")
    alice = httpx.Client(base_url=served.base, timeout=300,
                         headers={"Authorization": f"Bearer {alice_key}"})
    bob = httpx.Client(base_url=served.base, timeout=300,
                       headers={"Authorization": f"Bearer {bob_key}"})
    with alice, bob:
        assert alice.post("/v1/sessions", json={"id": "main"}).status_code == 201
        assert alice.post("/v1/sessions/main/messages", json={
            "content": "the spare key hides under the red tulip", "stream": False}
        ).status_code == 200
        turn: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: turn.setdefault("r", alice.post(
            "/v1/sessions/main/messages",
            json={"content": "run shell: rm -rf ./precious", "stream": False})))
        worker.start()
        try:
            pending: list[dict[str, object]] = []
            deadline = time.monotonic() + 120
            while not pending and time.monotonic() < deadline:
                time.sleep(0.3)
                pending = alice.get("/v1/approvals", params={"session_id": "main"}
                                    ).json()["pending"]
            assert pending, "alice's call never waited for approval"
            for name in ("main", "nobody-main"):  # what bob gets for hers = for nobody's
                for method, path in [("GET", "/v1/sessions/{}"),
                                     ("GET", "/v1/sessions/{}/export"),
                                     ("DELETE", "/v1/sessions/{}")]:
                    r = bob.request(method, path.format(name))
                    assert r.status_code == 404, (name, method, path, r.text)
                assert bob.get("/v1/approvals", params={"session_id": name}
                               ).json()["pending"] == []
            assert bob.post("/v1/sessions", json={"id": "main"}).status_code == 201
            r = bob.post("/v1/sessions/main/messages",  # hers is busy: his is not
                         json={"content": "bob's own words", "stream": False})
            assert r.status_code == 200, r.text
            assert _messages(bob, "main") == ["bob's own words", "echo: bob's own words"]
            export = bob.get("/v1/sessions/main/export").text
            assert "bob's own words" in export and "tulip" not in export
            assert bob.get("/v1/approvals", params={"session_id": "main"}).json()["pending"] == []
            assert bob.delete("/v1/sessions/main").status_code == 200  # his own
        finally:
            for p in alice.get("/v1/approvals").json()["pending"]:  # alice's turn ends
                assert alice.post(f"/v1/approvals/{p['id']}",
                                  json={"approve": False}).status_code == 200
            worker.join(120)
        assert turn["r"].status_code == 200
        msgs = _messages(alice, "main")
        assert msgs[0] == "the spare key hides under the red tulip"
        assert "bob's own words" not in msgs and len(msgs) >= 4
