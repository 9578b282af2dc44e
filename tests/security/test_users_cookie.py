"""The browser sign-in cookie against a live ``python -m bastion serve`` (issue #19).

``POST /v1/auth/login`` with an API key sets ``bastion_session``; each test is an attack on
it: another site's page posting with the cookie (CSRF), a stolen-after-logout cookie, a
cookie outliving its key's revocation or its user's disabling, a chat-only key's cookie
reading the audit log, the cookie or the key showing up in the database, audit or answers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from bastion.security.keystore import open_store
from tests.integration.server.test_live_server import serving

TOKEN = "cookie-live-admin-token-0123456789abcdef"
EVIL = "http://evil.example"


@dataclass
class Served:
    base: str
    home: Path
    keys: dict[str, str]
    ids: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("cookie-home")
    (home / "bastion.yaml").write_text(yaml.safe_dump({
        "model": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "none"},
        "api": {"token": TOKEN},
        "memory": {"enabled": True, "semantic": False},
        "intelligence": {"enabled": False},
    }))
    store = open_store(home)
    keys, ids = {}, {}
    try:
        for user in ("alice", "bob", "carol"):
            store.add_user(user)
        for label, user, scopes in [
            ("alice", "alice", ("chat", "sessions:read", "sessions:write")),
            ("alice_chat", "alice", ("chat",)),
            ("bob", "bob", ("chat", "sessions:read", "sessions:write")),
            ("carol", "carol", ("chat", "sessions:read")),
        ]:
            keys[label], info = store.create_key(user, scopes=scopes)
            ids[label] = info.id
    finally:
        store.close()
    with serving(home) as base:
        yield Served(base, home, keys, ids)


def _login(served: Served, label: str) -> tuple[str, httpx.Response]:
    r = httpx.post(f"{served.base}/v1/auth/login", json={"api_key": served.keys[label]},
                   headers={"Origin": served.base})
    assert r.status_code == 200, r.text
    return r.cookies["bastion_session"], r


def _browser(served: Served, cookie: str) -> httpx.Client:
    """A client that, like a browser on this server's page, sends the cookie and Origin."""
    return httpx.Client(base_url=served.base, cookies={"bastion_session": cookie},
                        headers={"Origin": served.base}, timeout=60)


def test_login_sets_a_strict_httponly_cookie_that_acts_as_the_key(served: Served) -> None:
    cookie, r = _login(served, "alice")
    set_cookie = r.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert "Path=/" in set_cookie and "Secure" not in set_cookie  # plain http on loopback
    assert cookie.startswith("bss_") and len(cookie) >= 40
    assert served.keys["alice"] not in r.text and cookie not in r.text
    assert r.json()["user"] == "alice" and r.json()["via"] == "key"
    with _browser(served, cookie) as browser:
        me = browser.get("/v1/auth/me").json()
        assert me == {"user": "alice", "roles": ["user"], "via": "key",
                      "scopes": ["chat", "sessions:read", "sessions:write"],
                      "key_id": served.ids["alice"]}
        sid = browser.post("/v1/sessions").json()["id"]  # same origin: allowed
        assert sid in {s["id"] for s in browser.get("/v1/sessions").json()["data"]}
    with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {TOKEN}"}) as a:
        events = a.get("/v1/audit/events", params={"kind": "auth.login", "user": "alice"}
                       ).json()["events"]
        assert events[0]["detail"]["principal"] == {"user": "alice",
                                                    "key_id": served.ids["alice"]}
        dump = a.get("/v1/audit/export").text
    assert cookie not in dump and served.keys["alice"] not in dump
    db = sqlite3.connect(served.home / "users.db")  # stored only as its HMAC
    rows = db.execute("SELECT * FROM web_sessions").fetchall()
    db.close()
    assert rows and cookie not in repr(rows)


def test_a_cross_origin_post_with_the_cookie_is_refused(served: Served) -> None:
    cookie, _ = _login(served, "bob")
    jar = {"bastion_session": cookie}
    before = httpx.get(f"{served.base}/v1/sessions", cookies=jar).json()["data"]
    for headers in ({"Origin": EVIL}, {"Origin": "null"}, {},
                    {"Origin": served.base.replace("127.0.0.1", "localhost")}):
        r = httpx.post(f"{served.base}/v1/sessions", cookies=jar, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert r.json()["error"]["code"] == "cross_origin", r.text
        r = httpx.post(f"{served.base}/v1/auth/logout", cookies=jar, headers=headers)
        assert r.status_code == 403  # nor can another site sign bob out
    assert httpx.get(f"{served.base}/v1/sessions", cookies=jar).json()["data"] == before
    r = httpx.post(f"{served.base}/v1/auth/login", json={"api_key": served.keys["bob"]},
                   headers={"Origin": EVIL})  # nor sign this browser in as someone
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_the_cookie_carries_the_keys_scopes_only(served: Served) -> None:
    cookie, _ = _login(served, "alice_chat")
    with _browser(served, cookie) as browser:
        assert browser.get("/v1/models").status_code == 200
        for path in ("/v1/audit/events", "/v1/sessions"):
            r = browser.get(path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


def test_logout_ends_the_session_server_side(served: Served) -> None:
    cookie, _ = _login(served, "bob")
    with _browser(served, cookie) as browser:
        assert browser.get("/v1/auth/me").status_code == 200
        r = browser.post("/v1/auth/logout")
        assert r.status_code == 200 and r.json() == {"signed_out": True}
        assert 'bastion_session=""' in r.headers["set-cookie"]
    # a copy of the cookie kept by an attacker is dead too
    r = httpx.get(f"{served.base}/v1/auth/me", cookies={"bastion_session": cookie})
    assert r.status_code == 401 and "ended" in r.json()["error"]["message"]


def test_revoking_the_key_or_disabling_the_user_ends_their_cookies(served: Served) -> None:
    store = open_store(served.home)
    try:
        key, info = store.create_key("carol", scopes=["chat"])
    finally:
        store.close()
    served.keys["carol_tmp"] = key
    by_key, _ = _login(served, "carol_tmp")
    by_other, _ = _login(served, "carol")
    jar = {"bastion_session": by_key}
    assert httpx.get(f"{served.base}/v1/auth/me", cookies=jar).status_code == 200
    store = open_store(served.home)
    try:
        store.revoke(info.id)
    finally:
        store.close()
    r = httpx.get(f"{served.base}/v1/auth/me", cookies=jar)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    jar = {"bastion_session": by_other}
    assert httpx.get(f"{served.base}/v1/auth/me", cookies=jar).status_code == 200
    store = open_store(served.home)
    try:
        store.set_disabled("carol", True)
        r = httpx.get(f"{served.base}/v1/auth/me", cookies=jar)
        assert r.status_code == 401 and "disabled" in r.json()["error"]["message"]
    finally:
        store.set_disabled("carol", False)
        store.close()


def test_a_wrong_key_or_forged_cookie_gets_a_one_line_401(served: Served) -> None:
    wrong = "bst_0123456789ab_" + "x" * 43
    r = httpx.post(f"{served.base}/v1/auth/login", json={"api_key": wrong})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    err = r.json()["error"]
    assert err["message"].startswith("wrong API token") and wrong not in r.text
    r = httpx.get(f"{served.base}/v1/auth/me", cookies={"bastion_session": "bss_" + "A" * 43})
    assert r.status_code == 401 and "POST /v1/auth/login" in r.json()["error"]["fix"]


def test_a_cross_origin_websocket_with_the_cookie_is_refused(served: Served) -> None:
    """Cross-site WebSocket hijacking: another page opening the voice socket with the cookie."""
    from tests.security.test_f21_api_tokens import _ws_accepted

    cookie, _ = _login(served, "alice")
    url = served.base.replace("http://", "ws://") + "/v1/voice/ws"
    jar = {"Cookie": f"bastion_session={cookie}"}
    assert _ws_accepted(url, additional_headers=jar, origin=served.base)
    assert not _ws_accepted(url, additional_headers=jar, origin=EVIL)
    assert not _ws_accepted(url, additional_headers=jar)  # no Origin at all
