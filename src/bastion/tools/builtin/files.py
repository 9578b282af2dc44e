"""File tools confined to the workspace: list, read, write.

They run in bastion's own process (no sandbox needed) because every path goes through
:func:`bastion.tools.builtin._paths.open_in_workspace`, which refuses traversal and
symlink escapes without a check-then-open race.
"""

from __future__ import annotations

import fnmatch
import os
import stat

from bastion.errors import ToolError
from bastion.tools.base import CONTROL_ENTRIES, Risk, ToolContext, ToolOutput, tool
from bastion.tools.builtin._paths import open_in_workspace, require_regular

_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY


def _entry_line(rel: str, st: os.stat_result, link: str | None) -> str:
    if stat.S_ISDIR(st.st_mode):
        return f"{rel}/"
    if link is not None:
        return f"{rel} -> {link}"
    return f"{rel}  ({st.st_size} bytes)"


@tool(risk=Risk.LOW, read_only=True, egress=False)
async def list_files(
    ctx: ToolContext,
    path: str = ".",
    recursive: bool = False,
    pattern: str | None = None,
    max_entries: int = 200,
) -> ToolOutput:
    """List the files and folders in a workspace directory.

    Args:
        ctx: The call's context from the gateway (its workspace is the root).
        path: Directory relative to the workspace root ("." is the root).
        recursive: Also list everything below sub-directories.
        pattern: Only show names matching this glob, e.g. "*.py".
        max_entries: Stop after this many entries.

    """
    fd, shown = open_in_workspace(ctx.workspace, path, _LIST_FLAGS)
    lines: list[str] = []
    files = dirs = 0
    truncated = False
    try:
        walker = os.fwalk(".", dir_fd=fd, follow_symlinks=False)
        for top, dirnames, filenames, top_fd in walker:
            dirnames.sort()
            prefix = "" if top == "." else top[2:] + "/"
            for name in sorted([*dirnames, *filenames]):
                st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
                if pattern and not fnmatch.fnmatch(name, pattern):
                    continue
                link = os.readlink(name, dir_fd=top_fd) if stat.S_ISLNK(st.st_mode) else None
                if stat.S_ISDIR(st.st_mode):
                    dirs += 1
                else:
                    files += 1
                if len(lines) < max_entries:
                    lines.append(_entry_line(prefix + name, st, link))
                else:
                    truncated = True
            if not recursive:
                break
    finally:
        os.close(fd)
    header = f"{shown}: {files} files, {dirs} directories"
    if truncated:
        header += f" (showing the first {max_entries})"
    data = {"path": shown, "files": files, "directories": dirs, "entries": lines}
    return ToolOutput("\n".join([header, *lines]), data=data)


@tool(risk=Risk.LOW, read_only=True, egress=False)
async def read_file(
    ctx: ToolContext, path: str, offset: int = 0, max_bytes: int = 64_000
) -> ToolOutput:
    """Read a text file from the workspace.

    Args:
        ctx: The call's context from the gateway (its workspace is the root).
        path: File path relative to the workspace root.
        offset: Byte offset to start reading at (for long files).
        max_bytes: Read at most this many bytes.

    """
    if offset < 0 or max_bytes < 1:
        raise ToolError("offset must be >= 0 and max_bytes >= 1")
    fd, shown = open_in_workspace(ctx.workspace, path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = require_regular(fd, shown)
        raw = os.pread(fd, max_bytes, offset)
    finally:
        os.close(fd)
    if b"\x00" in raw[:8192]:
        return ToolOutput(f"{shown} is a binary file ({st.st_size} bytes); not shown",
                          data={"path": shown, "size": st.st_size, "binary": True})
    text = raw.decode("utf-8", errors="replace")
    end = offset + len(raw)
    if end < st.st_size:
        text += f"\n[... {st.st_size - end} more bytes; read again with offset={end}]"
    return ToolOutput(text, data={"path": shown, "size": st.st_size})


@tool(risk=Risk.MEDIUM, egress=False)
async def write_file(
    ctx: ToolContext, path: str, content: str, append: bool = False
) -> str:
    """Write (or append) text to a file in the workspace, creating folders as needed.

    Args:
        ctx: The call's context from the gateway (its workspace is the root).
        path: File path relative to the workspace root.
        content: The text to write.
        append: Add to the end of the file instead of replacing it.

    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
    fd, shown = open_in_workspace(ctx.workspace, path, flags, create_dirs=True,
                                  protect=CONTROL_ENTRIES)
    try:
        require_regular(fd, shown)
        data = content.encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
    verb = "appended" if append else "wrote"
    return f"{verb} {len(data)} bytes to {shown}"
