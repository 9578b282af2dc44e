"""The user and key store on a real SQLite file: hashing, lookup, revocation, expiry."""

from __future__ import annotations

import sqlite3
import stat
import time
from pathlib import Path

import pytest

from bastion.cli.users import parse_expiry
from bastion.errors import AuthError, ConfigError, NotFoundError
from bastion.security.keystore import KeyStore, key_id_of


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    s = KeyStore(tmp_path)
    yield s
    s.close()


def test_keys_are_stored_hashed_and_files_are_private(store: KeyStore, tmp_path: Path) -> None:
    store.add_user("alice")
    token, info = store.create_key("alice", scopes=["chat", "tools:read_*"])
    assert key_id_of(token) == info.id and len(token) >= 48
    raw = (tmp_path / "users.db").read_bytes()
    # bst_<key id>_<secret>; the secret is URL-safe base64 and may hold "_" itself
    secret = token.split("_", 2)[2].encode()
    assert len(secret) >= 32
    assert token.encode() not in raw and secret not in raw  # only the HMAC is stored
    db = sqlite3.connect(tmp_path / "users.db")
    assert db.execute("SELECT hash FROM keys").fetchone()[0] == store.digest(token)
    db.close()
    for name in ("users.db", "keys.pepper"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    who = store.authenticate(token)
    assert (who.user, who.key_id, who.tool_globs) == ("alice", info.id, ("read_*",))
    assert who.allows("chat") and not who.allows("audit:read")
    assert who.may_call("read_file") and not who.may_call("shell")


def test_a_copied_database_without_the_pepper_confirms_nothing(tmp_path: Path) -> None:
    a = KeyStore(tmp_path)
    a.add_user("alice")
    token, _ = a.create_key("alice")
    a.close()
    (tmp_path / "keys.pepper").unlink()  # the thief has users.db, not the pepper
    b = KeyStore(tmp_path)
    with pytest.raises(AuthError, match="wrong API key"):
        b.authenticate(token)
    b.close()


@pytest.mark.parametrize("tamper", ["bst_000000000000_x" * 3, "", "bst_", "not-a-key"])
def test_unknown_and_malformed_keys_are_refused(store: KeyStore, tamper: str) -> None:
    store.add_user("alice")
    store.create_key("alice")
    with pytest.raises(AuthError, match="wrong API key"):
        store.authenticate(tamper)


def test_a_key_with_a_real_id_but_another_secret_is_refused(store: KeyStore) -> None:
    store.add_user("alice")
    token, info = store.create_key("alice")
    forged = token[:17] + ("A" if token[17] != "A" else "B") + token[18:]
    with pytest.raises(AuthError, match="wrong API key"):
        store.authenticate(forged)


def test_revoked_expired_and_disabled_are_refused_at_once(store: KeyStore) -> None:
    store.add_user("alice")
    t1, k1 = store.create_key("alice")
    t2, _ = store.create_key("alice", expires_at=time.time() + 60)
    store.authenticate(t1)
    store.revoke(k1.id)
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate(t1)
    store.authenticate(t2)
    with pytest.raises(AuthError, match="expired"):
        store.authenticate(t2, now=time.time() + 61)
    store.set_disabled("alice")
    with pytest.raises(AuthError, match="disabled"):
        store.authenticate(t2)
    store.set_disabled("alice", False)
    store.authenticate(t2)


def test_rotate_gives_a_new_key_and_kills_the_old(store: KeyStore) -> None:
    store.add_user("bob", ["user", "approver"])
    old, info = store.create_key("bob", scopes=["chat", "approvals"], name="laptop")
    new, fresh = store.rotate(info.id)
    assert fresh.scopes == ("chat", "approvals") and fresh.name == "laptop"
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate(old)
    assert store.authenticate(new).roles == frozenset({"user", "approver"})


def test_the_api_token_becomes_and_stays_the_admins_key(store: KeyStore) -> None:
    store.ensure_admin("first-token-" + "x" * 30)
    admin = store.authenticate("first-token-" + "x" * 30)
    assert admin.user == "admin" and admin.is_admin and "approver" in admin.roles
    store.ensure_admin("first-token-" + "x" * 30)  # idempotent: one legacy key
    assert len(store.keys("admin")) == 1
    store.ensure_admin("second-token-" + "y" * 30)  # bastion config set api.token ...
    with pytest.raises(AuthError):
        store.authenticate("first-token-" + "x" * 30)
    assert store.authenticate("second-token-" + "y" * 30).user == "admin"


def test_bad_names_roles_scopes_and_expiry_are_one_line_errors(store: KeyStore) -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        store.add_user("carol", ["root"])
    with pytest.raises(ConfigError, match="user name"):
        store.add_user("a b")
    store.add_user("carol")
    with pytest.raises(ConfigError, match="exists"):
        store.add_user("carol")
    with pytest.raises(ConfigError, match="unknown scope"):
        store.create_key("carol", scopes=["everything"])
    with pytest.raises(NotFoundError):
        store.create_key("nobody")
    with pytest.raises(ConfigError, match="expiry"):
        parse_expiry("soon")
    assert parse_expiry("30d", now=0) == 30 * 86400
    store.remove_user("carol")
    assert [u.name for u in store.users()] == []


def test_sign_ins_under_way_are_kept_hashed_taken_once_and_expire(tmp_path: Path) -> None:
    """The OIDC state survives the store being reopened (a restart), is used once, expires,
    is bounded, and is on disk only as its HMAC."""
    state = "st-" + "x" * 40
    store = KeyStore(tmp_path)
    assert store.put_sign_in(state, "nonce-1", "verifier-1", "http://h/cb", ttl_s=60, most=2)
    assert store.put_sign_in("other", "n", "v", "http://h/cb", ttl_s=0.01, most=2)
    assert not store.put_sign_in("third", "n", "v", "http://h/cb", ttl_s=60, most=2)  # bound
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("users.db*"))
    assert b"verifier-1" in on_disk and state.encode() not in on_disk
    again = KeyStore(tmp_path)  # another process, or the same server restarted
    time.sleep(0.02)
    assert again.take_sign_in("other") is None  # expired
    assert again.take_sign_in(state) == ("nonce-1", "verifier-1", "http://h/cb")
    assert again.take_sign_in(state) is None  # once
    again.close()
