"""The breach tests' gateway: the app's real stages from a default ``Config``, approvers that
answer like a human who denies (or approves only some tools), and a loopback HTTP receiver
that records every request an exfiltration attempt makes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.app import App, build_app
from bastion.config.model import Config
from bastion.memory.base import EphemeralMemory
from bastion.security.approval import ApprovalDecision, ApprovalRequest
from bastion.testing import ScriptedModel
from tests.fakes.runner import RecordingRunner


@dataclass
class Human:
    """Approves the tools in ``approve`` (as a person at the prompt would), denies the rest."""

    approve: set[str] = field(default_factory=set)
    asked: list[ApprovalRequest] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # reasons denied even for approved tools

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        self.asked.append(request)
        if request.tool in self.approve and not self.refuse & set(request.reasons):
            return ApprovalDecision(True, "alice")
        return ApprovalDecision(False, "alice", "denied by the human")


def app_for(workspace: Path, human: Human, *, record_runs: bool = True, model: Any = None,
            **config: Any) -> tuple[App, RecordingRunner]:
    """Build the app from a default ``Config`` (plus ``config``); sandboxed runs recorded.

    With ``record_runs`` the sandbox is a recording runner, so a test sees whether a call's
    body ran at all; otherwise the configured real sandbox runs it.
    """
    data: dict[str, Any] = {"agent": {"workspace": str(workspace)}}
    data.update(config)
    app = build_app(Config.model_validate(data), model=model or ScriptedModel(), approver=human,
                    memory=EphemeralMemory())
    runner = RecordingRunner()
    if record_runs:
        app.gateway.environment.sandbox = runner
    return app, runner


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server: yields (its base URL, the request paths it received)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
