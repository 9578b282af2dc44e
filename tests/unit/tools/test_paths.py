"""Workspace confinement of the file tools: traversal and symlink escapes are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.errors import ToolError
from bastion.tools.base import ToolContext
from bastion.tools.builtin.files import list_files, read_file, write_file


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "b.md").write_text("bravo\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n")
    return secret


def ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws)


async def test_read_relative_and_sandbox_and_absolute_inside(ws: Path) -> None:
    paths = ("docs/a.txt", "./docs/../docs/a.txt", "/workspace/docs/a.txt", str(ws / "docs/a.txt"))
    for path in paths:
        out = await read_file({"path": path}, ctx(ws))
        assert out.text == "alpha\n", path


@pytest.mark.parametrize("path", ["../secret.txt", "docs/../../secret.txt", "/etc/passwd", "~/x",
                                  "/workspace/../secret.txt", "a\x00b"])
async def test_traversal_refused(ws: Path, path: str) -> None:
    with pytest.raises(ToolError, match="refused"):
        await read_file({"path": path}, ctx(ws))


async def test_symlink_escape_refused_for_read_write_and_list(ws: Path, outside: Path) -> None:
    (ws / "link").symlink_to(outside)
    (ws / "dirlink").symlink_to(outside.parent)
    (ws / "abs_etc").symlink_to("/etc")
    for path in ("link", "dirlink/secret.txt", "abs_etc/passwd"):
        with pytest.raises(ToolError, match="outside the workspace"):
            await read_file({"path": path}, ctx(ws))
    with pytest.raises(ToolError, match="outside the workspace"):
        await write_file({"path": "link", "content": "pwned"}, ctx(ws))
    with pytest.raises(ToolError, match="outside the workspace"):
        await write_file({"path": "dirlink/new.txt", "content": "pwned"}, ctx(ws))
    with pytest.raises(ToolError, match="outside the workspace"):
        await list_files({"path": "dirlink"}, ctx(ws))
    assert outside.read_text() == "TOP SECRET\n"
    assert not (outside.parent / "new.txt").exists()


async def test_relative_link_climbing_out_refused(ws: Path, outside: Path) -> None:
    (ws / "docs" / "up").symlink_to("../../secret.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        await read_file({"path": "docs/up"}, ctx(ws))


async def test_symlinks_inside_the_workspace_are_followed(ws: Path) -> None:
    (ws / "alias").symlink_to("docs/a.txt")
    (ws / "docs" / "back").symlink_to("../b.md")
    (ws / "sbx").symlink_to("/workspace/docs")  # made inside the sandbox
    assert (await read_file({"path": "alias"}, ctx(ws))).text == "alpha\n"
    assert (await read_file({"path": "docs/back"}, ctx(ws))).text == "bravo\n"
    assert (await read_file({"path": "sbx/a.txt"}, ctx(ws))).text == "alpha\n"


async def test_symlink_loop_is_an_error(ws: Path) -> None:
    (ws / "l1").symlink_to("l2")
    (ws / "l2").symlink_to("l1")
    with pytest.raises(ToolError, match="symbolic links"):
        await read_file({"path": "l1"}, ctx(ws))


async def test_fifo_and_directory_are_not_read(ws: Path) -> None:
    os.mkfifo(ws / "pipe")
    with pytest.raises(ToolError, match="not a regular file"):
        await read_file({"path": "pipe"}, ctx(ws))
    with pytest.raises(ToolError, match="is a directory"):
        await read_file({"path": "docs"}, ctx(ws))


async def test_write_creates_dirs_and_appends(ws: Path) -> None:
    out = await write_file({"path": "new/deep/c.txt", "content": "one\n"}, ctx(ws))
    assert "wrote 4 bytes to new/deep/c.txt" in out.text
    await write_file({"path": "new/deep/c.txt", "content": "two\n", "append": True}, ctx(ws))
    assert (ws / "new/deep/c.txt").read_text() == "one\ntwo\n"


async def test_list_counts_and_recursion(ws: Path) -> None:
    flat = await list_files({}, ctx(ws))
    assert flat.data["files"] == 1 and flat.data["directories"] == 1
    assert flat.text.splitlines()[0] == ".: 1 files, 1 directories"
    deep = await list_files({"recursive": True, "pattern": "*.txt"}, ctx(ws))
    assert deep.data["entries"] == ["docs/a.txt  (6 bytes)"]


async def test_read_offset_and_truncation_note(ws: Path) -> None:
    (ws / "long.txt").write_text("0123456789")
    out = await read_file({"path": "long.txt", "max_bytes": 4}, ctx(ws))
    assert out.text.startswith("0123") and "offset=4" in out.text
    out = await read_file({"path": "long.txt", "offset": 8}, ctx(ws))
    assert out.text == "89"


async def test_missing_file_message(ws: Path) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        await read_file({"path": "nope.txt"}, ctx(ws))
