"""Users and their API keys, in one SQLite file under the bastion home (0600).

A key is ``bst_<id>_<secret>``: the 12-hex-digit id is public (lists, audit records) and
finds the row; only ``HMAC-SHA-256(pepper, key)`` is stored, compared in constant time.
The pepper (32 random bytes, ``HOME/keys.pepper``, 0600) is not in the database, so a
copied ``users.db`` alone cannot confirm a guessed key. API keys carry 256 random bits, so
a slow password KDF (argon2) would add ~50 ms to every request and no protection.

The api.token of ``bastion init`` is the admin's key (``legacy``): a token of any form,
found by its HMAC, kept equal to the configured token at every start, so a one-person
setup changes nothing.

Every request reads the key's row, so a revocation, expiry or disabled user takes effect
on the next request, in every process sharing the home, without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import AuthError, ConfigError, NotFoundError
from bastion.security.identity import ROLES, Principal, Quota, make_principal, scope_problem

KEY_PREFIX = "bst_"
ID_HEX = 12
MIN_KEY_CHARS = 32
LAST_USED_EVERY_S = 60.0  # last-used is written at most this often per key
ADMIN = "admin"
LEGACY_NAME = "api.token"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    roles TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_used REAL,
    revoked_at REAL,
    legacy INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS web_sessions (
    hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id TEXT REFERENCES keys(id) ON DELETE CASCADE,
    scopes TEXT NOT NULL,
    via TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sso_links (
    subject TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS sso_pending (
    hash TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    redirect_url TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""
SESSION_PREFIX = "bss_"
VIA = ("key", "oidc")


@dataclass(frozen=True, slots=True)
class UserInfo:
    """One user as listed."""

    name: str
    roles: tuple[str, ...]
    disabled: bool
    created_at: float
    keys: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {"name": self.name, "roles": list(self.roles), "disabled": self.disabled,
                "created_at": self.created_at, "keys": self.keys}


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key as listed (never its secret)."""

    id: str
    user: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    last_used: float | None
    revoked_at: float | None
    quota: Quota = Quota()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {"id": self.id, "user": self.user, "name": self.name,
                "scopes": list(self.scopes), "created_at": self.created_at,
                "expires_at": self.expires_at, "last_used": self.last_used,
                "revoked_at": self.revoked_at, "quota": self.quota.to_dict()}

    def state(self, now: float | None = None) -> str:
        """Return ``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or time.time()):
            return "expired"
        return "active"


def _private_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.chmod(0o600)


def load_pepper(path: Path) -> bytes:
    """Return the pepper at ``path``, created (32 random bytes, mode 0600) when missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        data = path.read_bytes()
        if len(data) < 32:
            raise ConfigError(f"the key pepper {path} is damaged ({len(data)} bytes)",
                              fix=f"restore it from a backup; without it no key works "
                                  f"(or remove it and create every key again: rm {path})"
                              ) from exc
        return data
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def key_id_of(token: str) -> str | None:
    """Return the id of a ``bst_`` key (``None`` for a token of another form)."""
    if (token.startswith(KEY_PREFIX) and len(token) > len(KEY_PREFIX) + ID_HEX + 1
            and token[len(KEY_PREFIX) + ID_HEX] == "_"):
        kid = token[len(KEY_PREFIX):len(KEY_PREFIX) + ID_HEX]
        if all(c in "0123456789abcdef" for c in kid):
            return kid
    return None


class KeyStore:
    """The users and keys of one bastion home."""

    def __init__(self, home: Path) -> None:
        self.path = home / "users.db"
        self.pepper = load_pepper(home / "keys.pepper")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0,
                                   isolation_level=None)
        _private_file(self.path)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)
        for table in ("users", "keys"):  # quotas (added after the first release of this file)
            cols = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if "quota" not in cols:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN quota TEXT")
        self._used: dict[str, float] = {}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def digest(self, token: str) -> str:
        """Return the stored form of ``token``: HMAC-SHA-256 under the pepper, hex."""
        return hmac.new(self.pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()

    # ---- users --------------------------------------------------------------------------
    def _user_id(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no user named {name!r}", fix="bastion users list")
        return int(row[0])

    def add_user(self, name: str, roles: list[str] | tuple[str, ...] = ("user",)) -> UserInfo:
        """Create a user with ``roles``."""
        name = name.strip()
        if not name or len(name) > 64 or any(c.isspace() or not c.isprintable() for c in name):
            raise ConfigError(f"cannot use {name!r} as a user name",
                              fix="use 1-64 printable characters without spaces")
        roles = _check_roles(roles)
        with self._lock:
            try:
                self._db.execute("INSERT INTO users (name, roles, created_at) VALUES (?,?,?)",
                                 (name, ",".join(roles), time.time()))
            except sqlite3.IntegrityError as exc:
                raise ConfigError(f"a user named {name!r} exists",
                                  fix="pick another name, or: bastion users list") from exc
        return self.user(name)

    def user(self, name: str) -> UserInfo:
        """Return one user."""
        with self._lock:
            row = self._db.execute(
                "SELECT name, roles, disabled, created_at, (SELECT COUNT(*) FROM keys k WHERE "
                "k.user_id = u.id AND k.revoked_at IS NULL) FROM users u WHERE name = ?",
                (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no user named {name!r}", fix="bastion users list")
        return _user(row)

    def users(self) -> list[UserInfo]:
        """Return every user, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, roles, disabled, created_at, (SELECT COUNT(*) FROM keys k WHERE "
                "k.user_id = u.id AND k.revoked_at IS NULL) FROM users u ORDER BY name"
            ).fetchall()
        return [_user(r) for r in rows]

    def set_roles(self, name: str, roles: list[str] | tuple[str, ...]) -> UserInfo:
        """Replace a user's roles."""
        roles = _check_roles(roles)
        with self._lock:
            self._user_id(name)
            self._db.execute("UPDATE users SET roles = ? WHERE name = ?", (",".join(roles), name))
        return self.user(name)

    def set_disabled(self, name: str, disabled: bool = True) -> UserInfo:
        """Disable (or enable again) a user: none of their keys works while disabled."""
        with self._lock:
            self._user_id(name)
            self._db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
        return self.user(name)

    def set_quota(self, name: str, quota: Quota) -> None:
        """Set (replace) a user's quota; every key of theirs also counts against it."""
        with self._lock:
            self._user_id(name)
            self._db.execute("UPDATE users SET quota = ? WHERE name = ?",
                             (_quota_json(quota), name))

    def quota(self, name: str) -> Quota:
        """Return a user's quota."""
        with self._lock:
            row = self._db.execute("SELECT quota FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no user named {name!r}", fix="bastion users list")
        return Quota.from_dict(json.loads(row[0]) if row[0] else None)

    def remove_user(self, name: str) -> UserInfo:
        """Delete a user and their keys."""
        info = self.user(name)
        with self._lock:
            self._db.execute("DELETE FROM users WHERE name = ?", (name,))
        return info

    # ---- keys ---------------------------------------------------------------------------
    def create_key(self, user: str, *, scopes: list[str] | tuple[str, ...] = ("chat",),
                   name: str = "", expires_at: float | None = None,
                   quota: Quota | None = None) -> tuple[str, KeyInfo]:
        """Create a key for ``user``; return the key (shown once, never stored) and its info."""
        scopes = _check_scopes(scopes)
        kid = secrets.token_hex(ID_HEX // 2)
        token = f"{KEY_PREFIX}{kid}_{secrets.token_urlsafe(32)}"
        with self._lock:
            uid = self._user_id(user)
            self._db.execute(
                "INSERT INTO keys (id, user_id, name, hash, scopes, created_at, expires_at, "
                "quota) VALUES (?,?,?,?,?,?,?,?)",
                (kid, uid, name or kid, self.digest(token), json.dumps(list(scopes)),
                 time.time(), expires_at, _quota_json(quota)))
        return token, self.key(kid)

    def key(self, key_id: str) -> KeyInfo:
        """Return one key's info."""
        with self._lock:
            row = self._db.execute(_KEY_SELECT + " WHERE k.id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no key with id {key_id!r}", fix="bastion keys list")
        return _key(row)

    def keys(self, user: str | None = None) -> list[KeyInfo]:
        """Return the keys (of one user), newest first."""
        sql = _KEY_SELECT
        args: tuple[str, ...] = ()
        if user is not None:
            sql, args = sql + " WHERE u.name = ?", (user,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY k.created_at DESC", args).fetchall()
        return [_key(r) for r in rows]

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key; the next request with it is refused."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id))
        info = self.key(key_id)
        if cur.rowcount == 0 and info.revoked_at is None:  # pragma: no cover - raced
            raise NotFoundError(f"no key with id {key_id!r}", fix="bastion keys list")
        return info

    def rotate(self, key_id: str) -> tuple[str, KeyInfo]:
        """Replace a key by a new one with the same user, name, scopes and expiry."""
        old = self.key(key_id)
        if old.revoked_at is not None:
            raise ConfigError(f"key {key_id} is revoked", fix="bastion keys create --user "
                              f"{old.user}")
        token, info = self.create_key(old.user, scopes=old.scopes, name=old.name,
                                      expires_at=old.expires_at, quota=old.quota)
        self.revoke(key_id)
        return token, info

    def ensure_admin(self, token: str) -> None:
        """Make ``token`` (the configured api.token) the admin user's key.

        Creates the ``admin`` user when there is no user yet; replaces the stored legacy key
        when the configured token changed (``bastion config set api.token ...``).
        """
        digest = self.digest(token)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT hash, revoked_at FROM keys WHERE legacy = 1"
                                       ).fetchone()
                if row is not None and row[0] == digest:
                    self._db.execute("COMMIT")
                    return
                self._db.execute("DELETE FROM keys WHERE legacy = 1")
                urow = self._db.execute("SELECT id FROM users WHERE name = ?", (ADMIN,)
                                        ).fetchone()
                if urow is None:
                    cur = self._db.execute(
                        "INSERT INTO users (name, roles, created_at) VALUES (?,?,?)",
                        (ADMIN, "admin,user,approver", time.time()))
                    uid = cur.lastrowid
                else:
                    uid = urow[0]
                self._db.execute(
                    "INSERT INTO keys (id, user_id, name, hash, scopes, created_at, legacy) "
                    "VALUES (?,?,?,?,?,?,1)",
                    (secrets.token_hex(ID_HEX // 2), uid, LEGACY_NAME, digest,
                     json.dumps([ADMIN]), time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ---- the per-request check -----------------------------------------------------------
    def authenticate(self, token: str, *, now: float | None = None) -> Principal:
        """Return the principal ``token`` stands for, or raise :class:`AuthError`.

        One indexed read: a ``bst_`` key by its id (the secret's HMAC compared in constant
        time), the api.token by its HMAC (a keyed hash the caller cannot steer).
        """
        now = time.time() if now is None else now
        digest = self.digest(token)
        kid = key_id_of(token)
        with self._lock:
            if kid is not None:
                row = self._db.execute(_AUTH_SELECT + " WHERE k.id = ?", (kid,)).fetchone()
            else:
                row = self._db.execute(_AUTH_SELECT + " WHERE k.hash = ? AND k.legacy = 1",
                                       (digest,)).fetchone()
        if row is None or not hmac.compare_digest(str(row[0]), digest):
            raise AuthError("wrong API key", fix="send 'Authorization: Bearer <key>' with a key "
                            "from: bastion keys create --user NAME")
        (_, kid, key_name, scopes, expires_at, revoked_at, user, roles, disabled,
         last_used, key_quota, user_quota) = row
        if revoked_at is not None:
            raise AuthError(f"API key {kid} is revoked",
                            fix=f"ask an admin for a new key: bastion keys create --user {user}")
        if expires_at is not None and expires_at <= now:
            raise AuthError(f"API key {kid} expired",
                            fix=f"ask an admin for a new key: bastion keys rotate {kid}")
        if disabled:
            raise AuthError(f"user {user} is disabled",
                            fix=f"an admin can enable it: bastion users disable {user} --enable")
        self._touch(kid, last_used, now)
        return make_principal(user, kid, set(roles.split(",")) - {""}, json.loads(scopes),
                              key_name, _quota(key_quota), _quota(user_quota))

    # ---- browser sessions (the cookie of POST /v1/auth/login and the OIDC callback) ---------
    def _session_digest(self, session: str) -> str:
        return self.digest("web-session:" + session)

    def create_session(self, user: str, *, scopes: list[str] | tuple[str, ...] | frozenset[str],
                       via: str, ttl_s: float, key_id: str | None = None) -> str:
        """Start a browser session of ``user``; return its id (256 random bits, shown once).

        Only the id's HMAC is stored, with the expiry and the scopes it grants (the key's
        for ``via="key"``, the user's roles' for ``via="oidc"``). A session made with a key
        dies with the key (revoked, expired, deleted) and with the user (disabled, removed).
        """
        if via not in VIA:
            raise ValueError(f"unknown login method {via!r}")
        session = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            uid = self._user_id(user)
            self._db.execute(
                "DELETE FROM web_sessions WHERE expires_at <= ?", (now,))  # keep it small
            self._db.execute(
                "INSERT INTO web_sessions (hash, user_id, key_id, scopes, via, created_at, "
                "expires_at) VALUES (?,?,?,?,?,?,?)",
                (self._session_digest(session), uid, key_id, json.dumps(sorted(scopes)), via,
                 now, now + ttl_s))
        return session

    def linked_user(self, subject: str) -> str | None:
        """Return the user a single-sign-on subject (``issuer sub``) was provisioned as."""
        with self._lock:
            row = self._db.execute(
                "SELECT u.name FROM sso_links l JOIN users u ON u.id = l.user_id "
                "WHERE l.subject = ?", (subject,)).fetchone()
        return None if row is None else str(row[0])

    def provision_user(self, name: str, roles: list[str] | tuple[str, ...], subject: str
                       ) -> UserInfo:
        """Create user ``name`` for a single-sign-on subject and link the two.

        Refused when ``name`` is taken: an existing user is reached only through an
        explicit mapping (``api.oidc.users``), never by a provider's claim alone.
        """
        info = self.add_user(name, roles)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO sso_links (subject, user_id) VALUES "
                             "(?, (SELECT id FROM users WHERE name = ?))", (subject, name))
        return info

    def put_sign_in(self, state: str, nonce: str, verifier: str, redirect_url: str, *,
                    ttl_s: float, most: int) -> bool:
        """Keep a single sign-on under way until its callback (False: ``most`` already are).

        In this file, not the server's memory, so a restart between the login and the
        callback loses nothing. The state is kept as its HMAC under the pepper; the nonce and
        the PKCE verifier (useless without the provider's one-time code) live until the
        callback takes them or ``ttl_s`` passes, in a file only its owner can read.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM sso_pending WHERE expires_at <= ?", (now,))
                n = self._db.execute("SELECT COUNT(*) FROM sso_pending").fetchone()[0]
                if n < most:
                    self._db.execute(
                        "INSERT INTO sso_pending (hash, nonce, verifier, redirect_url, "
                        "expires_at) VALUES (?,?,?,?,?)",
                        (self.digest("sso-state:" + state), nonce, verifier, redirect_url,
                         now + ttl_s))
            finally:
                self._db.execute("COMMIT")
        return bool(n < most)

    def take_sign_in(self, state: str) -> tuple[str, str, str] | None:
        """Return (and delete) the nonce, verifier and redirect URL of ``state``'s sign-in.

        Once: a second take of the same state (a replayed callback, in this or any other
        process) finds nothing, and neither does one after its expiry.
        """
        with self._lock:
            row = self._db.execute(
                "DELETE FROM sso_pending WHERE hash = ? RETURNING nonce, verifier, redirect_url, "
                "expires_at", (self.digest("sso-state:" + state),)).fetchone()
        if row is None or row[3] <= time.time():
            return None
        return str(row[0]), str(row[1]), str(row[2])

    def end_session(self, session: str) -> bool:
        """Revoke a browser session server-side; whether one was there."""
        with self._lock:
            cur = self._db.execute("DELETE FROM web_sessions WHERE hash = ?",
                                   (self._session_digest(session),))
        return cur.rowcount > 0

    def authenticate_session(self, session: str, *, now: float | None = None
                             ) -> tuple[Principal, str]:
        """Return the principal of a browser session and how it signed in (``key``/``oidc``).

        One indexed read, like :meth:`authenticate`: the user's disabled flag and the key's
        revocation and expiry are read on every request, so they end the session at once.
        """
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(_SESSION_SELECT, (self._session_digest(session),)).fetchone()
        if row is None or row[2] <= now:
            raise AuthError("your sign-in session has ended (signed out or expired)",
                            fix="sign in again: POST /v1/auth/login with your API key")
        (key_id, scopes, _, via, user, roles, disabled, user_quota, key_name, revoked_at,
         key_expires, key_quota) = row
        if disabled:
            raise AuthError(f"user {user} is disabled",
                            fix=f"an admin can enable it: bastion users disable {user} --enable")
        if key_id is not None and (revoked_at is not None
                                   or (key_expires is not None and key_expires <= now)):
            raise AuthError(f"API key {key_id} of this sign-in is "
                            f"{'revoked' if revoked_at is not None else 'expired'}",
                            fix=f"sign in again with a valid key (bastion keys create "
                                f"--user {user})")
        if key_id is None:
            key_id, key_name = f"{via}:{self._session_digest(session)[:12]}", via
        principal = make_principal(user, key_id, set(roles.split(",")) - {""},
                                   json.loads(scopes), key_name or "",
                                   _quota(key_quota), _quota(user_quota))
        return principal, via

    def _touch(self, kid: str, last_used: float | None, now: float) -> None:
        seen = max(self._used.get(kid, 0.0), last_used or 0.0)
        if now - seen < LAST_USED_EVERY_S:
            return
        self._used[kid] = now
        with self._lock, contextlib.suppress(sqlite3.OperationalError):  # busy: next time
            self._db.execute("UPDATE keys SET last_used = ? WHERE id = ?", (now, kid))


_KEY_SELECT = ("SELECT k.id, u.name, k.name, k.scopes, k.created_at, k.expires_at, "
               "k.last_used, k.revoked_at, k.quota FROM keys k JOIN users u ON u.id = k.user_id")
_AUTH_SELECT = ("SELECT k.hash, k.id, k.name, k.scopes, k.expires_at, k.revoked_at, u.name, "
                "u.roles, u.disabled, k.last_used, k.quota, u.quota FROM keys k "
                "JOIN users u ON u.id = k.user_id")


_SESSION_SELECT = (
    "SELECT s.key_id, s.scopes, s.expires_at, s.via, u.name, u.roles, u.disabled, u.quota, "
    "k.name, k.revoked_at, k.expires_at, k.quota FROM web_sessions s "
    "JOIN users u ON u.id = s.user_id LEFT JOIN keys k ON k.id = s.key_id WHERE s.hash = ?")


def _quota_json(quota: Quota | None) -> str | None:
    return json.dumps(quota.to_dict()) if quota else None


_QUOTAS: dict[str, Quota] = {}


def _quota(raw: str | None) -> Quota:
    """Return the stored quota (parsed once per distinct value: the per-request path)."""
    if not raw:
        return Quota()
    got = _QUOTAS.get(raw)
    if got is None:
        if len(_QUOTAS) > 4096:
            _QUOTAS.clear()
        got = _QUOTAS[raw] = Quota.from_dict(json.loads(raw))
    return got


def _user(row: tuple[Any, ...]) -> UserInfo:
    return UserInfo(row[0], tuple(r for r in str(row[1]).split(",") if r), bool(row[2]),
                    float(row[3]), int(row[4]))


def _key(row: tuple[Any, ...]) -> KeyInfo:
    return KeyInfo(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], row[5], row[6],
                   row[7], _quota(row[8]))


def _check_roles(roles: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(r.strip() for r in roles if r.strip()))
    bad = [r for r in out if r not in ROLES]
    if bad or not out:
        raise ConfigError(f"unknown role {bad[0]!r}" if bad else "a user needs a role",
                          fix=f"use one or more of: {', '.join(ROLES)}")
    return out


def _check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    if not out:
        raise ConfigError("a key needs at least one scope", fix="pass --scope chat (or more)")
    for s in out:
        problem = scope_problem(s)
        if problem is not None:
            from bastion.security.identity import SCOPES

            raise ConfigError(problem, fix=f"use {', '.join(SCOPES)} or tools:<glob>")
    return out


def open_store(home: Path | None = None) -> KeyStore:
    """Return the key store of ``home`` (default: bastion's home, created 0700)."""
    from bastion.config import paths

    return KeyStore(home or paths.ensure_home())


__all__ = ["KEY_PREFIX", "MIN_KEY_CHARS", "KeyInfo", "KeyStore", "Principal", "UserInfo",
           "key_id_of", "open_store"]
