"""The memory commands and API routes, over real stores and the real embedding model."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bastion.config.model import ApiConfig, Config, MemoryConfig
from bastion.memory.embeddings import SentenceEmbedder
from bastion.memory.persistent import PersistentMemory
from bastion.messages import Message
from bastion.testing import ScriptedModel
from tests.integration.memory.conftest import minimal_pdf


def _seed() -> None:
    async def go() -> None:
        mem = PersistentMemory(MemoryConfig())
        await mem.append("alpha", Message("user", "The spare key hangs behind the garden shed."))
        await mem.append("alpha", Message("assistant", "Got it, behind the shed."))
        await mem.append("other", Message("user", "Pasta needs salted boiling water."))
        await mem.aclose()

    asyncio.run(go())


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def _run(cli: CliRunner, *args: str) -> str:
    from bastion.cli import main as cli_main

    if not any(g.name == "sessions" for g in cli_main.app.registered_groups):
        cli_main._load_commands()
    res = cli.invoke(cli_main.app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_cli_sessions_search_ingest_knowledge(
    cli: CliRunner, tmp_path: Path, embedder: SentenceEmbedder
) -> None:
    _seed()
    listed = json.loads(_run(cli, "sessions", "list", "--json"))
    assert {s["name"]: s["messages"] for s in listed} == {"alpha": 2, "other": 1}
    assert "spare key" in _run(cli, "sessions", "show", "alpha")
    assert "renamed to house" in _run(cli, "sessions", "rename", "alpha", "house")
    out = tmp_path / "house.md"
    _run(cli, "sessions", "export", "house", "--format", "markdown", "-o", str(out))
    assert out.read_text().startswith("# Session: house")
    exported = json.loads(_run(cli, "sessions", "export", "house"))
    assert exported["messages"][0]["content"].startswith("The spare key")

    hits = json.loads(_run(cli, "search", "where is the spare key?", "--json", "-k", "2"))
    assert hits[0]["source"] == "house" and hits[0]["score"] > hits[1]["score"]
    assert "bastion sessions show house" in _run(cli, "search", "spare key location")

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Notes\n\nThe boat is moored at pier 9.")
    (docs / "plan.pdf").write_bytes(minimal_pdf("The picnic is on Saturday at noon."))
    assert "2 added" in _run(cli, "ingest", str(docs))
    assert "2 unchanged" in _run(cli, "ingest", str(docs))
    listed_docs = json.loads(_run(cli, "knowledge", "list", "--json"))
    assert sorted(Path(d["source"]).name for d in listed_docs) == ["notes.md", "plan.pdf"]
    hits = json.loads(_run(cli, "search", "where is the boat moored", "--json", "-k", "1"))
    assert hits[0]["kind"] == "document" and "pier 9" in hits[0]["text"]
    assert "removed" in _run(cli, "knowledge", "remove", str(docs / "notes.md"))
    assert len(json.loads(_run(cli, "knowledge", "list", "--json"))) == 1
    assert "deleted house" in _run(cli, "sessions", "delete", "house", "--yes")
    assert [s["name"] for s in json.loads(_run(cli, "sessions", "list", "--json"))] == ["other"]


def test_cli_unknown_session_is_one_line(cli: CliRunner) -> None:
    from bastion.cli import main as cli_main
    from bastion.errors import MemoryStoreError

    if not any(g.name == "sessions" for g in cli_main.app.registered_groups):
        cli_main._load_commands()
    res = cli.invoke(cli_main.app, ["sessions", "show", "nope"])
    assert isinstance(res.exception, MemoryStoreError)
    assert "no session named 'nope'" in res.exception.user_text()


def test_api_routes(embedder: SentenceEmbedder) -> None:
    from bastion.app import build_app
    from bastion.server.app import create_app

    _seed()
    cfg = Config(api=ApiConfig(token="t0ken"))
    app = build_app(cfg, model=ScriptedModel())
    api = create_app(app, close_app=True)
    auth = {"Authorization": "Bearer t0ken"}
    with TestClient(api) as client:
        assert client.get("/v1/sessions").status_code == 401
        sessions = client.get("/v1/sessions", headers=auth).json()["data"]
        assert {s["name"] for s in sessions} == {"alpha", "other"}
        r = client.patch("/v1/sessions/alpha", json={"name": "house"}, headers=auth)
        assert r.status_code == 200 and r.json()["name"] == "house"
        assert client.patch("/v1/sessions/house", json={"name": "other"},
                            headers=auth).status_code == 409
        md = client.get("/v1/sessions/house/export?format=markdown", headers=auth)
        assert md.headers["content-type"].startswith("text/markdown")
        assert "spare key" in md.text
        js = client.get("/v1/sessions/house/export", headers=auth).json()
        assert js["session"]["name"] == "house"
        assert client.get("/v1/sessions/nope/export", headers=auth).status_code == 404

        hits = client.post("/v1/search", json={"query": "spare key", "k": 2},
                           headers=auth).json()["data"]
        assert hits[0]["source"] == "house"
        assert hits[0]["session_url"] == f"/v1/sessions/{hits[0]['session_id']}"

        pdf = base64.b64encode(minimal_pdf("The ferry leaves at seven.")).decode()
        r = client.post("/v1/ingest", headers=auth, json={"documents": [
            {"name": "ferry.pdf", "content_base64": pdf},
            {"name": "notes.md", "content": "# Notes\n\nThe bakery closes at four."},
        ]})
        assert [f["status"] for f in r.json()["data"]] == ["added", "added"]
        bad = client.post("/v1/ingest", headers=auth, json={"documents": [{"name": "x.md"}]})
        assert bad.status_code == 422  # neither content nor content_base64: the schema's oneOf
        knowledge = client.get("/v1/knowledge", headers=auth).json()["data"]
        assert len(knowledge) == 2
        hits = client.post("/v1/search", json={"query": "when does the ferry leave"},
                           headers=auth).json()["data"]
        assert hits[0]["source"] == "ferry.pdf"
        doc_id = next(d["id"] for d in knowledge if d["source"] == "ferry.pdf")
        assert client.delete(f"/v1/knowledge/{doc_id}", headers=auth).status_code == 200
        assert client.delete(f"/v1/knowledge/{doc_id}", headers=auth).status_code == 404
        assert client.delete("/v1/sessions/house", headers=auth).json()["deleted"] is True
        assert client.get("/v1/sessions/house/export", headers=auth).status_code == 404
