"""Quotas over the ``limits`` library with the SQLite counter storage (a real file)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bastion.messages import Finish, TextDelta, Usage
from bastion.security.identity import Quota, acting_as, make_principal
from bastion.security.quota import QuotaExceeded, Quotas, SQLiteStorage, TokenMeter


def _who(key: Quota | None = None, user: Quota | None = None):  # type: ignore[no-untyped-def]
    return make_principal("alice", "abc123abc123", {"user"}, ["chat"], "", key, user)


def test_counters_survive_a_new_process_on_the_same_file(tmp_path: Path) -> None:
    who = _who(Quota(requests="2/hour"))
    first = Quotas(tmp_path / "quota.db")
    first.hit(who, "requests")
    first.hit(who, "requests")
    first.close()
    again = Quotas(tmp_path / "quota.db")  # a restart: nothing is kept in memory
    with pytest.raises(QuotaExceeded) as exc:
        again.hit(who, "requests")
    assert "key abc123abc123 has used its requests quota (2 per hour)" in exc.value.message
    assert 3500 < exc.value.retry_after <= 3600
    again.close()


def test_the_user_quota_counts_every_key_and_a_window_refills(tmp_path: Path) -> None:
    q = Quotas(tmp_path / "quota.db")
    shared = Quota(tool_calls="2/2 seconds")
    k1 = make_principal("bob", "k1k1k1k1k1k1", {"user"}, ["chat"], "", None, shared)
    k2 = make_principal("bob", "k2k2k2k2k2k2", {"user"}, ["chat"], "", None, shared)
    q.hit(k1, "tool_calls")
    q.hit(k2, "tool_calls")
    with pytest.raises(QuotaExceeded, match="user bob has used its tool calls quota"):
        q.hit(k1, "tool_calls")
    time.sleep(2.1)
    q.hit(k2, "tool_calls")  # a new window
    q.close()


def test_concurrent_turns_and_token_metering(tmp_path: Path) -> None:
    q = Quotas(tmp_path / "quota.db")
    who = _who(Quota(tokens="100/day", concurrent=1))
    with q.turn(who), pytest.raises(QuotaExceeded, match="already runs 1 turn"), q.turn(who):
        pass
    with q.turn(who):  # released
        pass

    class Model:
        name = "m"

        async def chat(self, messages, tools=(), **kw):  # type: ignore[no-untyped-def]
            yield TextDelta("hi")
            yield Usage(70, 40)
            yield Finish("stop")

    async def run() -> None:
        with acting_as(who):
            async for _ in TokenMeter(Model(), q).chat([]):
                pass

    asyncio.run(run())
    with pytest.raises(QuotaExceeded, match="tokens quota"):
        q.check_left(who, "tokens")  # 110 of 100 spent: the next turn is refused
    q.close()


def test_the_storage_expires_and_clears(tmp_path: Path) -> None:
    s = SQLiteStorage(tmp_path / "c.db")
    assert s.incr("k", 1, 3) == 3 and s.incr("k", 1) == 4 and s.get("k") == 4
    assert s.get_expiry("k") > time.time()
    time.sleep(1.05)
    assert s.get("k") == 0 and s.incr("k", 1) == 1  # expired: a fresh window
    s.clear("k")
    assert s.get("k") == 0 and s.check() and s.reset() == 0
    s.close()
