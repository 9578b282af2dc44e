"""Real components for intelligence tests: the app's gateway and audit log on a fake clock,
a local HTTP page server, a loopback rsyslog and recording HTTP receivers."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bastion.security.approval import ApprovalDecision, ApprovalRequest


class Clock:
    """The wall clock the app sees (``time.time`` is patched to it)."""

    def __init__(self, start: datetime) -> None:
        self.t = start.timestamp()

    def __call__(self) -> float:
        return self.t

    def at(self, when: datetime) -> None:
        self.t = when.timestamp()

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock(datetime(2026, 11, 2, 9, 0))  # a Monday morning, local time
    monkeypatch.setattr(time, "time", c)
    return c


class ScriptedApprover:
    """A human that answers from a script (True/False per request) and records the asks."""

    def __init__(self, answers: Callable[[ApprovalRequest], bool] | None = None) -> None:
        self.answers = answers or (lambda r: False)
        self.asked: list[ApprovalRequest] = []

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        self.asked.append(request)
        ok = self.answers(request)
        return ApprovalDecision(ok, "alice", "looks fine" if ok else "not expected")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def http_receiver() -> Iterator[Callable[..., tuple[str, Received]]]:
    """Start HTTP servers whose POST handling is given by a function(path, headers, body)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handle: Callable[[str, dict[str, str], bytes], tuple[int, Any]] | None = None
              ) -> tuple[str, Received]:
        got = Received()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with got.lock:
                    got.requests.append({"path": self.path, "headers": headers, "body": body})
                status, answer = handle(self.path, headers, body) if handle else (200, {})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                data = f"<html><body><p>page {self.path}</p></body></html>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", got

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@dataclass
class Rsyslog:
    udp_port: int
    tcp_port: int
    out: Path

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def wait_lines(self, n: int, timeout_s: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.lines()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        return self.lines()


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    """A real rsyslogd on loopback UDP+TCP ports with its own config (system config untouched).

    The output template prints what rsyslog parsed from each RFC 5424 message, field by field.
    """
    exe = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not Path(exe).exists():
        if os.environ.get("CI"):
            pytest.fail("rsyslogd is missing (scripts/system-deps.sh installs rsyslog)")
        pytest.skip("rsyslogd is not installed (apt-get install rsyslog)")
    work = tmp_path / "rsyslog"
    work.mkdir()
    udp, tcp = free_port(socket.SOCK_DGRAM), free_port()
    out = work / "out.log"
    conf = work / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="fields" type="string"
         string="%pri%|%protocol-version%|%app-name%|%msgid%|%structured-data%|%msg%\\n")
*.* action(type="omfile" file="{out}" template="fields")
""")
    proc = subprocess.Popen([exe, "-n", "-f", str(conf), "-i", str(work / "pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # ready when the TCP input accepts connections
        try:
            socket.create_connection(("127.0.0.1", tcp), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else b""
                raise RuntimeError(f"rsyslogd exited: {err!r}") from None
            time.sleep(0.05)
    try:
        yield Rsyslog(udp, tcp, out)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def workday(day: int, hour: int, minute: int = 0) -> datetime:
    """Monday 2 November 2026 + ``day`` days (weekends skipped), at local ``hour:minute``."""
    d = datetime(2026, 11, 2)
    added = 0
    while added < day:
        d += timedelta(days=1)
        if d.weekday() < 5:
            added += 1
    return d.replace(hour=hour, minute=minute)
