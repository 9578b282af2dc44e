"""Quotas and rate limits per API key and per user, counted by the ``limits`` library.

A quota is a ``limits`` string per kind: ``requests`` (``60/minute``), ``tokens``
(``100000/day``), ``tool_calls`` (``500/day``), plus ``concurrent`` (turns at once). A key
and its user may each have one; both apply. Counters live in ``HOME/quota.db`` (SQLite, a
``limits`` storage written here), so a restart does not hand out a fresh day; concurrent
turns are counted in memory (a restart ends every turn anyway).

``limits`` rather than hand-written counters: its fixed-window strategy and its parser
(``"2/5 seconds"``) are well tested; only the storage is ours, because it has no SQLite one.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import limits
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from bastion.errors import BastionError, ConfigError
from bastion.messages import Usage
from bastion.security.gateway import CallRequest, Next, ToolResult, denied
from bastion.security.identity import Principal, Quota, current

KINDS = ("requests", "tokens", "tool_calls")


def check_limit(kind: str, text: str | None) -> str | None:
    """Return ``text`` if ``limits`` can read it, else raise a one-line error."""
    if text is None:
        return None
    try:
        limits.parse(text)
    except ValueError as exc:
        raise ConfigError(f"cannot read the {kind} limit {text!r}",
                          fix="write it as COUNT/PERIOD, e.g. 60/minute, 100000/day, "
                              "5/10 seconds") from exc
    return text


class QuotaExceeded(BastionError):
    """A key or user has used up a quota; ``retry_after`` is seconds until it refills."""

    def __init__(self, message: str, *, fix: str, retry_after: float) -> None:
        super().__init__(message, fix=fix)
        self.retry_after = max(1, int(retry_after + 0.999))


class SQLiteStorage(Storage):
    """A ``limits`` storage in one SQLite file: counters survive a restart."""

    STORAGE_SCHEME = ["bastion+sqlite"]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10.0,
                                   isolation_level=None)
        with contextlib.suppress(OSError):
            path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode = WAL")
        # no fsync per request: a counter survives a crash of the process (WAL), and a power
        # cut loses at most the last moments of counting, never the database
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, "
                         "value INTEGER NOT NULL, expires REAL NOT NULL)")

    @property
    def base_exceptions(self) -> type[Exception]:
        """What a failing storage raises."""
        return sqlite3.Error

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount`` to ``key``'s counter (a new window once it expired); return it."""
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET "
                "value = CASE WHEN expires <= ? THEN excluded.value ELSE value + excluded.value "
                "END, expires = CASE WHEN expires <= ? THEN excluded.expires ELSE expires END "
                "RETURNING value", (key, amount, now + expiry, now, now)).fetchone()
        return int(row[0])

    def get(self, key: str) -> int:
        """Return ``key``'s counter in its current window (0 once expired)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE key = ? AND expires > ?",
                                   (key, time.time())).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """Return when ``key``'s window ends (now when it has none)."""
        with self._lock:
            row = self._db.execute("SELECT expires FROM counters WHERE key = ?", (key,)
                                   ).fetchone()
        return float(row[0]) if row and row[0] > time.time() else time.time()

    def check(self) -> bool:
        """Whether the database answers."""
        with self._lock:
            return self._db.execute("SELECT 1").fetchone() is not None

    def reset(self) -> int | None:
        """Forget every counter; return how many there were."""
        with self._lock:
            return self._db.execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        """Forget one counter."""
        with self._lock:
            self._db.execute("DELETE FROM counters WHERE key = ?", (key,))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


_FIX = "wait until it refills, or ask an admin to raise it: bastion keys create ... / " \
       "bastion users limits NAME"


class Quotas:
    """Checks and charges the quotas of the principal of the current request.

    The counter database is opened on the first quota that is set (a home whose keys have
    none never creates it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._storage: SQLiteStorage | None = None
        self._limiter: FixedWindowRateLimiter | None = None
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def limiter(self) -> FixedWindowRateLimiter:
        """The ``limits`` fixed-window limiter over the SQLite counters."""
        if self._limiter is None:
            with self._lock:
                if self._limiter is None:
                    self._storage = SQLiteStorage(self.path)
                    self._limiter = FixedWindowRateLimiter(self._storage)
        return self._limiter

    def close(self) -> None:
        """Close the counter database."""
        if self._storage is not None:
            self._storage.close()
            self._storage = self._limiter = None



    @staticmethod
    def _owners(p: Principal) -> list[tuple[str, str, Quota]]:
        return [(f"key {p.key_id}", f"k:{p.key_id}", p.key_quota),
                (f"user {p.user}", f"u:{p.user}", p.user_quota)]

    def _exceeded(self, who: str, kind: str, item: limits.RateLimitItem, ident: str
                  ) -> QuotaExceeded:
        reset = self.limiter.get_window_stats(item, kind, ident).reset_time
        return QuotaExceeded(f"{who} has used its {kind.replace('_', ' ')} quota "
                             f"({item.amount} per {_period(item)})", fix=_FIX,
                             retry_after=reset - time.time())

    def hit(self, p: Principal, kind: str, cost: int = 1) -> None:
        """Charge ``cost`` to ``kind`` for key and user; raise once one is over its limit."""
        for who, ident, quota in self._owners(p):
            text = getattr(quota, kind)
            if text is None:
                continue
            item = limits.parse(text)
            if not self.limiter.hit(item, kind, ident, cost=cost):
                raise self._exceeded(who, kind, item, ident)

    def charge(self, p: Principal, kind: str, cost: int) -> None:
        """Add ``cost`` (tokens spent) without refusing; the next turn is refused if over."""
        for _, ident, quota in self._owners(p):
            text = getattr(quota, kind)
            if text is not None and cost > 0:
                self.limiter.hit(limits.parse(text), kind, ident, cost=cost)

    def check_left(self, p: Principal, kind: str) -> None:
        """Raise if ``kind`` is used up (a turn would start with nothing left)."""
        for who, ident, quota in self._owners(p):
            text = getattr(quota, kind)
            if text is None:
                continue
            item = limits.parse(text)
            if not self.limiter.test(item, kind, ident):
                raise self._exceeded(who, kind, item, ident)

    @contextlib.contextmanager
    def turn(self, p: Principal) -> Iterator[None]:
        """Hold one of the concurrent-turn slots of key and user for the body."""
        taken: list[str] = []
        with self._lock:
            for who, ident, quota in self._owners(p):
                if quota.concurrent is not None and self._running[ident] >= quota.concurrent:
                    for t in taken:
                        self._running[t] -= 1
                    raise QuotaExceeded(f"{who} already runs {quota.concurrent} turn(s) at "
                                        "once", fix="wait for one to finish", retry_after=1)
                self._running[ident] += 1
                taken.append(ident)
        try:
            yield
        finally:
            with self._lock:
                for t in taken:
                    self._running[t] -= 1


_SHARED: dict[Path, Quotas] = {}
_SHARED_LOCK = threading.Lock()


def quotas_for(home: Path) -> Quotas:
    """Return the one :class:`Quotas` of ``home`` in this process (server and gateway share)."""
    path = home / "quota.db"
    with _SHARED_LOCK:
        got = _SHARED.get(path)
        if got is None:
            got = _SHARED[path] = Quotas(path)
        return got


def _period(item: limits.RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


class TokenMeter:
    """A model wrapper that charges the tokens of every answer to the current principal."""

    def __init__(self, inner: Any, quotas: Quotas) -> None:
        self.inner = inner
        self.quotas = quotas

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def chat(self, messages: Any, tools: Any = (), **kwargs: Any) -> AsyncIterator[Any]:
        """Relay the inner model's events; charge each :class:`Usage` it reports."""
        principal = current()
        async for ev in self.inner.chat(messages, tools, **kwargs):
            if principal is not None and isinstance(ev, Usage):
                self.quotas.charge(principal, "tokens", ev.prompt_tokens + ev.completion_tokens)
            yield ev


class ToolQuotaStage:
    """Gateway stage: a tool call over the key's or user's ``tool_calls`` quota is refused.

    The model gets the refusal as the tool's result (with when the quota refills).
    """

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Charge one tool call to the current principal; refuse it when over quota."""
        principal = current()
        if principal is not None:
            try:
                self.quotas.hit(principal, "tool_calls")
            except QuotaExceeded as exc:
                return denied(req, f"{req.tool.name} refused: {exc.message}; it refills in "
                                   f"{exc.retry_after} s")
        return await nxt(req)
