"""Workspace resources: URIs, confinement, completion, binary masking, the file watcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.errors import ToolError
from bastion.mcp._prompts import BY_NAME, missing, render
from bastion.mcp._resources import Workspace, mask_binary, mime_of
from bastion.mcp._session import Watcher, file_signature
from bastion.security.scanner import SecretScanner

CANARY = "ghp_" + "Zq7Xw2Lp9Rt4Vb6Nm1Kc8Hd3Jf5Gs0Ay2Eu4"


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "my ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "src" / "main.py").write_text("print()\n")
    (root / "readme.md").write_text("# hi\n")
    (root / ".env").write_text("A=1\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / "out").symlink_to("/etc")
    (tmp_path / "outside.txt").write_text("secret outside\n")
    (root / "up").symlink_to(tmp_path / "outside.txt")
    return Workspace(root)


def test_uris_round_trip_with_quoting(ws: Workspace) -> None:
    uri = ws.uri("src/main.py")
    assert uri.startswith("file://") and "my%20ws" in uri
    assert ws.relative(uri) == str(ws.root / "src" / "main.py")
    assert ws.template == ws.prefix + "{+path}"
    for bad in ("http://x/y", "bastion-nope://z", "file://otherhost/etc/passwd"):
        with pytest.raises(ToolError, match="unknown resource"):
            ws.relative(bad)


def test_walk_lists_regular_files_only_and_skips_hidden(ws: Workspace) -> None:
    names = [rel for rel, _ in ws.walk()]
    assert names == ["readme.md", "src/main.py", "src/pkg/mod.py"]  # no .env, .git, symlinks
    assert ".env" in [rel for rel, _ in ws.walk(hidden=True)]


def test_complete_gives_one_level_at_a_time(ws: Workspace) -> None:
    assert ws.complete("") == (["readme.md", "src/"], 2)
    assert ws.complete("src/") == (["src/main.py", "src/pkg/"], 2)
    assert ws.complete("src/p") == (["src/pkg/"], 1)
    assert ws.complete(".e") == ([".env"], 1)  # hidden names only when asked for
    assert ws.complete("zzz") == ([], 0)


def test_read_is_confined_like_the_file_tools(ws: Workspace) -> None:
    scanner = SecretScanner()
    content, info = ws.read(ws.relative(ws.uri("src/main.py")), scanner)
    assert content.text == "print()\n" and info["path"] == "src/main.py"
    for bad, why in (("../outside.txt", "climbs above"), ("/etc/passwd", "absolute"),
                     ("up", "outside the workspace"), ("out/passwd", "outside the workspace")):
        with pytest.raises(ToolError, match=why):
            ws.read(bad, scanner)
    with pytest.raises(ToolError, match="does not exist"):
        ws.read("nope.txt", scanner)
    with pytest.raises(ToolError, match="directory"):
        ws.read("src", scanner)
    with pytest.raises(ToolError, match="bytes; resources are served up to 4"):
        ws.read("readme.md", scanner, max_bytes=4)


def test_binary_secrets_are_masked_in_place(ws: Workspace) -> None:
    scanner = SecretScanner(["held-value-0123456789"])
    raw = b"\x89PNG\x00\x01" + CANARY.encode() + b"\x00 held-value-0123456789 \xff"
    masked, rules = mask_binary(raw, scanner)
    assert len(masked) == len(raw) and CANARY.encode() not in masked
    assert b"held-value" not in masked and set(rules) >= {"held_value"}
    assert masked.startswith(b"\x89PNG\x00\x01****")
    (ws.root / "img.png").write_bytes(raw)
    content, info = ws.read("img.png", scanner)
    assert content.blob == masked and content.mime_type == "image/png" and info["masked"]
    clean = b"\x00\x01\x02 nothing here"
    assert mask_binary(clean, scanner) == (clean, [])


def test_mime_types() -> None:
    assert mime_of("a.png", True) == "image/png"
    assert mime_of("a.wav", True) in ("audio/x-wav", "audio/wav")
    assert mime_of("noext", False) == "text/plain"
    assert mime_of("noext", True) == "application/octet-stream"


def test_prompt_rendering_and_required_arguments() -> None:
    review = BY_NAME["review_file"]
    assert "focus on correctness" in render(review, {"path": "a.py"})  # default choice
    assert "focus on security" in render(review, {"path": "a.py", "focus": "security"})
    assert missing(review, {}) == ["path"] and missing(review, {"path": "a"}) == []


def test_file_signature_treats_escapes_as_absent(ws: Workspace) -> None:
    assert file_signature(ws.root, "readme.md") is not None
    assert file_signature(ws.root, "up") is None  # symlink out of the workspace
    assert file_signature(ws.root, "../outside.txt") is None
    assert file_signature(ws.root, "new.txt") is None


async def test_watcher_reports_changes_creation_and_removal(ws: Workspace) -> None:
    watcher = Watcher(ws.root, interval_s=0.02)
    seen: list[str] = []
    changed = asyncio.Event()

    async def listener(uri: str) -> None:
        seen.append(uri)
        changed.set()

    async def next_change() -> None:
        await asyncio.wait_for(changed.wait(), 10)
        changed.clear()

    stop = watcher.add("u-readme", "readme.md", listener)
    watcher.add("u-new", "new.txt", listener)
    (ws.root / "readme.md").write_text("# changed\n")
    await next_change()
    (ws.root / "new.txt").write_text("created\n")
    await next_change()
    assert seen == ["u-readme", "u-new"]
    stop()
    (ws.root / "new.txt").unlink()
    await next_change()
    assert seen == ["u-readme", "u-new", "u-new"]
    watcher.close()
