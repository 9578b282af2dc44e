from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bastion.config.model import Config, MemoryConfig
from bastion.errors import MemoryStoreError
from bastion.memory.persistent import PersistentMemory
from bastion.memory.store import MIGRATIONS, SCHEMA_VERSION, SessionStore
from bastion.messages import Message, ToolCall
from bastion.testing import ScriptedModel, call, say


def test_append_is_durable_and_ordered(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "m.db")
    c = ToolCall("read_file", {"path": "a.txt"})
    store.append("work", Message("user", "hello"))
    store.append("work", Message("assistant", "", tool_calls=[c]))
    store.append("work", Message("tool", "contents", tool_call_id=c.id, name="read_file"))
    # a second, independent connection sees every committed message
    other = SessionStore(tmp_path / "m.db")
    msgs = other.messages("work")
    assert [m.seq for m in msgs] == [1, 2, 3]
    assert msgs[1].message.tool_calls[0].id == c.id
    assert msgs[1].message.tool_calls[0].arguments == {"path": "a.txt"}
    assert msgs[2].message.tool_call_id == c.id
    assert store.journal_mode() == "wal"
    assert [m.message.content for m in other.messages("work", limit=2)] == ["", "contents"]
    store.close()
    other.close()


def test_sessions_rename_delete(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "m.db")
    store.append("a", Message("user", "x"))
    store.append("b", Message("user", "y"))
    info = store.rename("a", "alpha")
    assert store.resolve("alpha") == info
    assert store.resolve(info.id) == info  # ids keep working
    assert store.resolve("a") is None  # the old name is free again
    with pytest.raises(MemoryStoreError, match="already exists"):
        store.rename("alpha", "b")
    store.append("alpha", Message("assistant", "z"))
    assert [s.name for s in store.sessions()][0] == "alpha"
    assert store.require("alpha").messages == 2
    store.delete("b")
    assert store.resolve("b") is None
    with pytest.raises(MemoryStoreError, match="no session named 'b'"):
        store.require("b")
    store.close()


def test_migrates_an_old_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO sessions VALUES ('s1', 'old', 1.0, 1.0)")
    db.execute("INSERT INTO messages(session_id, seq, role, content, created_at) "
               "VALUES ('s1', 1, 'user', 'from v1', 1.0)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = SessionStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.messages("old")[0].message.content == "from v1"
    assert [m.message.content for m in store.pending()] == ["from v1"]  # v2 column added
    assert store.documents() == []  # v3 table added
    store.close()


# The schema as bastion v4 wrote it (names unique across all owners), verbatim: the upgrade
# is tested against what an old version left on disk, not against MIGRATIONS[:4].
_V4_DDL = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT 'admin'
);
CREATE INDEX sessions_owner ON sessions(owner);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    tool_calls TEXT,
    tool_call_id TEXT,
    name TEXT,
    created_at REAL NOT NULL,
    indexed INTEGER NOT NULL DEFAULT 0,
    UNIQUE (session_id, seq)
);
CREATE INDEX messages_pending ON messages(indexed) WHERE indexed = 0;
CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT 'admin',
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    size INTEGER NOT NULL,
    ingested_at REAL NOT NULL,
    UNIQUE (owner, source)
);
"""


def test_a_v4_database_upgrades_in_place_to_names_unique_per_owner(tmp_path: Path) -> None:
    from bastion.security.identity import acting_as, make_principal

    path = tmp_path / "v4.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(_V4_DDL)
    db.executemany("INSERT INTO sessions(id, name, created_at, updated_at, owner) "
                   "VALUES (?, ?, 1.0, 2.0, ?)",
                   [("a1b2c3d4e5f6", "main", "alice"), ("0f0f0f0f0f0f", "0f0f0f0f0f0f", "bob"),
                    ("99aa99aa99aa", "notes", "admin")])
    calls = json.dumps([{"id": "c1", "name": "read_file", "arguments": {"path": "a"}}])
    rows = [(sid, seq, role, f"{sid}-{seq}", calls if role == "assistant" else None,
             "c1" if role == "tool" else None, seq % 2)
            for sid in ("a1b2c3d4e5f6", "0f0f0f0f0f0f", "99aa99aa99aa")
            for seq, role in enumerate(("user", "assistant", "tool"), 1)]
    db.executemany("INSERT INTO messages(session_id, seq, role, content, tool_calls, "
                   "tool_call_id, created_at, indexed) VALUES (?, ?, ?, ?, ?, ?, 1.0, ?)", rows)
    db.execute("INSERT INTO documents VALUES ('d1', 'alice', 'plans.md', 'x', 'md', 1, 1, 1.0)")
    db.execute("PRAGMA user_version = 4")
    db.commit()
    before = db.execute("SELECT * FROM messages ORDER BY id").fetchall()
    db.close()

    store = SessionStore(path)
    assert store.schema_version() == SCHEMA_VERSION >= 5
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT * FROM messages ORDER BY id").fetchall() == before  # none lost
    assert raw.execute("SELECT id, owner, name, created_at, updated_at FROM sessions "
                       "ORDER BY id").fetchall() == [
        ("0f0f0f0f0f0f", "bob", "0f0f0f0f0f0f", 1.0, 2.0),
        ("99aa99aa99aa", "admin", "notes", 1.0, 2.0),
        ("a1b2c3d4e5f6", "alice", "main", 1.0, 2.0)]
    raw.close()
    assert store.documents()[0].source == "plans.md"
    with acting_as(make_principal("alice", "k1", {"user"}, ["chat"])):
        assert [m.message.content for m in store.messages("main")] == [
            "a1b2c3d4e5f6-1", "a1b2c3d4e5f6-2", "a1b2c3d4e5f6-3"]
        assert store.messages("main")[1].message.tool_calls[0].arguments == {"path": "a"}
    with acting_as(make_principal("bob", "k2", {"user"}, ["chat"])):
        assert store.resolve("main") is None
        bobs = store.ensure("main")  # the name alice has: unique per owner now
        assert bobs != "a1b2c3d4e5f6"
        store.append("main", Message("user", "bob's own"))
        assert [m.message.content for m in store.messages("main")] == ["bob's own"]
    # the constraints hold after the rebuild: one owner cannot have "main" twice, and a
    # message needs its session (foreign keys are back on)
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute("INSERT INTO sessions(id, name, created_at, updated_at, owner) "
                          "VALUES ('x', 'main', 1, 1, 'alice')")
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute("INSERT INTO messages(session_id, seq, role, content, created_at) "
                          "VALUES ('nope', 1, 'user', 'x', 1)")
    # the CLI (unscoped) names one of two "main"s by id; the name alone is ambiguous
    with pytest.raises(MemoryStoreError, match="several users have a session named 'main'"):
        store.resolve("main")
    assert store.require(bobs).name == "main"
    store.delete("a1b2c3d4e5f6")
    assert store.resolve("main") is not None and store.resolve("main").id == bobs  # type: ignore[union-attr]
    store.close()


def test_an_old_database_gains_step_facts_for_new_tool_messages(tmp_path: Path) -> None:
    """A v5 file (written before step facts were kept) upgrades; its tool messages read
    without facts; facts recorded now come back with the message and go when the session is
    deleted."""
    path = tmp_path / "before-steps.db"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:5]:
        db.executescript(script)
    db.execute("INSERT INTO sessions(id, name, created_at, updated_at) "
               "VALUES ('s1', 'old', 1.0, 1.0)")
    calls = json.dumps([{"id": "call_old", "name": "list_files", "arguments": {}}])
    db.execute("INSERT INTO messages(session_id, seq, role, content, tool_calls, created_at) "
               "VALUES ('s1', 1, 'assistant', '', ?, 1.0)", (calls,))
    db.execute("INSERT INTO messages(session_id, seq, role, content, tool_call_id, name, "
               "created_at) VALUES ('s1', 2, 'tool', 'a.txt', 'call_old', 'list_files', 1.0)")
    db.execute("PRAGMA user_version = 5")
    db.commit()
    db.close()

    store = SessionStore(path)
    assert store.schema_version() == SCHEMA_VERSION >= 6
    total, old = store.page("old")
    assert total == 2 and old[1].message.content == "a.txt" and old[1].message.step is None
    store.append("old", Message("assistant", "", tool_calls=[ToolCall("shell", {}, id="c2")]))
    store.append("old", Message("tool", "denied", tool_call_id="c2", name="shell"))
    facts = {"risk": "high", "sandbox": "bubblewrap", "ok": False, "decision": "denied",
             "duration_ms": 1.5, "approval": {"risk": "high", "approved": False,
                                              "by": "api:admin", "reason": "not now"}}
    assert store.record_steps("old", {"c2": facts, "never-stored": {"risk": "low"}}) == 1
    _, rows = store.page("old")
    assert [r.message.step for r in rows] == [None, None, None, facts]
    assert rows[3].message.to_openai() == {"role": "tool", "content": "denied",
                                           "tool_call_id": "c2", "name": "shell"}  # not sent
    store.delete("old")
    assert store._query("SELECT COUNT(*) FROM message_steps")[0][0] == 0
    store.close()


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(MemoryStoreError, match="newer than this bastion"):
        SessionStore(path)


def _memory(tmp_path: Path, **kw: object) -> PersistentMemory:
    return PersistentMemory(MemoryConfig(semantic=False, **kw), root=tmp_path / "mem")


async def test_agent_turns_persist_and_reload(tmp_path: Path) -> None:
    from bastion.app import build_app

    model = ScriptedModel(call("nonexistent_tool", x=1), say("done"), say("second answer"))
    mem = _memory(tmp_path)
    app = build_app(Config(), model=model, memory=mem)
    agent = app.agent()
    await agent.ask("first question", session_id="proj")
    await app.aclose()

    mem2 = _memory(tmp_path)
    model2 = ScriptedModel(say("second answer"))
    app2 = build_app(Config(), model=model2, memory=mem2)
    await app2.agent().ask("second question", session_id="proj")
    sent = model2.seen[0].messages
    assert [m.role for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[1].content == "first question"
    assert sent[-1].content == "second question"
    info, msgs = mem2.session("proj")
    assert info.messages == 6 == len(msgs)
    exported = json.loads(mem2.export("proj", "json"))
    assert exported["session"]["name"] == "proj"
    assert exported["messages"][1]["tool_calls"][0]["function"]["name"] == "nonexistent_tool"
    md = mem2.export("proj", "markdown")
    assert md.startswith("# Session: proj")
    assert "## Tool result (nonexistent_tool)" in md and "second answer" in md
    await app2.aclose()


async def test_windowing_limits_what_the_model_sees(tmp_path: Path) -> None:
    mem = _memory(tmp_path, context_tokens=120)
    for i in range(40):
        await mem.append("long", Message("user", f"message number {i} " + "pad " * 10))
        await mem.append("long", Message("assistant", f"reply {i}"))
    ctx = await mem.build_context("long", Message("system", "sys"), await mem.history("long"), "q")
    assert ctx[0].content == "sys"
    assert ctx[-1].content == "reply 39"
    assert 2 < len(ctx) < 20
    assert mem.last_window is not None and mem.last_window.tokens <= 120
    await mem.aclose()


async def test_memory_disabled_writes_nothing(tmp_path: Path, bastion_home: Path) -> None:
    from bastion.app import build_app
    from bastion.memory.base import EphemeralMemory

    cfg = Config(memory=MemoryConfig(enabled=False))
    app = build_app(cfg, model=ScriptedModel(say("hi")))
    assert isinstance(app.memory, EphemeralMemory)
    await app.agent().ask("hello", session_id="s")
    await app.aclose()
    assert not (bastion_home / "memory").exists()


async def test_memory_enabled_by_default_in_build_app(bastion_home: Path) -> None:
    from bastion.app import build_app

    cfg = Config(memory=MemoryConfig(semantic=False))
    app = build_app(cfg, model=ScriptedModel(say("hi")))
    assert isinstance(app.memory, PersistentMemory)
    await app.agent().ask("hello", session_id="s")
    await app.aclose()
    assert (bastion_home / "memory" / "memory.db").exists()


def test_generated_keys_double_as_ids(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "m.db")
    store.append("0123456789ab", Message("user", "x"))
    assert store.require("0123456789ab").id == "0123456789ab"
    store.append("my project", Message("user", "y"))
    named = store.require("my project")
    assert named.id != "my project" and len(named.id) == 12
    store.close()
