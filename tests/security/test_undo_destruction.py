"""Attack: destroy or overwrite workspace files in ways no classifier lists, then undo it.

Issue 14 item 4: whatever a call did to the workspace (``find -delete``, ``truncate``, a
Python ``os.remove`` loop, ``write_file`` with empty content, ``mv`` out of the workspace)
is put back, content and modes exact, by the real ``bastion undo`` command. Each destructive
call runs through the real gateway in a real bubblewrap sandbox; the approver says yes to
everything, so these tests hold however the risk classifier rates the call. A symbolic link
the sandbox plants cannot redirect the restore outside the workspace.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.app import App, build_app
from bastion.config.model import Config
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.security.approval import AllowApprover
from bastion.security.audit import iter_events, open_reader
from bastion.security.setup import audit_path
from bastion.testing import ScriptedModel

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def _seed(ws: Path) -> None:
    (ws / "notes.txt").write_text("hello\nworld\n")
    (ws / "secret.key").write_bytes(b"\x00\x01binary\xff" * 100)
    (ws / "secret.key").chmod(0o600)
    (ws / "bin").mkdir()
    (ws / "bin" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (ws / "bin" / "run.sh").chmod(0o755)
    (ws / "deep" / "a" / "b").mkdir(parents=True)
    (ws / "deep" / "a" / "b" / "c.txt").write_text("deep content")
    (ws / "deep" / "a" / "b" / "c.txt").chmod(0o640)
    (ws / "deep" / "a").chmod(0o750)
    (ws / "emptydir").mkdir(mode=0o700)
    (ws / "emptydir").chmod(0o700)
    os.symlink("notes.txt", ws / "link")


def manifest(ws: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``ws`` (links not followed): kind, mode and content/target."""
    out: dict[str, tuple[Any, ...]] = {}
    for top, dirs, files, top_fd in os.fwalk(ws, follow_symlinks=False):
        for name in [*dirs, *files]:
            rel = os.path.relpath(os.path.join(top, name), ws)
            st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(name, dir_fd=top_fd))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", mode)
            else:
                with open(os.path.join(top, name), "rb") as fh:
                    out[rel] = ("f", mode, fh.read(), st.st_mtime_ns)
    return out


@pytest.fixture
def ws(tmp_path: Path, bastion_home: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    _seed(workspace)
    (bastion_home / "bastion.yaml").write_text(yaml.safe_dump(
        {"agent": {"workspace": str(workspace)}, "memory": {"enabled": False}}))
    return workspace


def _app(ws: Path) -> App:
    cfg = Config.model_validate({"agent": {"workspace": str(ws)},
                                 "security": {"sandbox": "bubblewrap"},
                                 "intelligence": {"enabled": False}})
    return build_app(cfg, model=ScriptedModel(), memory=EphemeralMemory(),
                     approver=AllowApprover())


def _calls(ws: Path, session: str, *calls: tuple[str, dict[str, Any]]) -> list[str]:
    async def run() -> list[str]:
        app = _app(ws)
        try:
            texts = []
            for name, args in calls:
                res = await app.gateway.execute(ToolCall(name, args), session_id=session)
                assert res.decision == "allowed", res.text
                texts.append(res.text)
            return texts
        finally:
            await app.aclose()

    return asyncio.run(run())


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "bastion", *args], capture_output=True,
                          text=True, timeout=120, env=env)


DESTRUCTION = {
    "find-delete": ("shell", {"command": "find . -delete"}),
    "truncate": ("shell", {"command": "truncate -s0 notes.txt secret.key bin/run.sh"}),
    "python-remove-loop": ("python", {"code": (
        "import os\n"
        "for top, dirs, files in os.walk('.', topdown=False):\n"
        "    for f in files: os.remove(os.path.join(top, f))\n"
        "    for d in dirs:\n"
        "        p = os.path.join(top, d)\n"
        "        os.remove(p) if os.path.islink(p) else os.rmdir(p)\n")}),
    "write-file-empty": ("write_file", {"path": "notes.txt", "content": ""}),
    "mv-out": ("shell", {"command": "mv notes.txt deep bin /tmp/ && chmod 0777 secret.key"}),
    "overwrite-and-plant": ("shell", {"command": (
        "echo pwned > deep/a/b/c.txt && chmod 0666 deep/a/b/c.txt && rm link && "
        "ln -s /etc/passwd link && mkdir -p new/dir && echo x > new/dir/file")}),
}


@pytest.mark.parametrize("attack", list(DESTRUCTION))
def test_destruction_is_undone_exactly_by_the_cli(ws: Path, attack: str) -> None:
    before = manifest(ws)
    name, args = DESTRUCTION[attack]
    _calls(ws, "s-attack", (name, args))
    assert manifest(ws) != before, "the attack changed nothing"

    done = bastion("undo", "--session", "s-attack")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "undid call call_" in done.stdout and f"({name}," in done.stdout
    assert manifest(ws) == before  # content, modes, links and file mtimes exact


def test_undo_n_restores_to_before_the_nth_last_call_and_dry_run_changes_nothing(
    ws: Path,
) -> None:
    before = manifest(ws)
    _calls(ws, "s-n", ("write_file", {"path": "notes.txt", "content": "v2"}),
           ("shell", {"command": "echo v3 > notes.txt; rm secret.key"}),
           ("list_files", {"path": "."}))  # read-only: not a call to undo
    after = manifest(ws)
    listed = bastion("undo", "--list")  # default session: the newest undoable call's
    assert listed.returncode == 0, listed.stderr
    assert "session s-n: 2 call(s) can be undone" in listed.stdout
    dry = bastion("undo", "2", "--session", "s-n", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would restore notes.txt" in dry.stdout and "would restore secret.key" in dry.stdout
    assert "~ notes.txt (modified, 12 -> 2 bytes)" in dry.stdout
    assert manifest(ws) == after
    done = bastion("undo", "2", "--session", "s-n")
    assert done.returncode == 0, done.stderr
    assert manifest(ws) == before
    again = bastion("undo", "--session", "s-n")  # undone calls are not undone twice
    assert again.returncode == 1 and "nothing to undo in session s-n" in again.stderr
    # the undo and the dry run are in the audit log, and each call says what it changed
    db = open_reader(audit_path())
    undos = list(iter_events(db, kind="undo", session_id="s-n"))
    calls = list(iter_events(db, kind="tool_call", session_id="s-n", newest_first=False))
    db.close()
    assert [e.decision for e in undos] == ["restored", "dry_run"]
    assert "notes.txt" in str(undos[0].detail) and undos[0].actor == "cli"
    assert [(e.tool, (e.detail or {}).get("undo")) for e in calls] == [
        ("write_file", {"added": 0, "modified": 1, "deleted": 0}),
        ("shell", {"added": 0, "modified": 1, "deleted": 1}),
        ("list_files", None)]


def test_planted_symlink_cannot_redirect_the_restore(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"  # stands for ~/.ssh: the restore must not write here
    outside.mkdir()
    before = manifest(ws)
    # one call deletes deep/ and puts a link to the outside folder in its place
    _calls(ws, "s-link", ("shell", {"command": f"rm -rf deep && ln -s {outside} deep"}))
    assert (ws / "deep").is_symlink()
    done = bastion("undo", "--session", "s-link")
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(outside.iterdir()) == []
    assert manifest(ws) == before


def test_link_planted_by_a_later_call_is_refused_not_followed(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a").mkdir()
    _calls(ws, "s-victim", ("shell", {"command": "rm deep/a/b/c.txt"}))
    # another session then swaps deep/a for a link to the outside folder
    _calls(ws, "s-other", ("shell", {"command": f"rm -rf deep/a && ln -s {outside}/a deep/a"}))
    done = bastion("undo", "--session", "s-victim")
    assert done.returncode == 1
    assert "could not restore deep/a/b/c.txt" in done.stdout
    assert "symbolic link" in done.stdout
    assert list((outside / "a").iterdir()) == []  # nothing written through the link
