"""The README's shell blocks, run verbatim against a fresh home and a live ``bastion serve``.

Every command line of every ```bash block is either run (through bash, exactly as written;
only the documented port 8765 becomes the live server's) or listed in ``SKIP`` with the
reason it cannot run here (hardware, internet, another host, an interactive terminal). A new
block or command fails ``test_every_readme_command_is_classified`` until it is one or the
other. ``PREPARE`` holds what a reader has done before a command (files it names, a session
it continues), run first.

Cost: ~51 commands, most of it the shipped model's agent turns (two ``ask --session``, one
chat completion, one session message) and the embedder/presidio loads: 578 s measured on the
shared 2-core machine under load ~8 (the asks 115-120 s each there), hence ``slow``.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.integration.cli.conftest import ROOT, stop, wait_healthy

README = ROOT / "README.md"

SKIP = {
    "make demo": "builds the whole .venv (llama.cpp compile, ~8 min); CI runs make itself",
    "make test": "runs the whole suite; CI runs it",
    "bastion serve": "the fixture runs exactly this in the background (BASTION_API__PORT: a free "
    "port)",
    "bastion chat": "interactive; tests/integration/cli/test_chat_pty.py drives it in a pty",
    # Each ask is a whole agent turn of the shipped model (10-20 s on 2 busy cores); the two
    # --session asks below run (they show the stored session), these three run elsewhere:
    'bastion ask "How many files': "an agent turn; test_ask_process.py runs this one",
    'bastion ask --json': "an agent turn; test_ask_process.py checks the --json transcript",
    'bastion ask --yes "..."': "an agent turn with a placeholder question",
    "python -m bastion.llm.server_main": "a placeholder model path; test_server_backend.py "
    "runs one",
    "bastion config set model.backend openai": "points this home away from the shipped model; "
    "tests/integration/llm/test_server_backend.py covers the openai backend",
    "bastion config set model.base_url": "same (another model server)",
    "bastion config set model.name local": "same (another model server)",
    "bastion config set model.api_key sk-...": "a placeholder key for another model server",
    ".venv/bin/python bench/bfcl.py": "a benchmark of ~20 min (bench/, not CI)",
    ".venv/bin/python bench/agent_overhead.py": "a benchmark of a few minutes (bench/, not CI)",
    "bastion voice ": "needs audio devices or voice input files (tests/integration/voice)",
    "bastion node serve": "announces over mDNS: multicast beyond loopback",
    "BASTION_NODE_API_KEY=…": "a placeholder key, and binds another host's address (10.0.0.5)",
    "bastion cluster ": "needs nodes on other hosts (10.0.0.x); tests/integration/cluster",
    "bastion sandbox build-image": "debootstrap from a Debian mirror (internet)",
    "bastion config set security.sandbox gvisor": "changes the backend for the rest of the "
    "README; test_gvisor.py covers it",
    "bastion config set security.sandbox docker": "changes the backend for the rest of the "
    "README (and needs a Docker daemon); test_docker.py covers it",
    "sudo apt-get install docker.io tini": "a system package install",
    "podman ": "pulls from a registry (internet)",
    "FROM ": "inside the podman heredoc",
    "RUN ": "inside the podman heredoc",
    "EOF2": "end of the podman heredoc",
    "bastion undo": "needs an agent's file changes in a session; test_undo*.py drive them",
    "bastion mcp serve": "serves until its client goes; tests/integration/mcp",
    "bastion gateway serve": "serves until stopped; tests/integration/mcp",
    "bastion mcp tools everything": "needs the npm server-everything package (internet)",
    "bastion mcp call everything": "needs the npm server-everything package (internet)",
    "bastion audit verify --fingerprint FP": "FP is a placeholder for the printed fingerprint",
    "bastion audit verify --anchor /mnt/worm": "a placeholder path of a WORM mount",
    "bastion intel feeds add urlhaus.csv": "a URLhaus download (internet)",
    "bastion intel alerts test ops-hook": "a webhook host (hooks.example)",
    "bastion intel siem push": "needs intelligence.siem.sinks (the YAML below: Elasticsearch "
    "and Splunk hosts); tests/integration/intelligence",
    "sudo apt install chromium": "a system package install",
    "pip install 'bastion[browser]'": "a package install",
    "bastion config set browser.enabled true": "starts chromium for the rest of the README; "
    "tests/integration/browser",
    "bastion browser close SESSION": "SESSION is a placeholder",
    "bastion model pull ": "the Hugging Face Hub (internet); test_model_pull.py pulls from a "
    "local hub",
    "bastion init --pull": "the Hugging Face Hub (internet); test_model_pull.py::"
    "test_recommend_then_init_pull pulls from a local hub",
    "bastion model show Llama": "needs that model pulled; test_model_pull.py shows a pulled one",
    "bastion model import ./my-model": "a placeholder file; test_model_pull.py imports one",
    "bastion model import --ollama": "needs an Ollama install's store; test_model_pull.py::"
    "test_import_from_an_ollama_store builds one",
    "bastion model use Llama": "needs that model pulled; test_model_pull.py uses a pulled one",
    "bastion model rm Llama": "needs that model pulled; test_model_pull.py removes a pulled one",
    "curl -sN http://127.0.0.1:8765/v1/models/pull": "the Hugging Face Hub (internet); "
    "test_model_pull.py streams a pull from a local hub",
    "bastion crypto hsm ": "needs crypto.hsm configured (the YAML above) with SoftHSM2; "
    "tests/integration/crypto/test_hsm.py",
}

# What a reader has done before: run first, in the same working directory.
PREPARE = {
    "bastion sessions show work": "curl -sfN http://127.0.0.1:8765/v1/sessions/work/messages "
    '-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" '
    "-d '{\"content\": \"We keep backups on the blue drive.\"}' > /dev/null",
    "bastion ingest notes/": "mkdir -p notes src && echo '# Notes' > notes/a.md && "
    "echo '<p>page</p>' > page.html && echo 'x = 1' > src/x.py && cp {pdf} manual.pdf",
    "bastion privacy scan --file notes.txt": "echo 'Mail johanna@example.org' > notes.txt",
}


def readme_commands() -> list[tuple[int, str]]:
    """Return (line, command) for each command of each bash block (continuations joined)."""
    text = README.read_text()
    found: list[tuple[int, str]] = []
    for block in re.finditer(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
        first = text[: block.start()].count("\n") + 2
        pending, start = "", first
        for i, line in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first + i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = (pending + line).strip()
            pending = ""
            if command and not command.startswith("#"):
                found.append((start, command))
    return found


def skipped(command: str) -> str | None:
    """Return why ``command`` does not run here, or None."""
    return next((why for prefix, why in SKIP.items() if command.startswith(prefix)), None)


def test_every_readme_command_is_classified() -> None:
    commands = readme_commands()
    assert len(commands) > 60  # the parser found the README's blocks
    used = {prefix for prefix in SKIP if any(c.startswith(prefix) for _, c in commands)}
    assert used == set(SKIP), f"SKIP entries matching no README command: {set(SKIP) - used}"
    assert all(any(c.startswith(p) for _, c in commands) for p in PREPARE)


@dataclass
class Live:
    home: Path
    port: int
    env: dict[str, str]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
    env.update(BASTION_HOME=str(home), PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False", NO_COLOR="1",
               # short answers and at most one tool step: this is about the commands
               BASTION_MODEL__MAX_TOKENS="24", BASTION_AGENT__MAX_STEPS="2",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return env


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("readme-home")
    env = _env(home)
    init = subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert init.returncode == 0, init.stderr
    config = yaml.safe_load((home / "bastion.yaml").read_text())
    env["TOKEN"] = config["api"]["token"]
    with socket.socket() as sock:  # a free port for api.port: CLI and server agree on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port comes from the environment (BASTION_API__PORT, as the README documents), so the
    # README's own `bastion init --yes --force` rewriting the file keeps CLI and server agreed.
    env["BASTION_API__PORT"] = str(port)
    log = home / "serve.out"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    try:
        wait_healthy(proc, port, log)
        yield Live(home, port, env)
    finally:
        stop(proc, log)


def _pdf(path: Path) -> Path:
    """A one-page PDF with a line of text (what `bastion ingest manual.pdf` reads)."""
    stream = b"BT /F1 12 Tf 72 720 Td (The backup drive is blue.) Tj ET"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))
    return path


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_readme_commands_run_verbatim(live: Live, tmp_path: Path) -> None:
    pdf = _pdf(tmp_path / "source.pdf")
    failures, ran, took = [], 0, []
    for line, command in readme_commands():
        if skipped(command):
            continue
        for prefix, prep in PREPARE.items():
            if command.startswith(prefix):
                prep = prep.replace("8765", str(live.port)).replace("{pdf}", shlex.quote(str(pdf)))
                done = subprocess.run(["bash", "-c", prep],
                                      env=live.env, cwd=tmp_path, capture_output=True,
                                      text=True, timeout=300, stdin=subprocess.DEVNULL)
                assert done.returncode == 0, f"PREPARE {prep}: {done.stderr[-500:]}"
        runnable = command.replace("8765", str(live.port))  # curl's documented default port
        start = time.monotonic()
        res = subprocess.run(["bash", "-o", "pipefail", "-c", runnable], env=live.env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
        took.append((round(time.monotonic() - start, 1), command[:50]))
        ran += 1
        text = res.stdout + res.stderr
        if res.returncode != 0 or "Traceback" in text or '"error"' in res.stdout[:200]:
            failures.append(f"README line {line}: {command}\n  exit {res.returncode}: "
                            f"{text.strip()[-400:]}")
    print("slowest:", sorted(took, reverse=True)[:8])
    assert ran > 35
    assert not failures, f"{len(failures)} of {ran} commands failed:\n" + "\n".join(failures)
