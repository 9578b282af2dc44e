"""F2: with bastion running as root, sandboxed code must not act as host root.

The attack, in every real backend: copy a binary into the workspace and make it setuid
(``chmod 4755``, ``chmod u+s``, ``install -m 6755``), create a file and a directory. On the
host, nothing in the workspace may then be owned by uid 0, and no file may carry a
setuid/setgid bit owned by root (any local user reaching the workspace would run it as root).
The podman sandbox must not be uid 0 inside either (it could read its image's /etc/shadow).
Files the sandbox wrote stay usable by bastion's file tools, and the sandbox can change
files those tools wrote.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bastion.tools.base import ToolContext
from bastion.tools.builtin import builtin_tools
from tests.security._backends import each_backend, host_files, make

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the finding is about a root bastion")

ATTACK = (
    "cp /usr/bin/id x && chmod 4755 x; chmod u+s x; chmod g+s x;"
    " install -m 6755 /usr/bin/id y; mkdir d; echo hi > d/f; id -u; id -g"
)


@each_backend()
async def test_setuid_binary_planted_in_the_workspace_is_not_root_owned(
        kind: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    box = make(kind, ws)
    try:
        res = await box.run(["/bin/sh", "-c", ATTACK])
    finally:
        box.close()
    assert (ws / "d" / "f").read_text() == "hi\n", res.stderr  # the sandbox did run
    files = host_files(ws)
    setuid_root = [p for p, uid, mode in files
                   if uid == 0 and mode & (stat.S_ISUID | stat.S_ISGID)]
    assert setuid_root == [], f"{kind}: setuid/setgid root files on the host: {setuid_root}"
    root_owned = [p for p, uid, _ in files if uid == 0]
    assert root_owned == [], f"{kind}: the sandbox wrote as host root: {root_owned}"
    assert os.stat(ws).st_uid != 0, f"{kind}: the sandbox acts as the root-owned workspace owner"


@each_backend()
async def test_sandbox_is_not_uid0_inside_and_cannot_read_shadow(kind: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    box = make(kind, ws)
    try:
        res = await box.run(["/bin/sh", "-c", "id -u; cat /etc/shadow; echo rc=$?"])
    finally:
        box.close()
    lines = res.stdout.splitlines()
    assert lines[0] != "0", f"{kind}: runs as uid 0 inside: {res.stdout}"
    assert "root:" not in res.stdout, f"{kind}: read /etc/shadow"
    assert lines[-1] != "rc=0"


@each_backend()
async def test_files_stay_usable_both_ways(kind: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    tools = {t.name: t for t in builtin_tools()}
    ctx = ToolContext(workspace=ws)
    box = make(kind, ws)
    try:
        await tools["write_file"]({"path": "notes/a.txt", "content": "from tool\n"}, ctx)
        res = await box.run(["/bin/sh", "-c",
                             "echo from sandbox >> notes/a.txt && echo new > notes/b.txt"])
        assert res.exit_code == 0, res.stderr
    finally:
        box.close()
    read = await tools["read_file"]({"path": "notes/a.txt"}, ctx)
    assert "from tool\nfrom sandbox" in read.text
    wrote = await tools["write_file"]({"path": "notes/b.txt", "content": "over\n"}, ctx)
    assert "wrote" in wrote.text, wrote.text
    assert (ws / "notes" / "b.txt").read_text() == "over\n"


@each_backend()
async def test_handing_the_workspace_over_follows_no_link(kind: str, tmp_path: Path) -> None:
    """A link planted in a root-owned workspace must not make the hand-over chown its target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("root's\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "to-dir").symlink_to(outside)
    (ws / "to-file").symlink_to(outside / "secret")
    box = make(kind, ws)
    box.close()
    assert os.stat(outside).st_uid == 0 and os.stat(outside / "secret").st_uid == 0
    assert os.lstat(ws / "to-file").st_uid != 0  # the link itself was handed over
