"""Unattended runs through a live ``bastion serve``: park, notify, resume, receipts, restarts.

Real components throughout: the server process (killed with SIGKILL and restarted on the same
home), real bubblewrap for the ``shell`` calls, an in-process ``aiosmtpd`` SMTP server that
receives the approval e-mail, a local HTTP receiver for the webhook and the ntfy push, and the
scripted OpenAI-compatible server (``run shell: CMD`` -> one ``shell`` call; a tool result ->
"The tool said: <its first line>"). ``security.tools.shell: ask`` makes every shell call one
that needs a human, so each run parks deterministically.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bastion.security.audit import verify as audit_verify
from bastion.security.keystore import open_store as open_keystore
from bastion.tasks.receipt import verify_receipt
from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.server.test_live_server import _env, _wait_for_line

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")

TOKEN = "runs-live-test-token-0123456789abcdef"
H = {"Authorization": f"Bearer {TOKEN}"}


class _Receiver(ThreadingHTTPServer):
    """Collects every POST (path, headers, body): the webhook and the ntfy endpoint."""

    daemon_threads = True

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(inner) -> None:  # noqa: N805 - the handler's self
                body = inner.rfile.read(int(inner.headers.get("Content-Length", 0)))
                self.posts.append((inner.path, {k.lower(): v for k, v in inner.headers.items()},
                                   body))
                inner.send_response(200)
                inner.send_header("Content-Length", "0")
                inner.end_headers()

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Mailbox:
    """aiosmtpd handler: keeps each message's envelope and text."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.mails.append((list(envelope.rcpt_tos), envelope.content.decode("utf-8", "replace")))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    home: Path
    ws: Path
    hooks: _Receiver
    mailbox: _Mailbox
    proc: subprocess.Popen[bytes] | None = None
    base: str = ""
    starts: int = 0
    api: httpx.Client = field(default_factory=lambda: httpx.Client(headers=H, timeout=30))

    def start(self) -> None:
        self.starts += 1
        out, err = self.home / f"serve{self.starts}.out", self.home / f"serve{self.starts}.err"
        with out.open("w") as o, err.open("w") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                         env=_env(self.home), stdout=o, stderr=e, cwd=self.home)
        deadline = time.monotonic() + 120
        port = _wait_for_line(out, self.proc, r"http://127\.0\.0\.1:(\d+)", deadline)
        self.base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def audit_db(self) -> Path:
        return self.home / "audit" / "audit.db"

    def url(self, path: str) -> str:
        return self.base + path

    def start_run(self, name: str, prompt: str, **task: Any) -> str:
        """Add a manual task through the tasks API and run it now; return the run id."""
        r = self.api.post(self.url("/v1/tasks"), json={
            "name": name, "prompt": prompt, "schedule": {"kind": "manual"}, **task})
        assert r.status_code == 201, r.text
        r = self.api.post(self.url(f"/v1/tasks/{name}/run"))
        assert r.status_code == 202, r.text
        return str(r.json()["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        r = self.api.get(self.url(f"/v1/runs/{run_id}"))
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, run_id: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 30
             ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if ok(run):
                return run
            assert time.monotonic() < deadline, run
            time.sleep(0.1)

    def pending(self) -> list[dict[str, Any]]:
        return list(self.api.get(self.url("/v1/approvals")).json()["pending"])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bastion", *args], env=_env(self.home),
                              cwd=self.home, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("runs-home")
    ws = home / "workspace"
    ws.mkdir()
    mailbox = _Mailbox()
    smtp = aiosmtpd_controller.Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    hooks = _Receiver()
    with FakeOpenAIServer() as fake:
        (home / "bastion.yaml").write_text(yaml.safe_dump({
            "model": {"backend": "openai", "base_url": fake.base_url, "name": "fake",
                      "native_tools": True},
            "api": {"token": TOKEN},
            "agent": {"workspace": str(ws)},
            "memory": {"enabled": True, "semantic": False},
            "security": {"sandbox": "bubblewrap", "tools": {"shell": "ask"}},
            "intelligence": {"enabled": False},
            "notify": {"public_url": "http://bastion.example:8765", "smtp_host": "127.0.0.1",
                       "smtp_port": smtp.port},
        }))
        lv = Live(home, ws, hooks, mailbox)
        lv.start()
        try:
            yield lv
        finally:
            lv.stop()
            smtp.stop()
            hooks.shutdown()
    for n in range(1, lv.starts + 1):
        assert "Traceback" not in (home / f"serve{n}.err").read_text()


def _parked(run: dict[str, Any]) -> bool:
    return run["status"] == "parked"


def _ended(run: dict[str, Any]) -> bool:
    return run["status"] in ("done", "failed")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_park_notify_approve_resume_and_the_receipt_verifies(live: Live, tmp_path: Path) -> None:
    run_id = live.start_run(
        "nightly", "run shell: echo once >> once.txt",
        notify=[f"{live.hooks.url}/hook", f"ntfy:{live.hooks.url}/topic", "mailto:ops@example.org"])
    run = live.wait(run_id, _parked)
    assert run["parked"] and not (live.ws / "once.txt").exists()
    approval = run["parked"][0]
    pending = {p["id"]: p for p in live.pending()}
    assert pending[approval]["tool"] == "shell"  # the normal approvals API lists it
    assert pending[approval]["arguments"] == {"command": "echo once >> once.txt"}
    assert pending[approval]["session_id"] == run["session_id"]

    deadline = time.monotonic() + 20  # webhook JSON, ntfy push and e-mail, each with the call
    while (len(live.hooks.posts) < 2 or not live.mailbox.mails) and time.monotonic() < deadline:
        time.sleep(0.1)
    hook = next(json.loads(b) for p, _, b in live.hooks.posts if p == "/hook")
    assert hook["call"] == {"tool": "shell", "arguments": {"command": "echo once >> once.txt"}}
    assert hook["link"] == f"http://bastion.example:8765/approvals#{approval}"
    assert hook["run_id"] == run_id and hook["approval_id"] == approval
    path, headers, body = next(x for x in live.hooks.posts if x[0] == "/topic")
    assert headers["click"] == hook["link"] and "echo once >> once.txt" in body.decode()
    rcpt, mail = live.mailbox.mails[0]
    assert rcpt == ["ops@example.org"]
    assert "echo once >> once.txt" in mail and hook["link"] in mail

    r = live.api.post(live.url(f"/v1/approvals/{approval}"), json={"approve": True})
    assert r.status_code == 200, r.text
    run = live.wait(run_id, _ended)
    assert run["status"] == "done", run["reason"]
    assert _lines(live.ws / "once.txt") == ["once"]  # the approved call ran exactly once
    assert [c["status"] for c in run["calls"]] == ["done"]

    receipt_file = tmp_path / "receipt.json"
    out = live.cli("run", "receipt", run_id, "-o", str(receipt_file))
    assert out.returncode == 0, out.stderr
    receipt = json.loads(receipt_file.read_text())
    assert receipt == live.api.get(live.url(f"/v1/runs/{run_id}/receipt")).json()
    assert receipt["task"] == "nightly" and receipt["owner"] == "admin"
    assert receipt["trigger"]["kind"] == "manual"
    assert receipt["model"]["id"] == "fake"
    [call] = receipt["tool_calls"]
    assert call["tool"] == "shell" and call["decision"] == "allowed"
    assert call["approver"] == "api:admin"  # who approved, as the approvals API records it
    ok = live.cli("run", "verify", str(receipt_file))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: run " + run_id), ok

    listed = live.cli("task", "runs", "nightly", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)["runs"]] == [run_id], listed.stderr

    forged = dict(receipt, answer_sha256="0" * 64)  # a tampered receipt fails in one line
    assert verify_receipt(forged, live.audit_db).line == (
        "FAILED: the receipt's signature does not match its contents (it was altered)")


def test_past_the_deadline_the_call_is_denied_and_the_model_sees_why(live: Live) -> None:
    run_id = live.start_run("deadline", "run shell: echo never >> never.txt",
                            policy={"approval_deadline_s": 1})
    live.wait(run_id, _parked)
    run = live.wait(run_id, _ended, timeout=20)
    assert run["status"] == "done" and not (live.ws / "never.txt").exists()
    receipt = live.api.get(live.url(f"/v1/runs/{run_id}/receipt")).json()
    [call] = receipt["tool_calls"]
    assert call["decision"] == "denied" and call["approver"] == "deadline"
    events = live.api.get(live.url("/v1/audit/events"),
                          params={"session_id": run["session_id"], "limit": 50}).json()
    text = json.dumps(events)
    assert "past the task's deadline: no decision within 1s" in text


def test_deny_shows_the_model_the_denial(live: Live) -> None:
    run_id = live.start_run("denied", "run shell: echo no >> no.txt")
    approval = live.wait(run_id, _parked)["parked"][0]
    r = live.api.post(live.url(f"/v1/approvals/{approval}"),
                      json={"approve": False, "reason": "not tonight"})
    assert r.status_code == 200
    run = live.wait(run_id, _ended)
    assert run["status"] == "done" and not (live.ws / "no.txt").exists()
    session = live.api.get(live.url(f"/v1/sessions/{run['session_id']}")).json()
    assert "not tonight" in json.dumps(session)  # the tool message the model was given


def test_policy_tools_allowlist_and_wall_clock_budget(live: Live) -> None:
    narrow = live.start_run("narrow", "run shell: echo x >> narrow.txt",
                            policy={"tools": ["read_file", "list_files"]})
    slow = live.start_run("slow", "slow please", policy={"wall_clock_s": 1})
    run = live.wait(narrow, _ended)  # shell is not offered, so the model's call is refused
    assert run["status"] == "failed" and "unknown tool 'shell'" in run["reason"]
    assert not (live.ws / "narrow.txt").exists()
    assert live.api.get(live.url(f"/v1/runs/{narrow}/receipt")).json()["tool_calls"] == []
    run = live.wait(slow, _ended, timeout=20)
    assert (run["status"], run["reason"]) == ("failed", "wall-clock budget of 1s used up")


def test_sigkill_while_parked_and_while_a_sandboxed_call_runs(live: Live) -> None:
    """One SIGKILL: a parked run is listed again and runs its call once after Allow; the call
    that was running in bubblewrap is reported to the model, never run a second time."""
    parked_id = live.start_run("restart-parked", "run shell: echo parked >> parked.txt")
    approval = live.wait(parked_id, _parked)["parked"][0]
    cmd = "echo start >> mid.txt; sleep 3; echo end >> mid.txt"
    mid_id = live.start_run("restart-mid", f"run shell: {cmd}",
                            policy={"auto_approve": [{"tool": "shell", "max_risk": "high"}]})
    live.wait(mid_id, lambda r: bool(r["calls"]) and _lines(live.ws / "mid.txt") == ["start"])
    live.kill()
    live.start()

    assert approval in {p["id"] for p in live.pending()}  # listed again after the restart
    r = live.api.post(live.url(f"/v1/approvals/{approval}"), json={"approve": True})
    assert r.status_code == 200, r.text
    run = live.wait(parked_id, _ended)
    assert run["status"] == "done", run["reason"]
    assert _lines(live.ws / "parked.txt") == ["parked"]

    run = live.wait(mid_id, _ended)
    assert run["status"] == "done" and run["resumes"] == 1, run
    assert _lines(live.ws / "mid.txt").count("start") == 1  # never run a second time
    receipt = live.api.get(live.url(f"/v1/runs/{mid_id}/receipt")).json()
    assert [c["decision"] for c in receipt["tool_calls"]] == ["interrupted"]
    assert audit_verify(live.audit_db).ok  # the audit chain survived the SIGKILL
    assert verify_receipt(receipt, live.audit_db).ok


def test_sigterm_mid_turn_then_the_next_start_resumes_the_run(live: Live) -> None:
    run_id = live.start_run("term", "slow please", policy={"wall_clock_s": 2.5})
    time.sleep(0.5)  # the model is streaming "tick"s
    live.stop()  # SIGTERM
    live.start()
    run = live.wait(run_id, _ended, timeout=30)
    assert run["resumes"] == 1  # taken up again, from its saved state, by the next start
    assert (run["status"], run["reason"]) == ("failed", "wall-clock budget of 2.5s used up")


def test_a_run_acts_as_its_owner_and_only_owner_and_approvers_see_its_approval(
        live: Live) -> None:
    store = open_keystore(live.home)
    try:
        keys = {}
        user_scopes = ("chat", "tasks", "approvals", "sessions:read")
        for user, roles, scopes in (("alice", ["user"], user_scopes),
                                    ("bob", ["user"], user_scopes),
                                    ("carol", ["approver"], ("approvals",))):
            store.add_user(user, roles)
            keys[user] = store.create_key(user, scopes=scopes)[0]
    finally:
        store.close()
    as_ = {u: httpx.Client(base_url=live.base, timeout=30,
                           headers={"Authorization": f"Bearer {k}"}) for u, k in keys.items()}
    r = as_["alice"].post("/v1/tasks", json={"name": "mine", "prompt": "run shell: echo a >> a.txt",
                                            "schedule": {"kind": "manual"}})
    assert r.status_code == 201, r.text
    run_id = as_["alice"].post("/v1/tasks/mine/run").json()["run_id"]
    def alices(ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while not ok(run := as_["alice"].get(f"/v1/runs/{run_id}").json()):
            assert time.monotonic() < deadline, run
            time.sleep(0.1)
        return dict(run)

    run = alices(_parked)
    assert run["owner"] == "alice"
    assert as_["alice"].get(f"/v1/sessions/{run['session_id']}").status_code == 200
    assert as_["bob"].get(f"/v1/sessions/{run['session_id']}").status_code == 404
    assert as_["bob"].get(f"/v1/runs/{run_id}").status_code == 404  # as a missing one
    approval = run["parked"][0]

    def listed(user: str) -> set[str]:
        return {p["id"] for p in as_[user].get("/v1/approvals").json()["pending"]}

    assert approval in listed("alice") and approval in listed("carol")
    assert approval not in listed("bob")
    assert as_["bob"].post(f"/v1/approvals/{approval}", json={"approve": True}).status_code == 404
    r = as_["carol"].post(f"/v1/approvals/{approval}", json={"approve": True})
    assert r.status_code == 200, r.text
    run = alices(_ended)
    assert run["status"] == "done" and _lines(live.ws / "a.txt") == ["a"]
    receipt = as_["alice"].get(f"/v1/runs/{run_id}/receipt").json()
    assert receipt["owner"] == "alice" and receipt["tool_calls"][0]["approver"] == "api:carol"
    records = live.api.get(live.url("/v1/audit/events"), params={
        "session_id": run["session_id"], "kind": "tool_call", "limit": 5,
        "all_users": "true"}).json()
    [record] = records["events"]
    assert record["detail"]["principal"] == {"user": "alice", "key_id": f"run:{run_id}"}
