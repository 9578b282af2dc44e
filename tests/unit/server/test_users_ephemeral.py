"""Isolation with memory off (sessions in the process); session names per owner (#19)."""

from __future__ import annotations

from bastion.security.keystore import open_store
from bastion.testing import say


def test_each_user_has_their_own_in_process_session_of_a_name(make_api) -> None:  # type: ignore[no-untyped-def]
    """Names are unique per owner: bob's "shared-name" is his own, alice's is out of reach."""
    api = make_api(say("alice's answer"), say("bob's answer"), say("bob's second"),
                   memory={"enabled": False})
    store = open_store()
    for user in ("alice", "bob"):
        store.add_user(user)
    alice, _ = store.create_key("alice", scopes=["chat", "sessions:read"])
    bob, _ = store.create_key("bob", scopes=["chat", "sessions:read"])
    store.close()
    a = {"Authorization": f"Bearer {alice}"}
    b = {"Authorization": f"Bearer {bob}"}
    r = api.client.post("/v1/sessions/shared-name/messages", headers=a,
                        json={"content": "the code is 4711", "stream": False})
    assert r.status_code == 200 and "alice's answer" in r.text
    r = api.client.get("/v1/sessions/shared-name", headers=b)  # as for a name nobody has
    g = api.client.get("/v1/sessions/no-such-name", headers=b)
    assert r.status_code == g.status_code == 404 and "4711" not in r.text
    r = api.client.post("/v1/sessions/shared-name/messages", headers=b,
                        json={"content": "what was the code?", "stream": False})
    assert r.status_code == 200 and "4711" not in r.text
    r = api.client.post("/v1/chat/completions", headers={**b, "X-Bastion-Session": "shared-name"},
                        json={"model": "bastion-agent",
                              "messages": [{"role": "user", "content": "and now?"}]})
    assert r.status_code == 200 and "4711" not in r.text
    bobs = api.client.get("/v1/sessions/shared-name", headers=b).json()["messages"]
    assert [m["content"] for m in bobs] == ["what was the code?", "bob's answer", "and now?",
                                            "bob's second"]
    alices = api.client.get("/v1/sessions/shared-name", headers=a).json()["messages"]
    assert [m["content"] for m in alices] == ["the code is 4711", "alice's answer"]


def test_a_name_two_users_have_is_ambiguous_only_where_no_owner_applies(make_api) -> None:  # type: ignore[no-untyped-def]
    """The admin's all_users reads a name several users have as 409 asking for the id."""
    api = make_api()  # persistent (SQLite) sessions
    store = open_store()
    ids = {}
    for user in ("alice", "bob"):
        store.add_user(user)
        key, _ = store.create_key(user, scopes=["sessions:read", "sessions:write"])
        h = {"Authorization": f"Bearer {key}"}
        assert api.client.post("/v1/sessions", headers=h, json={"id": "main"}).status_code == 201
        ids[user] = next(s["id"] for s in api.client.get("/v1/sessions", headers=h).json()["data"]
                         if s["name"] == "main")
    store.close()
    assert ids["alice"] != ids["bob"]
    assert api.client.get("/v1/sessions/main").status_code == 404  # the admin's own: none
    r = api.client.get("/v1/sessions/main/export", params={"all_users": "true"})
    assert r.status_code == 409, r.text
    assert "several users have a session named 'main'" in r.json()["error"]["message"]
    assert "id" in r.json()["error"]["fix"]
    r = api.client.get(f"/v1/sessions/{ids['bob']}/export", params={"all_users": "true"})
    assert r.status_code == 200 and r.json()["session"]["id"] == ids["bob"]
