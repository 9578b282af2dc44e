"""F21 attacks on the API token: an empty token (``BASTION_API__TOKEN=``) or a short one must
stop ``bastion serve``, ``bastion mcp serve --http`` and ``bastion gateway serve`` at start
(an empty one let a WebSocket with ``?token=`` in); the WebSocket takes the token in a header
or a subprotocol, and a ``?token=`` kept for old clients never reaches the server's log."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.cluster._procs import stop_group

ROOT = Path(__file__).resolve().parents[2]
GOOD = "k9D2fW7qLx0ZpR4tY8vB1nM6cJ3hG5sA-eU_iO"  # 38 characters


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _home(home: Path, port: int) -> None:
    (home / "bastion.yaml").write_text(yaml.safe_dump({
        "api": {"token": GOOD, "port": port},
        "memory": {"enabled": False},
        "security": {"sandbox": "none"},
        "model": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "x"},
    }))


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(BASTION_HOME=str(home), PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1",
               NO_COLOR="1", **extra)
    return env


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _start(home: Path, argv: list[str], port: int, env: dict[str, str],
           log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", *argv], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


def _ws_accepted(url: str, **kw: object) -> bool:
    from websockets.exceptions import InvalidHandshake
    from websockets.sync.client import connect

    try:
        with connect(url, open_timeout=20, close_timeout=2, **kw) as ws:  # type: ignore[arg-type]
            ws.recv(timeout=20)
            return True
    except (InvalidHandshake, OSError, TimeoutError):
        return False


def test_empty_token_stops_serve_and_empty_query_token_gets_nothing(
        bastion_home: Path, tmp_path: Path) -> None:
    port = _free_port()
    _home(bastion_home, port)
    log = tmp_path / "serve.log"
    proc = _start(bastion_home, ["serve"], port, _env(bastion_home, BASTION_API__TOKEN=""), log)
    try:
        # the attack: the server (if it started) is asked with an empty ?token=
        ws_in = _listening(port) and _ws_accepted(f"ws://127.0.0.1:{port}/v1/voice/ws?token=")
        rc = proc.wait(10) if not _listening(port) else None
    finally:
        stop_group(proc)
    out = log.read_text()
    assert not ws_in, "a WebSocket with an empty ?token= was let in"
    assert rc not in (None, 0), out
    assert "api.token" in out and "fix:" in out.lower() and "Traceback" not in out, out


@pytest.mark.parametrize(("argv", "token"), [
    (["serve"], "short-token-1234"),
    (["mcp", "serve", "--http"], ""),
    (["gateway", "serve"], "short-token-1234"),
])
def test_weak_token_refused_at_start(bastion_home: Path, tmp_path: Path, argv: list[str],
                                     token: str) -> None:
    port = _free_port()
    _home(bastion_home, port)
    log = tmp_path / "start.log"
    proc = _start(bastion_home, [*argv, "--port", str(port)], port,
                  _env(bastion_home, BASTION_API__TOKEN=token), log)
    try:
        started = _listening(port)
        rc = None if started else proc.wait(30)
    finally:
        stop_group(proc)
    out = log.read_text()
    assert not started, f"{' '.join(argv)} started with the token {token!r}"
    assert rc != 0 and "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert any("api.token" in ln and "32" in ln for ln in lines), out


@pytest.fixture
def live(bastion_home: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = _free_port()
    _home(bastion_home, port)
    log = tmp_path / "serve.log"
    proc = _start(bastion_home, ["serve", "--log-level", "info"], port, _env(bastion_home),
                  log)
    try:
        assert _listening(port), log.read_text()
        yield port, log
    finally:
        stop_group(proc)


def test_websocket_token_by_header_or_subprotocol_and_query_not_logged(
        live: tuple[int, Path]) -> None:
    port, log = live
    url = f"ws://127.0.0.1:{port}/v1/voice/ws"
    assert not _ws_accepted(url)
    assert not _ws_accepted(url, subprotocols=["bastion", "bastion.token.wrong"])
    assert _ws_accepted(url, additional_headers={"Authorization": f"Bearer {GOOD}"})
    assert _ws_accepted(url, subprotocols=["bastion", f"bastion.token.{GOOD}"])
    assert _ws_accepted(f"{url}?token={GOOD}")  # old clients still work ...
    time.sleep(0.5)
    text = log.read_text()
    assert "/v1/voice/ws" in text  # the access log saw the requests ...
    assert GOOD not in text  # ... but never the token
