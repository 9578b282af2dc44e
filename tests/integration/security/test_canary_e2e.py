"""Canary, end to end with real components: a secret in a sops file is injected into a real
bubblewrap sandbox, a tool prints it (raw, base64, hex, URL-encoded) -> it never reaches the
model context, the API response, the audit log, the CLI output or any file under BASTION_HOME."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from bastion.app import build_app
from bastion.config.model import ApiConfig, Config, MemoryConfig, SecretsConfig
from bastion.security.approval import AllowApprover
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from bastion.security.secrets.sops import SopsBackend
from bastion.server.app import create_app
from bastion.testing import ScriptedModel, call, say

CANARY = "cnry-9f2C-Q7x/pL+m31_zzW"
TOKEN = "tok-canary-api-1234"
COMMAND = (
    'echo "raw:$CANARY"; printf %s "$CANARY" | base64 -w0; echo; '
    'printf %s "$CANARY" | od -An -tx1 | tr -d " \\n"; echo; '
    'python3 -c "import os,urllib.parse as u;print(u.quote(os.environ[\'CANARY\'],safe=\'\'))"; '
    'printf "proof:%s\\n" "$(printf %s "$CANARY" | sha256sum | cut -c1-12)"'
)


def forms() -> list[str]:
    raw = CANARY.encode()
    return [CANARY, base64.b64encode(raw).decode().rstrip("="), raw.hex(), raw.hex().upper(),
            quote(CANARY, safe="")]


def assert_clean(text: str, where: str) -> None:
    for f in forms():
        assert f not in text, f"canary form {f!r} leaked into {where}"


@pytest.fixture
def app_and_model(bastion_home: Path):  # type: ignore[no-untyped-def]
    if BubblewrapSandbox.available() is not None:
        pytest.skip(f"bubblewrap unavailable: {BubblewrapSandbox.available()}")
    sops = SopsBackend(bastion_home / "secrets" / "secrets.enc.yaml",
                       bastion_home / "secrets" / "age.key")
    sops.put("canary", {"value": CANARY})
    config = Config(
        api=ApiConfig(token=TOKEN), memory=MemoryConfig(semantic=False),
        secrets=SecretsConfig(tools={"shell": {"CANARY": "secret://sops/canary#value"}}),
    )
    config.security.sandbox = "bubblewrap"
    model = ScriptedModel(call("shell", command=COMMAND), say("The tool ran."),
                          call("shell", command=COMMAND), say("Ran it again."))
    # a call that is handed a secret asks a human (F4); this one approves: the test is about
    # where the value goes once the call runs
    app = build_app(config, model=model, approver=AllowApprover())
    yield app, model
    app.audit.close()


def test_canary_never_leaks(app_and_model, bastion_home: Path) -> None:  # type: ignore[no-untyped-def]
    app, model = app_and_model
    with TestClient(create_app(app), headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        resp = client.post("/v1/sessions/canary-1/messages",
                           json={"content": "run the tool", "stream": False})
        assert resp.status_code == 200, resp.text
        body = resp.text
        step = resp.json()["tool_steps"][0]
        assert step["decision"] == "allowed", step
        streamed = client.post("/v1/sessions/canary-2/messages",
                               json={"content": "again", "stream": True}).text
        audit_api = client.get("/v1/audit/events?limit=50").text
        export_api = client.get("/v1/audit/export?format=csv").text
        history = client.get("/v1/sessions/canary-1").text
    # The tool really had the secret in its sandbox: it printed its hash, and what it printed
    # of the secret itself came back masked.
    digest = "proof:" + hashlib.sha256(CANARY.encode()).hexdigest()[:12]
    tool_text = model.seen[1].messages[-1].content
    assert digest in tool_text and "[REDACTED]" in tool_text and "raw:[REDACTED]" in tool_text
    # 1. model context (every message of every model call)
    for seen in model.seen:
        for m in seen.messages:
            assert_clean(m.content, f"model context ({m.role})")
    # 2. API responses
    for where, text in (("response", body), ("stream", streamed), ("audit api", audit_api),
                        ("export api", export_api), ("session history", history)):
        assert_clean(text, where)
    # 3. the audit log: the database files, byte for byte, and it still verifies
    app.audit.flush()
    rep = app.audit.verify()
    assert rep.ok and rep.checked >= 2
    tool_calls = app.audit.events(kind="tool_call")
    assert tool_calls and tool_calls[0].detail["secrets"] == ["CANARY"]
    # 4. the CLI output
    cli = subprocess.run([sys.executable, "-m", "bastion", "audit", "tools", "--json"],
                         capture_output=True, text=True, timeout=120,
                         env={"BASTION_HOME": str(bastion_home), "PATH": "/usr/bin:/bin"})
    assert cli.returncode == 0, cli.stderr
    assert "shell" in cli.stdout
    assert_clean(cli.stdout + cli.stderr, "CLI output")
    # 5. every file bastion wrote (databases, WAL, logs, head, keys), except the encrypted store
    for path in bastion_home.rglob("*"):
        if path.is_file() and path.name != "secrets.enc.yaml":
            data = path.read_bytes().decode("latin-1")
            assert_clean(data, str(path.relative_to(bastion_home)))
    assert CANARY not in (bastion_home / "secrets" / "secrets.enc.yaml").read_text()
    assert json.loads(resp.text)["answer"] == "The tool ran."


async def test_secret_is_never_on_any_command_line(app_and_model) -> None:  # type: ignore[no-untyped-def]
    """While the sandboxed tool runs, no process on the host has the value in its argv."""
    import asyncio
    import os

    from bastion.messages import ToolCall

    app, _ = app_and_model
    hits: list[str] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if CANARY.encode() in cmd:
                        hits.append(pid)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    res = await app.gateway.execute(
        ToolCall("shell", {"command": 'sleep 0.5; test -n "$CANARY" && echo injected'}),
        session_id="argv")
    done.set()
    await watcher
    assert res.ok and "injected" in res.text, res.text
    assert hits == []
