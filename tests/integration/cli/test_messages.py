"""#16 items 5-10 through the real CLI (subprocesses) and a live ``bastion serve``."""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fakes.scripted_chat_server import FakeOpenAIServer
from tests.integration.cli.conftest import ROOT, bastion, cli_env, stop, wait_healthy


def run(home: Path, *args: str, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion", *args],
                          env=cli_env(home) | (env or {}), cwd=ROOT, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def _yaml(home: Path) -> dict:
    return yaml.safe_load((home / "bastion.yaml").read_text())


# ---- item 5: fixes that lead somewhere --------------------------------------------------------
def test_config_mistakes_name_the_real_setting(bastion_home: Path) -> None:
    assert run(bastion_home, "init", "--yes").returncode == 0
    typo = run(bastion_home, "config", "set", "model.temprature", "0.2")
    assert typo.returncode == 1 and "did you mean model.temperature?" in typo.stderr
    get = run(bastion_home, "config", "get", "modle.backend")
    assert "did you mean model?" in get.stderr
    env = run(bastion_home, "config", "show", env={"BASTION_MODEL__N_CTX": "lots"})
    assert env.returncode == 1 and "$BASTION_MODEL__N_CTX" in env.stderr
    assert "in " + str(bastion_home / "bastion.yaml") + ":" not in env.stderr  # not the file
    privacy = run(bastion_home, "config", "set", "privacy.enabled", "true")
    assert "config set privacy VALUE" not in privacy.stderr
    assert "(fix: bastion config set privacy.remote" in privacy.stderr
    # item 2: a base_url the embedded backend would silently ignore is an error that says so
    url = run(bastion_home, "ask", "hi", env={"BASTION_MODEL__BASE_URL": "http://127.0.0.1:9/v1"})
    assert url.returncode == 1 and "$BASTION_MODEL__BASE_URL" in url.stderr
    assert "BASTION_MODEL__BACKEND=openai" in url.stderr
    assert all(line.count("(fix: ") <= 1 for line in url.stderr.splitlines())


def test_browser_egress_refusal_names_browser_egress() -> None:
    from bastion.config.model import Config
    from bastion.errors import ToolError
    from bastion.security.browser.setup import browser_fetcher

    config = Config.model_validate({"browser": {"egress": {"domains": ["example.org"]}}})
    with pytest.raises(ToolError) as info:
        browser_fetcher(config).check_egress("https://other.example.com/")
    assert "browser.egress" in info.value.user_text()
    assert "security.egress.web_fetch" not in info.value.user_text()


# ---- a live server for the API-backed commands ----------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """`bastion serve` on a fresh home whose model is a local scripted server (no GGUF load)."""
    home = tmp_path_factory.mktemp("msg-home")
    with FakeOpenAIServer() as fake:
        assert run(home, "init", "--yes").returncode == 0
        cfg = _yaml(home)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cfg["api"]["port"] = port
        cfg["model"].update(backend="openai", base_url=fake.base_url, name="fake",
                            native_tools=True)
        cfg["memory"] = {"enabled": True, "semantic": False}
        (home / "bastion.yaml").write_text(yaml.safe_dump(cfg))
        log = home / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve"],
                                    env=cli_env(home), stdout=out, stderr=subprocess.STDOUT,
                                    cwd=home)
        try:
            wait_healthy(proc, port, log, timeout=120)
            yield home, port
        finally:
            stop(proc, log)


def test_api_errors_carry_one_fix(live: tuple[Path, int]) -> None:
    home, _ = live
    closed = run(home, "browser", "close", "nope")
    assert closed.returncode == 1 and closed.stderr.count("(fix: ") == 1, closed.stderr
    drain = run(home, "cluster", "drain", "gpu2")
    assert "does not route a cluster" in drain.stderr and drain.stderr.count("(fix: ") == 1


def test_cluster_add_to_a_server_without_a_cluster_saves_it(live: tuple[Path, int]) -> None:
    home, _ = live
    added = run(home, "cluster", "add", "gpu2", "http://127.0.0.1:9", "--engine", "vllm")
    assert added.returncode == 0, added.stderr
    assert "does not route a cluster" in added.stdout and "restart bastion serve" in added.stdout
    assert [n["name"] for n in _yaml(home)["cluster"]["nodes"]] == ["gpu2"]
    assert run(home, "cluster", "remove", "gpu2", "--save").returncode == 0


def test_browser_sessions_says_restart_when_the_file_changed(live: tuple[Path, int]) -> None:
    home, _ = live
    before = (home / "bastion.yaml").read_text()
    try:
        assert run(home, "config", "set", "browser.enabled", "true").returncode == 0
        res = run(home, "browser", "sessions")
        assert res.returncode == 1 and "(fix: restart bastion serve)" in res.stderr
    finally:
        (home / "bastion.yaml").write_text(before)


def test_api_since_takes_an_age_like_the_cli(live: tuple[Path, int]) -> None:
    """Item 9: ?since=7d works on the audit and report routes, as --since 7d does."""
    home, port = live
    headers = {"Authorization": f"Bearer {_yaml(home)['api']['token']}"}
    base = f"http://127.0.0.1:{port}"
    events = httpx.get(f"{base}/v1/audit/events?since=7d", headers=headers)
    assert events.status_code == 200, events.text
    bad = httpx.get(f"{base}/v1/audit/events?since=yesterday", headers=headers)
    assert bad.status_code == 400 and "7d" in bad.json()["error"]["fix"]
    report = httpx.get(f"{base}/v1/intel/report?since=30d&format=markdown", headers=headers)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/mark")


# ---- item 8: output for scripts ---------------------------------------------------------------
def test_json_and_uncut_tables_for_scripts(served_home: Path) -> None:
    env = {k: v for k, v in cli_env(served_home).items() if k != "COLUMNS"}
    name = "a-very-long-session-name-" + "x" * 90
    assert bastion(served_home, "ask", "--session", name, "hello").returncode == 0
    listed = subprocess.run([sys.executable, "-m", "bastion", "sessions", "list"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert name in listed.stdout, listed.stdout  # not cut at 80 columns
    for cmd in (["sandbox", "ls"], ["mcp", "list"], ["sandbox", "status"]):
        out = bastion(served_home, *cmd, "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        if cmd[1] == "status":
            assert data["backends"]["bubblewrap"]["available"] in (True, False)
            assert "shell" in data["tools"]


# ---- item 9: consistency ----------------------------------------------------------------------
def test_ask_without_a_session_stores_nothing(served_home: Path) -> None:
    assert bastion(served_home, "ask", "please count files in sample").returncode == 0
    listed = bastion(served_home, "sessions", "list")
    assert "please count" not in listed.stdout
    assert "no sessions" in (listed.stdout + listed.stderr).lower(), listed.stdout


def test_audit_follows_a_session_by_id_and_through_a_rename(served_home: Path) -> None:
    """Item 9: records carry the session's stored id; --session takes its id or current name."""
    assert bastion(served_home, "ask", "--session", "demo",
                   "please count files in sample").returncode == 0
    [info] = json.loads(bastion(served_home, "sessions", "list", "--json").stdout)
    sid = info["id"]
    assert sid != "demo"

    def calls(key: str) -> list[dict]:  # type: ignore[type-arg]
        res = bastion(served_home, "audit", "tools", "--session", key, "--json")
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()]

    by_id = calls(sid)
    assert [c["tool"] for c in by_id] == ["list_files"], by_id
    assert by_id[0]["session_id"] == sid and by_id[0]["session_name"] == "demo"
    assert bastion(served_home, "sessions", "rename", "demo", "renamed").returncode == 0
    renamed = calls("renamed")
    assert [c["id"] for c in renamed] == [by_id[0]["id"]]
    assert renamed[0]["session_name"] == "renamed"
    table = bastion(served_home, "audit", "events", "--session", "renamed")
    assert f"renamed ({sid})" in table.stdout, table.stdout


def test_api_audit_and_thresholds_take_a_session_name(live: tuple[Path, int]) -> None:
    """Item 9 over the API: ?session_id= a name or id, thresholds set by name apply."""
    home, port = live
    headers = {"Authorization": f"Bearer {_yaml(home)['api']['token']}"}
    base = f"http://127.0.0.1:{port}"
    turn = httpx.post(f"{base}/v1/sessions/job/messages", headers=headers, timeout=60,
                      json={"content": "please count files in sample", "stream": False})
    assert turn.status_code == 200, turn.text
    assert run(home, "sessions", "rename", "job", "job2").returncode == 0

    def tool_calls(key: str) -> list[dict]:  # type: ignore[type-arg]
        r = httpx.get(f"{base}/v1/audit/events", headers=headers,
                      params={"session_id": key, "kind": "tool_call"})
        assert r.status_code == 200, r.text
        return r.json()["events"]  # type: ignore[no-any-return]

    [call] = tool_calls("job2")
    assert call["tool"] == "list_files" and call["session_name"] == "job2"
    assert tool_calls(call["session_id"]) == [call]
    # a threshold set by the session's name applies to its calls, and its stream shows the wait
    put = httpx.put(f"{base}/v1/approvals/thresholds/job2", headers=headers, json={"risk": "low"})
    assert put.status_code == 200, put.text
    seen: list[str] = []
    with httpx.stream("POST", f"{base}/v1/sessions/job2/messages", headers=headers, timeout=60,
                      json={"content": "please count files in sample"}) as resp:
        name = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
                seen.append(name)
            elif line.startswith("data:") and name == "approval_pending":
                data = json.loads(line.split(":", 1)[1])
                assert data["session_id"] == call["session_id"]
                listed = httpx.get(f"{base}/v1/approvals", headers=headers,
                                   params={"session_id": "job2"}).json()["pending"]
                assert [p["id"] for p in listed] == [data["id"]]
                assert httpx.post(f"{base}/v1/approvals/{data['id']}", headers=headers,
                                  json={"approve": False}).status_code == 200
    assert "approval_pending" in seen and seen[-1] == "done", seen


def test_intel_report_takes_format_markdown(served_home: Path, tmp_path: Path) -> None:
    assert bastion(served_home, "ask", "please count files in sample").returncode == 0  # audited
    out = tmp_path / "report.md"
    res = run(served_home, "intel", "report", "--since", "7d", "--format", "markdown", "-o",
              str(out))
    assert res.returncode in (0, 2), res.stderr  # 2: the (empty) chain did not verify
    assert out.read_text().startswith("#")


def test_voice_say_writes_the_format_the_name_says(bastion_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("av")
    out = tmp_path / "done.mp3"
    res = run(bastion_home, "voice", "say", "Backup finished.", "-o", str(out), "--engine",
              "espeak")
    if "espeak" in res.stderr and res.returncode:
        pytest.skip(res.stderr)
    assert res.returncode == 0, res.stderr
    head = out.read_bytes()[:4]
    assert not head.startswith(b"RIFF") and (head[:3] == b"ID3" or head[0] == 0xFF)
    odd = run(bastion_home, "voice", "say", "x", "-o", str(tmp_path / "x.doc"))
    assert odd.returncode == 1 and "suffix" in odd.stderr


# ---- item 10: defaults -------------------------------------------------------------------------
def test_init_force_keeps_the_api_token(bastion_home: Path) -> None:
    assert run(bastion_home, "init", "--yes").returncode == 0
    token = _yaml(bastion_home)["api"]["token"]
    forced = run(bastion_home, "init", "--yes", "--force")
    assert forced.returncode == 0 and "API token kept" in forced.stderr
    assert _yaml(bastion_home)["api"]["token"] == token
    assert run(bastion_home, "init", "--yes", "--force", "--rotate-token").returncode == 0
    assert _yaml(bastion_home)["api"]["token"] != token


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254",
                                     "100.100.100.200"])
def test_private_network_does_not_open_metadata(address: str) -> None:
    """allow_private_network opens the LAN, not link-local/metadata (own switch)."""
    from bastion.errors import ToolError
    from bastion.tools.builtin.web import DirectFetcher

    ip = ipaddress.ip_address(address)
    with pytest.raises(ToolError, match="metadata"):
        DirectFetcher(allow_private=True).check(ip, address)
    DirectFetcher(allow_private=True, allow_metadata=True).check(ip, address)
    DirectFetcher(allow_private=True).check(ipaddress.ip_address("192.168.1.5"), "nas")


# ---- item 4: which tool-calling mode to use ---------------------------------------------------
def test_doctor_says_which_tool_calling_mode_to_use(served_home: Path) -> None:
    """A llama.cpp-style server without native tools: doctor names the mode and, for a local
    GGUF, the faster embedded backend (bench/tool_modes.py measured both)."""
    env = {k: v for k, v in cli_env(served_home).items() if k != "COLUMNS"}
    cfg = _yaml(served_home)
    cfg["model"]["native_tools"] = None  # a local server: bastion's constrained steps over HTTP
    (served_home / "bastion.yaml").write_text(yaml.safe_dump(cfg))
    doctor = subprocess.run([sys.executable, "-m", "bastion", "doctor"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    row = next(line for line in doctor.stdout.splitlines() if "tool calling" in line)
    assert "OK" in row and "constrained steps over HTTP" in row
    assert "model.backend embedded" in row and "bench/tool_modes.py" in row
    cfg["model"]["native_tools"] = True
    (served_home / "bastion.yaml").write_text(yaml.safe_dump(cfg))
    doctor = subprocess.run([sys.executable, "-m", "bastion", "doctor"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    row = next(line for line in doctor.stdout.splitlines() if "tool calling" in line)
    assert "OK" in row and "native" in row


# ---- item 7: quiet where it should be ---------------------------------------------------------
@pytest.mark.real_model
def test_node_serve_is_quiet(bastion_home: Path, tmp_path: Path) -> None:
    """llama.cpp's ~2,000 lines of load/debug output stay off unless --verbose."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "node.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "node", "serve", "--port",
                                 str(port), "--no-announce"], env=cli_env(bastion_home),
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = log.read_text().splitlines()
    assert len(lines) < 40, "\n".join(lines[:60])


def test_slow_loads_say_so_at_a_terminal(bastion_home: Path) -> None:
    """The first model load and the embedder load print a line (terminal only)."""
    import pexpect

    assert run(bastion_home, "init", "--yes").returncode == 0
    child = pexpect.spawn(sys.executable, ["-m", "bastion", "ask", "hi"],
                          env=cli_env(bastion_home), cwd=str(ROOT), encoding="utf-8",
                          timeout=120)
    try:
        child.expect("loading the model smollm2-135m")
    finally:
        child.terminate(force=True)
    quiet = run(bastion_home, "search", "x", env={"BASTION_MEMORY__SEMANTIC": "false"})
    assert "loading" not in quiet.stderr  # not a terminal (and nothing to load)
