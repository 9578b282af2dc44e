"""One pass over the workspace: what is there (stat only), optionally keeping file contents.

The walk never follows a symbolic link: every directory is opened with ``O_NOFOLLOW``
relative to its parent's descriptor and checked against the entry it was listed as, so a
sandboxed process that swaps a directory for a link while we walk cannot make us read (and
later restore) a file from outside the workspace. Files are opened the same way before their
content is copied, and the copy is kept only when the opened inode is the one that was listed.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from stat import S_IMODE, S_ISDIR, S_ISLNK, S_ISREG
from typing import Any

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FICLONE = 0x40049409  # linux/fs.h: share the extents (btrfs, XFS, bcachefs): O(1) copy
_CHUNK = 1 << 30


@dataclass(slots=True)
class Entry:
    """One workspace entry as listed: kind ``f`` (file), ``d`` (directory) or ``l`` (link)."""

    kind: str
    mode: int
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0
    dev: int = 0
    target: str | None = None  # a link's target text
    obj: str | None = None  # the kept copy of a file's content, when there is one
    racy: bool = False  # modified too close to the copy to trust its stat next time
    key: tuple[Any, ...] = ()  # what "unchanged" compares (see :func:`entry_key`)

    def same(self, other: Entry) -> bool:
        """Return whether ``other`` is unchanged relative to this entry."""
        return self.key == other.key


def entry_key(e: Entry) -> tuple[Any, ...]:
    """Return what must match for ``e`` to count as unchanged.

    A file: mode, size, mtime, ctime (which no unprivileged process can set back), inode and
    device. A directory: its mode only (its mtime moves with its children, which are listed
    themselves). A link: its target.
    """
    if e.kind == "f":
        return ("f", e.mode, e.size, e.mtime_ns, e.ctime_ns, e.ino, e.dev)
    if e.kind == "l":
        return ("l", e.target)
    return ("d", e.mode)


#: ``keep(relative path, entry, directory fd)`` returns the object id of the kept content.
Keep = Callable[[str, Entry, int], str | None]


def scan(root: str, keep: Keep | None = None,
         kept: dict[str, Entry] | None = None) -> dict[str, Entry]:
    """Return every directory, regular file and symbolic link under ``root`` by relative path.

    With ``keep``, a file whose entry in ``kept`` is unchanged (and not racy) reuses its
    copy; ``keep`` is called for the others. Special files (FIFOs, sockets, devices) are
    left out: they hold no content to restore.
    """
    out: dict[str, Entry] = {}
    stack: list[tuple[str, int]] = [("", os.open(root, _DIR))]
    try:
        while stack:
            prefix, fd = stack.pop()
            try:
                _scan_dir(prefix, fd, out, stack, keep, kept or {})
            finally:
                os.close(fd)
    finally:
        for _, fd in stack:
            os.close(fd)
    return out


def _scan_dir(prefix: str, fd: int, out: dict[str, Entry], stack: list[tuple[str, int]],
              keep: Keep | None, kept: dict[str, Entry]) -> None:
    with os.scandir(fd) as it:
        entries = list(it)
    for de in entries:
        try:
            st = de.stat(follow_symlinks=False)
        except FileNotFoundError:  # gone since it was listed
            continue
        rel = prefix + de.name
        mode = st.st_mode
        if S_ISREG(mode):
            perm = S_IMODE(mode)
            key = ("f", perm, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
            b = kept.get(rel)
            if b is not None and b.key == key and b.obj is not None and not b.racy:
                out[rel] = b  # unchanged and kept: the same entry, no copy
                continue
            e = Entry("f", perm, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                      st.st_dev, None, None, False, key)
            if keep is not None:
                e.obj = keep(rel, e, fd)
            out[rel] = e
        elif S_ISDIR(mode):
            try:
                sub = os.open(de.name, _DIR, dir_fd=fd)
            except OSError:  # swapped for a link or unreadable: not walked
                continue
            sst = os.fstat(sub)
            if (sst.st_ino, sst.st_dev) != (st.st_ino, st.st_dev):
                os.close(sub)
                continue
            perm = S_IMODE(mode)
            out[rel] = Entry("d", perm, key=("d", perm))
            stack.append((rel + "/", sub))
        elif S_ISLNK(mode):
            try:
                target = os.readlink(de.name, dir_fd=fd)
            except OSError:
                continue
            out[rel] = Entry("l", S_IMODE(mode), target=target, key=("l", target))


def copy_file(dir_fd: int, name: str, expect: Entry, dst: str) -> bool:
    """Copy the file ``name`` (in ``dir_fd``) to the new file ``dst``; False if it changed.

    The source is opened without following links and must still be the listed inode.
    """
    try:
        src = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(src)
        if not S_ISREG(st.st_mode) or (st.st_ino, st.st_dev) != (expect.ino, expect.dev):
            return False
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            copy_fd(src, out)
        finally:
            os.close(out)
        return True
    finally:
        os.close(src)


def copy_fd(src: int, dst: int) -> None:
    """Copy all of ``src`` into the empty ``dst`` (a reflink where the filesystem can)."""
    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return
    except OSError:
        pass
    offset = 0
    while True:
        try:
            n = os.copy_file_range(src, dst, _CHUNK, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            _copy_plain(src, dst, offset)
            return
        if n == 0:
            return
        offset += n


def _copy_plain(src: int, dst: int, offset: int) -> None:
    while True:
        chunk = os.pread(src, 1 << 20, offset)
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst, view, offset)
            view = view[written:]
            offset += written
