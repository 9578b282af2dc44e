"""``bastion.client`` against a live ``python -m bastion serve`` (the scripted model).

Each typed call the CLI makes, its error answers as one-line errors with a fix, and the
CLI commands that go through it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bastion.client import BastionClient, ServerRefused, ServerUnreachable
from bastion.cluster.admin import NodeIn
from bastion.errors import BastionError
from bastion.server.schemas import RotateBody
from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.server.test_live_server import _env, serving

TOKEN = "client-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("client-home")
    with FakeOpenAIServer() as fake:
        (home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},  # the fake only streams
            "api": {"token": TOKEN},
            "memory": {"enabled": True, "semantic": False},
            "intelligence": {"enabled": False},
        }))
        with serving(home) as base:
            yield base, home


def test_typed_calls_and_their_answers(served: tuple[str, Path]) -> None:
    base, _ = served
    with BastionClient(base, TOKEN) as api:
        assert api.health().status == "ok"
        browser = api.browser_sessions()
        assert (browser.enabled, browser.sandboxed, browser.sessions) == (False, None, [])
        with pytest.raises(ServerRefused) as off:
            api.cluster_status()  # model.backend is openai: the feature is off
        assert (off.value.status, off.value.code) == (409, "no_cluster")
        assert "model.backend: cluster" in (off.value.fix or "")
        for call in (lambda: api.add_node(NodeIn(name="n1", url="http://127.0.0.1:1")),
                     lambda: api.drain_node("n1"), lambda: api.remove_node("n1")):
            with pytest.raises(ServerRefused) as info:
                call()
            assert info.value.code == "no_cluster"
        assert "# TYPE" in api.metrics() or api.metrics() == ""
        with pytest.raises(ServerRefused) as gone:
            api.close_browser_session("nobody")
        assert gone.value.status == 404 and gone.value.fix == "bastion browser sessions"
        assert "\n" not in gone.value.message and "(fix:" not in gone.value.message
        with pytest.raises(ServerRefused) as rot:
            api.rotate_secret(RotateBody(backend="vault", path="app/db"))
        assert rot.value.status == 409 and "secrets.vault" in (rot.value.fix or "")


def test_sessions_approvals_and_audit_are_typed_models(served: tuple[str, Path]) -> None:
    from bastion.server import responses as r

    base, _ = served
    with BastionClient(base, TOKEN) as api:
        assert "bastion-agent" in [m.id for m in api.models().data]
        sid = api.create_session().id
        answer = api.send(sid, "hello")
        assert isinstance(answer, r.TurnAnswer) and answer.session_id == sid
        assert answer.answer == "echo: hello" and answer.usage.completion_tokens >= 0
        from bastion.server import stream_events as ev

        streamed = list(api.stream(sid, "again"))  # each event parsed into its typed model
        assert type(streamed[0]) is ev.SessionEvent and streamed[0].session_id == sid
        assert "".join(e.text for e in streamed if isinstance(e, ev.TextEvent)) == "echo: again"
        assert type(streamed[-1]) is ev.DoneEvent and streamed[-1].answer == "echo: again"
        with pytest.raises(ServerRefused) as bad:
            list(api.stream("no/such", "x"))
        assert bad.value.status in (404, 422)
        page = api.session(sid)
        assert [m.role for m in page.messages] == ["user", "assistant"] * 2 and page.total == 4
        assert sid in [s.id for s in api.sessions().data]
        assert api.approvals().pending == []
        events = api.audit_events(limit=5).events
        assert events and all(isinstance(e, r.AuditEvent) for e in events)
        assert api.audit_verify().ok is True
        assert api.delete_session(sid).deleted is True
        with pytest.raises(ServerRefused) as gone:
            api.session(sid)
        assert gone.value.status == 404


def test_wrong_token_and_no_server_are_one_line_errors(served: tuple[str, Path]) -> None:
    base, _ = served
    with BastionClient(base, "not-the-token") as api, pytest.raises(ServerRefused) as info:
        api.browser_sessions()
    assert info.value.status == 401 and isinstance(info.value, BastionError)
    assert info.value.message == "wrong API token" and "api.token" in (info.value.fix or "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with BastionClient(f"http://127.0.0.1:{port}", TOKEN) as api, \
            pytest.raises(ServerUnreachable) as down:
        api.health()
    assert down.value.fix == "start it: bastion serve"


def _cli(home: Path, base: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = _env(home) | {"BASTION_API__PORT": base.rsplit(":", 1)[1]}
    return subprocess.run([sys.executable, "-m", "bastion", *args], env=env, cwd=home,
                          capture_output=True, text=True, timeout=120)


def test_cli_commands_go_through_the_client(served: tuple[str, Path]) -> None:
    base, home = served
    out = _cli(home, base, "browser", "sessions")
    assert out.returncode == 0 and "browser is disabled" in out.stdout, out.stderr
    out = _cli(home, base, "browser", "close", "nobody")
    assert out.returncode != 0 and "no open browser session" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli(home, base, "cluster", "status", "--json")
    assert out.returncode == 0, out.stderr  # no cluster there: one health check from here
    out = _cli(home, base, "secrets", "rotate", "app/db", "--backend", "vault", "--api")
    assert out.returncode != 0 and "vault secret backend is switched off" in out.stderr
    assert "Traceback" not in out.stderr
