"""A live ``python -m bastion serve`` on loopback, driven by the official ``openai`` client."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from openai import AuthenticationError, NotFoundError, OpenAI

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Live:
    base: str
    token: str
    home: Path
    model: str

    def client(self, token: str | None = None) -> OpenAI:
        return OpenAI(base_url=f"{self.base}/v1", api_key=token or self.token,
                      max_retries=0, timeout=300)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("BASTION_") and "__" in k)}
    env.update({
        "BASTION_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "PYTHONPATH": str(ROOT / "src"),
        # keep the real model's answers short: this test is about the API, not the prose
        "BASTION_MODEL__MAX_TOKENS": "48",
    })
    return env


def _bastion(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bastion", *args], env=_env(home),
                          capture_output=True, text=True, timeout=timeout, cwd=home)


def _wait_for_line(path: Path, proc: subprocess.Popen, pattern: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text())
        if m:
            return m.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"bastion serve exited with {proc.returncode}")
        time.sleep(0.1)
    raise AssertionError("bastion serve did not report its address in time")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("live-home")
    init = _bastion("init", "--yes", home=home)
    assert init.returncode == 0, init.stderr
    token = yaml.safe_load((home / "bastion.yaml").read_text())["api"]["token"]
    workspace = home / "workspace"
    workspace.mkdir(exist_ok=True)
    for name in ("alpha.txt", "beta.txt", "gamma.txt"):
        (workspace / name).write_text(name)
    with serving(home) as base:
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {token}"})
        backend_model = models.json()["data"][1]["id"]
        yield Live(base, token, home, backend_model)


def approve_all(base: str, token: str, stop: threading.Event, every_s: float = 0.1) -> None:
    """Approve every pending call of the server at ``base`` until ``stop`` is set."""
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.is_set():
        try:
            pending = httpx.get(f"{base}/v1/approvals", headers=headers, timeout=5).json()
            for p in pending.get("pending", []):
                httpx.post(f"{base}/v1/approvals/{p['id']}", headers=headers, timeout=5,
                           json={"approve": True})
        except httpx.HTTPError:
            pass
        stop.wait(every_s)


@contextmanager
def serving(home: Path, timeout_s: float = 180,
            env: dict[str, str | None] | None = None) -> Iterator[str]:
    """Run ``python -m bastion serve --port 0`` for ``home``; yield its base URL once healthy.

    ``env``: variables to set (a ``None`` value removes one) on top of :func:`_env`'s.
    """
    out, err = home / "serve.out", home / "serve.err"
    full = _env(home)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                env=full, stdout=o, stderr=e, cwd=home)
    try:
        deadline = time.monotonic() + timeout_s
        port = _wait_for_line(out, proc, r"http://127\.0\.0\.1:(\d+)", deadline)
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err.read_text()


def test_binds_loopback_and_health_needs_no_token(live: Live):
    assert live.base.startswith("http://127.0.0.1:")
    resp = httpx.get(f"{live.base}/health")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


def test_models_list(live: Live):
    ids = [m.id for m in live.client().models.list()]
    assert ids[0] == "bastion-agent" and live.model in ids


def test_bad_token_is_rejected(live: Live):
    with pytest.raises(AuthenticationError) as info:
        live.client(token="not-the-token").chat.completions.create(
            model="bastion-agent", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert "wrong API token" in info.value.message
    resp = httpx.get(f"{live.base}/v1/models")
    assert resp.status_code == 401 and "missing API token" in resp.json()["error"]["message"]


def test_bad_json_body_is_a_one_line_422(live: Live):
    resp = httpx.post(f"{live.base}/v1/chat/completions", content=b'{"model": "bastion-agent", ',
                      headers={"Authorization": f"Bearer {live.token}",
                               "Content-Type": "application/json"})
    assert resp.status_code == 422
    message = resp.json()["error"]["message"]
    assert message.startswith("request body is not valid JSON") and "\n" not in message
    assert "Traceback" not in resp.text


def test_unknown_model_lists_the_models(live: Live):
    with pytest.raises(NotFoundError) as info:
        live.client().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "bastion-agent" in info.value.message


@pytest.mark.real_model
def test_agent_non_stream_runs_a_tool_on_the_real_model(live: Live):
    done = live.client().chat.completions.create(
        model="bastion-agent",
        messages=[{"role": "user",
                   "content": "List the files in the workspace and say how many there are."}],
    )
    extra = done.model_extra["bastion"]
    steps = extra["tool_steps"]
    assert steps, "the agent made no tool call"
    assert any(s["ok"] and "alpha.txt" in s["text"] for s in steps), steps
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].message.content
    assert done.usage.completion_tokens > 0


@pytest.mark.real_model
def test_agent_stream_shows_tool_steps_on_the_real_model(live: Live):
    stream = live.client().chat.completions.create(
        model="bastion-agent", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Use list_files to list the workspace."}],
        extra_headers={"X-Bastion-Session": "live-1"},
    )
    kinds, text, usage, finish = [], "", None, None
    for chunk in stream:
        extra = (chunk.model_extra or {}).get("bastion")
        if extra:
            kinds.append(extra["type"])
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert "tool_started" in kinds and "tool_finished" in kinds and kinds[-1] == "done"
    assert finish == "stop" and text.strip() and usage is not None
    session = httpx.get(f"{live.base}/v1/sessions/live-1",
                        headers={"Authorization": f"Bearer {live.token}"}).json()
    assert [m["role"] for m in session["messages"]][:2] == ["user", "assistant"]
    assert any(m["role"] == "tool" for m in session["messages"])


@pytest.mark.real_model
def test_passthrough_stream_and_non_stream_on_the_real_model(live: Live):
    client = live.client()
    pieces, finish = [], None
    for chunk in client.chat.completions.create(
            model=live.model, stream=True, max_tokens=12,
            messages=[{"role": "user", "content": "Say hello."}]):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces).strip() and finish in ("stop", "length")
    done = client.chat.completions.create(
        model=live.model, max_tokens=12, messages=[{"role": "user", "content": "Say hello."}])
    assert done.choices[0].message.content and done.model == live.model


@pytest.mark.real_model
def test_client_gone_mid_stream_frees_the_session(live: Live):
    auth = {"Authorization": f"Bearer {live.token}"}
    body = {"model": "bastion-agent", "stream": True, "session_id": "live-cut",
            "messages": [{"role": "user", "content": "Use list_files to list the workspace."}]}
    with httpx.stream("POST", f"{live.base}/v1/chat/completions", json=body, headers=auth,
                      timeout=300) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: "):
                break  # first chunk seen: hang up
    deadline = time.monotonic() + 240
    busy = True
    while busy and time.monotonic() < deadline:
        got = httpx.get(f"{live.base}/v1/sessions/live-cut", headers=auth)
        # 404: the turn was cancelled before anything was stored, and nothing holds the session.
        busy = got.status_code != 404 and got.json()["busy"]
        if busy:
            time.sleep(0.5)
    assert not busy, "the session stayed busy after the client left"
    # The session is free again: a new turn on it is accepted (not 409).
    body["stream"] = False
    body["max_tokens"] = 8
    again = httpx.post(f"{live.base}/v1/chat/completions", json=body, headers=auth, timeout=300)
    assert again.status_code == 200, again.text
    assert httpx.get(f"{live.base}/health").status_code == 200


def test_serve_refuses_without_a_token(tmp_path: Path):
    home = tmp_path / "no-token"
    home.mkdir()
    (home / "bastion.yaml").write_text("api:\n  port: 8765\n")
    proc = _bastion("serve", home=home, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: no API token is configured, so bastion serve will not start "
                     "(fix: bastion init)"]


def test_serve_port_in_use_is_one_line(live: Live):
    port = int(live.base.rsplit(":", 1)[1])
    with socket.socket() as s:  # the live server holds its port: ask for the same one
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) == 0
    proc = _bastion("serve", "--port", str(port), home=live.home, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (fix: choose another "
        "port: bastion serve --port N (or bastion config set api.port N))"]
