"""F6: sandboxed code must not plant what the host runs later in a workspace (git, direnv, IDE).

The attack: the workspace is a git checkout with an ``.envrc`` and a ``.vscode/``. Sandboxed
shell code (MEDIUM, no approval) tries to set ``core.fsmonitor`` (run by the next ``git
status`` on the host), add a hook, replace ``.git`` altogether, and edit ``.envrc`` and
``.vscode/tasks.json``; ``write_file`` tries the same, directly and through a link the
sandbox planted. All of it must fail, and the host's git must still see a clean config.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bastion.errors import ToolError
from bastion.tools.base import ToolContext
from bastion.tools.builtin import builtin_tools
from tests.security._backends import each_backend, make

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

ATTACK = r"""
printf '[core]\n\tfsmonitor = "touch /workspace/PWNED-fsmonitor"\n' >> .git/config
mkdir -p .git/hooks; printf '#!/bin/sh\ntouch /workspace/PWNED-hook\n' > .git/hooks/post-checkout
chmod +x .git/hooks/post-checkout
mv .git .git-old && mkdir -p .git/hooks
rm -rf .git
echo 'touch PWNED-direnv' >> .envrc
echo '{"tasks": [{"runOptions": {"runOn": "folderOpen"}}]}' > .vscode/tasks.json
echo done
"""


def git_checkout(ws: Path) -> None:
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / ".envrc").write_text("export A=1\n")
    (ws / ".vscode").mkdir()


@each_backend()
async def test_sandbox_cannot_change_host_executed_control_files(kind: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    git_checkout(ws)
    config_before = (ws / ".git" / "config").read_text()
    box = make(kind, ws)
    try:
        res = await box.run(["/bin/sh", "-c", ATTACK])
    finally:
        box.close()
    assert res.stdout.strip() == "done", res.stderr
    assert (ws / ".git" / "config").read_text() == config_before, res.stderr
    assert not (ws / ".git" / "hooks" / "post-checkout").exists()
    assert not (ws / ".git-old").exists()
    assert (ws / ".envrc").read_text() == "export A=1\n"
    assert not (ws / ".vscode" / "tasks.json").exists()
    # a root bastion hands the workspace to the sandbox account, and git then refuses to
    # work in it at all ("dubious ownership"); the worst case is a user who trusts it anyway
    git = ["git", "-c", "safe.directory=*", "-C", str(ws)]
    status = subprocess.run([*git, "status", "--short"], capture_output=True, text=True,
                            check=True)
    assert "PWNED" not in status.stdout
    assert not list(ws.glob("PWNED*"))
    fsmonitor = subprocess.run([*git, "config", "core.fsmonitor"],
                               capture_output=True, text=True)
    assert fsmonitor.stdout == ""


@pytest.mark.parametrize("path", [".git/hooks/post-checkout", ".git/config", ".envrc",
                                  ".vscode/tasks.json", "./.idea/workspace.xml",
                                  "sub/../.git/hooks/pre-commit", "link/hooks/post-merge"])
async def test_write_file_refuses_control_files(path: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    git_checkout(ws)
    (ws / "link").symlink_to(".git")  # as sandboxed code could plant
    tools = {t.name: t for t in builtin_tools()}
    with pytest.raises(ToolError, match="programs on the host run"):
        await tools["write_file"]({"path": path, "content": "#!/bin/sh\nid\n"},
                                  ToolContext(workspace=ws))
    assert not (ws / ".git" / "hooks" / "post-checkout").exists()
    assert "#!/bin/sh" not in (ws / ".git" / "config").read_text()
    assert (ws / ".envrc").read_text() == "export A=1\n"
    # ordinary files still work
    out = await tools["write_file"]({"path": "src/gitconfig.txt", "content": "ok"},
                                    ToolContext(workspace=ws))
    assert "wrote" in out.text


@each_backend()
async def test_control_files_the_sandbox_creates_are_moved_aside(kind: str, tmp_path: Path) -> None:
    """Where no .git/.envrc exists, one planted by sandboxed code does not stay to be run."""
    ws = tmp_path / "ws"
    ws.mkdir()
    box = make(kind, ws)
    plant = ("mkdir -p .git/hooks .git/objects .git/refs && echo 'ref: refs/heads/main' > .git/HEAD"
             " && printf '[core]\\n\\tfsmonitor = touch PWNED\\n' > .git/config"
             " && echo 'touch PWNED' > .envrc && echo planted")
    try:
        res = await box.run(["/bin/sh", "-c", plant])
    finally:
        box.close()
    assert res.stdout.strip() == "planted", res.stderr
    assert not (ws / ".git").exists() and not (ws / ".envrc").exists()
    assert "moved to .bastion-quarantine-git-" in res.stderr
    assert "moved to .bastion-quarantine-envrc-" in res.stderr
    git = ["git", "-c", "safe.directory=*", "-C", str(ws)]
    subprocess.run([*git, "status"], capture_output=True)
    assert not (ws / "PWNED").exists()
