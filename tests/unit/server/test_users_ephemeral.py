"""Isolation holds with memory switched off too (sessions in the process, issue #19)."""

from __future__ import annotations

from bastion.security.keystore import open_store
from bastion.testing import say


def test_another_users_in_process_session_is_404(make_api) -> None:  # type: ignore[no-untyped-def]
    api = make_api(say("alice's answer"), say("never"), memory={"enabled": False})
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
    r = api.client.get("/v1/sessions/shared-name", headers=b)
    assert r.status_code == 404 and "4711" not in r.text
    r = api.client.post("/v1/sessions/shared-name/messages", headers=b,
                        json={"content": "what was the code?", "stream": False})
    assert r.status_code == 404 and "4711" not in r.text
    r = api.client.post("/v1/chat/completions", headers={**b, "X-Bastion-Session": "shared-name"},
                        json={"model": "bastion-agent",
                              "messages": [{"role": "user", "content": "and now?"}]})
    assert r.status_code == 404
    assert api.client.get("/v1/sessions/shared-name", headers=a).json()["total"] == 2
