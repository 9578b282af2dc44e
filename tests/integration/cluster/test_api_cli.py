"""Cluster API routes and CLI against a real server process pair and a live uvicorn API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from bastion.agent.loop import Agent, AgentOptions
from bastion.app import App, build_app
from bastion.cli.main import _load_commands
from bastion.cli.main import app as cli
from bastion.cluster.model import ClusterModel
from bastion.config.model import Config
from bastion.server.app import create_app

from ._procs import Proc, fake_server, free_port

pytestmark = pytest.mark.slow
TOKEN = "tok-cluster-test-93a1"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Proc]]:
    procs = {
        "a": fake_server(free_port(), "--tokens", "4"),
        "b": fake_server(free_port(), "--tokens", "4"),
    }
    try:
        for p in procs.values():
            p.start()
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def config(fakes: dict[str, Proc], port: int) -> Config:
    return Config.model_validate(
        {
            "model": {"backend": "cluster", "name": "fake-model"},
            "api": {"token": TOKEN, "port": port},
            "memory": {"enabled": False},
            "security": {"sandbox": "none"},
            "cluster": {
                "nodes": [{"name": "a", "url": fakes["a"].url, "engine": "openai"}],
                "health_interval_s": 0.5,
            },
        }
    )


@pytest.fixture
def live(fakes: dict[str, Proc], bastion_home: Path) -> Iterator[tuple[App, str]]:
    port = free_port()
    cfg = config(fakes, port)
    (bastion_home / "bastion.yaml").write_text(
        yaml.safe_dump({"api": {"token": TOKEN, "port": port}, "model": {"backend": "cluster"}})
    )
    app = build_app(cfg)
    server = uvicorn.Server(
        uvicorn.Config(create_app(app), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/health", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield app, base
    finally:
        server.should_exit = True
        thread.join(10)


async def test_agent_uses_the_cluster_as_its_model(fakes: dict[str, Proc]) -> None:
    app = build_app(config(fakes, free_port()))
    try:
        assert isinstance(app.model, ClusterModel)
        agent = Agent(app.model, app.gateway, AgentOptions(system_prompt="be brief", tools=[]))
        done = await agent.ask("hi")
        assert done.answer == "alpha bravo charlie delta"
        assert app.model.history[-1].nodes == ["a"]
    finally:
        await app.aclose()


def test_api_metrics_status_and_runtime_membership(
    live: tuple[App, str], fakes: dict[str, Proc]
) -> None:
    app, base = live
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(base + "/metrics").status_code == 401
    assert isinstance(app.model, ClusterModel)

    r = httpx.post(
        base + "/v1/cluster/nodes",
        headers=auth,
        json={"name": "b", "url": fakes["b"].url, "engine": "openai", "tier": "medium"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "b"
    dup = httpx.post(
        base + "/v1/cluster/nodes", headers=auth, json={"name": "b", "url": fakes["b"].url}
    )
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]["message"]
    bad = httpx.post(base + "/v1/cluster/nodes", headers=auth, json={"name": "c", "url": "ftp://x"})
    assert bad.status_code in (400, 422)

    st = httpx.get(base + "/v1/cluster", headers=auth).json()
    assert {n["name"] for n in st["nodes"]} == {"a", "b"}

    r = httpx.post(base + "/v1/cluster/nodes/a/drain", headers=auth, json={"drain": True})
    assert r.status_code == 200 and r.json()["draining"] is True
    assert app.model.router.get("a").draining

    r = httpx.delete(base + "/v1/cluster/nodes/a", headers=auth)
    assert r.status_code == 200
    assert httpx.delete(base + "/v1/cluster/nodes/a", headers=auth).status_code == 404

    m = httpx.get(base + "/metrics", headers=auth)
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert "# TYPE bastion_cluster_requests_total counter" in m.text
    assert 'bastion_cluster_breaker_state{node="b"} 0' in m.text


def test_cli_against_running_server(live: tuple[App, str], fakes: dict[str, Proc]) -> None:
    app, _ = live
    _load_commands()
    runner = CliRunner()
    res = runner.invoke(
        cli, ["cluster", "add", "b", fakes["b"].url, "--engine", "openai", "--tier", "large"]
    )
    assert res.exit_code == 0, res.output
    assert "b" in app.model.router.nodes  # type: ignore[attr-defined]
    res = runner.invoke(cli, ["cluster", "status", "--json"])
    assert res.exit_code == 0, res.output
    assert {n["name"] for n in json.loads(res.output)["nodes"]} == {"a", "b"}
    res = runner.invoke(cli, ["cluster", "status"], env={"COLUMNS": "200"})
    assert "breaker" in res.output and "closed" in res.output and fakes["b"].url in res.output
    assert runner.invoke(cli, ["cluster", "drain", "b"]).exit_code == 0
    assert app.model.router.get("b").draining  # type: ignore[attr-defined]
    assert runner.invoke(cli, ["cluster", "resume", "b"]).exit_code == 0
    assert not app.model.router.get("b").draining  # type: ignore[attr-defined]
    res = runner.invoke(cli, ["cluster", "metrics"])
    assert "bastion_cluster_in_flight" in res.output
    assert runner.invoke(cli, ["cluster", "remove", "b"]).exit_code == 0
    assert "b" not in app.model.router.nodes  # type: ignore[attr-defined]


def test_cli_without_server_edits_config_and_checks_locally(
    fakes: dict[str, Proc], bastion_home: Path
) -> None:
    port = free_port()  # nothing listens there
    (bastion_home / "bastion.yaml").write_text(
        yaml.safe_dump({"api": {"token": TOKEN, "port": port}, "model": {"backend": "cluster"}})
    )
    _load_commands()
    runner = CliRunner()
    res = runner.invoke(cli, ["cluster", "add", "a", fakes["a"].url, "--model", "fake-model"])
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((bastion_home / "bastion.yaml").read_text())
    assert saved["cluster"]["nodes"][0]["url"] == fakes["a"].url
    res = runner.invoke(cli, ["cluster", "status", "--json"])
    assert res.exit_code == 0, res.output
    node = json.loads(res.output)["nodes"][0]
    assert node["name"] == "a" and node["healthy"] is True
    res = runner.invoke(cli, ["cluster", "remove", "a"])
    assert res.exit_code == 0
    assert yaml.safe_load((bastion_home / "bastion.yaml").read_text())["cluster"]["nodes"] == []
