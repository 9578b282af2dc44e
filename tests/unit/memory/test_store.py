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
