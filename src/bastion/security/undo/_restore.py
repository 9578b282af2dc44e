"""Putting one workspace path back to a kept state, without following any symbolic link.

Every step works on directory descriptors opened with ``O_NOFOLLOW``
(:func:`bastion.tools.builtin._paths.open_parent_nofollow`): a link planted where a directory
was is removed and the directory re-created, never followed; files are written to a fresh
temporary name (``O_EXCL``) and renamed over the path, which replaces a link itself rather than
what it points to; recursive removal uses :func:`shutil.rmtree` on a directory fd, which does
not follow links either.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path

from bastion.errors import ToolError
from bastion.security.undo._scan import Entry, copy_fd
from bastion.tools.builtin._paths import open_parent_nofollow

#: setuid/setgid are never restored (a restore must not create privileged binaries).
_MODE_MASK = 0o7777 & ~(stat.S_ISUID | stat.S_ISGID)


def remove(workspace: Path, rel: str) -> bool:
    """Remove whatever is at ``rel`` (a directory recursively); False if nothing was there."""
    try:
        fd, name = open_parent_nofollow(workspace, rel)
    except (ToolError, OSError):  # the parent is gone or is no directory: nothing to remove
        return False
    try:
        return _remove_at(fd, name)
    finally:
        os.close(fd)


def _remove_at(fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=fd)
    else:
        os.unlink(name, dir_fd=fd)
    return True


def restore(workspace: Path, rel: str, entry: Entry, object_path: Path | None) -> None:
    """Make ``rel`` what ``entry`` describes (file content from ``object_path``)."""
    fd, name = open_parent_nofollow(workspace, rel, create_dirs=True)
    try:
        if entry.kind == "d":
            _restore_dir(fd, name, entry)
        elif entry.kind == "l":
            _remove_at(fd, name)
            os.symlink(entry.target or "", name, dir_fd=fd)
        else:
            assert object_path is not None
            _restore_file(fd, name, entry, object_path)
    finally:
        os.close(fd)


def _restore_dir(fd: int, name: str, entry: Entry) -> None:
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=fd)  # a link or file planted in its place
            raise FileNotFoundError
    except FileNotFoundError:
        os.mkdir(name, 0o700, dir_fd=fd)
    dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        os.fchmod(dfd, entry.mode & _MODE_MASK)
    finally:
        os.close(dfd)


def _restore_file(fd: int, name: str, entry: Entry, object_path: Path) -> None:
    tmp = f".bastion-undo-{secrets.token_hex(8)}"
    src = os.open(object_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=fd)
        try:
            copy_fd(src, out)
            os.fchmod(out, entry.mode & _MODE_MASK)
            os.utime(out, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(out)
    finally:
        os.close(src)
    try:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=fd)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)
        raise
