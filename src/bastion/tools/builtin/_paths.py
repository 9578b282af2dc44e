"""Race-free confinement of file access to the workspace root.

Every path is normalised lexically (``..`` may not climb above the root), then opened one
component at a time with ``O_NOFOLLOW`` relative to the directory opened before it
(``openat``). A symbolic link met on the way is read and re-resolved lexically against the
workspace: a link that stays inside is followed, one that points outside is refused. Because no
step ever follows a link the kernel resolves on its own, swapping a component for a link
between a check and the open (which a sandboxed shell could do) cannot escape the root.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from bastion.errors import ToolError

#: Where the sandbox mounts the workspace; paths the model saw inside a shell are accepted too.
SANDBOX_WORKSPACE = "/workspace"
_MAX_LINK_HOPS = 40
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_FIX = "use a path relative to the workspace, without symlinks that point outside it"


def _escape(path: str, why: str) -> ToolError:
    return ToolError(f"refused {path!r}: {why}", fix=_FIX)


def split_path(path: str, workspace: Path) -> list[str]:
    """Return the workspace-relative components of ``path`` (lexically normalised).

    Accepts relative paths, ``/workspace/...`` (the sandbox's view) and absolute host
    paths inside ``workspace``; anything else, or ``..`` climbing above the root, is refused.
    """
    if "\x00" in path:
        raise _escape(path, "the path contains a NUL byte")
    p = path.strip() or "."
    root = str(workspace)
    if p == SANDBOX_WORKSPACE or p.startswith(SANDBOX_WORKSPACE + "/"):
        p = p[len(SANDBOX_WORKSPACE):]
    elif p == root or p.startswith(root.rstrip("/") + "/"):
        p = p[len(root):]
    elif p.startswith(("/", "~")):
        raise _escape(path, "absolute paths outside the workspace are not allowed")
    return _normalise(p.split("/"), path)


def _normalise(raw: list[str], original: str) -> list[str]:
    parts: list[str] = []
    for part in raw:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise _escape(original, "the path climbs above the workspace root")
            parts.pop()
        else:
            parts.append(part)
    return parts


def _link_target(target: str, parent: list[str], workspace: Path, original: str) -> list[str]:
    """Resolve a symlink's target (relative to its directory) into workspace components."""
    if target.startswith("/"):
        root = str(workspace)
        if target == SANDBOX_WORKSPACE or target.startswith(SANDBOX_WORKSPACE + "/"):
            rest = target[len(SANDBOX_WORKSPACE):]
        elif target == root or target.startswith(root.rstrip("/") + "/"):
            rest = target[len(root):]
        else:
            raise _escape(original, f"a symbolic link points outside the workspace ({target})")
        return _normalise(rest.split("/"), original)
    try:
        return _normalise([*parent, *target.split("/")], original)
    except ToolError as exc:
        why = f"a symbolic link points outside the workspace ({target})"
        raise _escape(original, why) from exc


def _give_to_owner(root_fd: int, target: int | str, *, dir_fd: int | None = None) -> None:
    """Give a file root just created/wrote in the workspace to the workspace's owner.

    Only when bastion runs as root and the workspace belongs to someone else (the sandbox
    account a root bastion hands the workspace to): so sandboxed code can change what the
    file tools wrote, as it can in a workspace of an ordinary user.
    """
    if os.geteuid() != 0:
        return
    owner = os.fstat(root_fd)
    if owner.st_uid == 0:
        return
    if isinstance(target, int):
        if os.fstat(target).st_uid == 0:
            os.fchown(target, owner.st_uid, owner.st_gid)
    else:
        os.chown(target, owner.st_uid, owner.st_gid, dir_fd=dir_fd, follow_symlinks=False)


def open_in_workspace(
    workspace: Path,
    path: str,
    flags: int,
    *,
    mode: int = 0o644,
    create_dirs: bool = False,
    protect: frozenset[str] = frozenset(),
) -> tuple[int, str]:
    """Open ``path`` inside ``workspace`` and return ``(fd, workspace-relative path)``.

    ``flags`` apply to the last component (``O_NOFOLLOW`` and ``O_CLOEXEC`` are added);
    pass ``os.O_PATH | os.O_DIRECTORY`` to open a directory. ``create_dirs`` makes missing
    folders on the way (``mkdirat``), the last one too when ``flags`` has ``O_DIRECTORY``.
    Raises :class:`ToolError` for escapes, missing files and wrong file types. The caller
    closes the fd. A path whose first component (after following links) is in ``protect``
    is refused.
    """
    parts = split_path(path, workspace)
    root_fd = os.open(workspace, _DIR_FLAGS)
    fd = os.dup(root_fd)
    done: list[str] = []
    todo = list(parts)
    hops = 0
    try:
        while todo:
            name = todo[0]
            last = len(todo) == 1
            if not done and name in protect:
                raise ToolError(
                    f"{path!r} is inside {name}, which programs on the host run or obey "
                    "(git hooks, direnv, editor tasks); bastion does not write there",
                    fix=f"edit {name} yourself outside bastion if the change is wanted")
            try:
                if last:
                    nfd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
                else:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError as err:
                if not create_dirs or (last and not flags & os.O_DIRECTORY):
                    shown = "/".join([*done, name])
                    raise ToolError(
                        f"{shown or '.'} does not exist in the workspace",
                        fix="call list_files to see what is there",
                    ) from err
                # mkdirat never follows a link; one planted meanwhile is met by the next open
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    _give_to_owner(root_fd, name, dir_fd=fd)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
                    raise ToolError(f"cannot open {path!r}: {exc.strerror}") from exc
                try:
                    target = os.readlink(name, dir_fd=fd)
                except OSError as err:
                    shown = "/".join([*done, name])
                    kind = "a directory" if exc.errno == errno.EISDIR else "not a directory"
                    raise ToolError(f"{shown} is {kind}") from err
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise _escape(path, "too many levels of symbolic links") from exc
                todo = _link_target(target, done, workspace, path) + todo[1:]
                os.close(fd)
                fd = os.dup(root_fd)
                done = []
                continue
            os.close(fd)
            fd = nfd
            if last and flags & os.O_CREAT:
                _give_to_owner(root_fd, fd)
            done.append(name)
            todo.pop(0)
        if not parts:  # the root itself
            os.close(fd)
            fd = os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=root_fd)
        return fd, "/".join(done) or "."
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.close(root_fd)


def require_regular(fd: int, shown: str) -> os.stat_result:
    """Return ``fstat(fd)`` or raise when it is not a regular file (FIFOs, devices...)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{shown} is a directory", fix="call list_files on a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{shown} is not a regular file")
    return st


def write_new_file(workspace: Path, folder: str, name: str, data: bytes, *,
                   mode: int = 0o644) -> str:
    """Write ``data`` to a new file ``folder/name`` in ``workspace``; return its relative path.

    For bastion's own writes into the workspace (browser downloads and screenshots), which a
    sandboxed process may have prepared with symlinks: the folder is opened (and made) by the
    ``openat``/``O_NOFOLLOW`` walk of :func:`open_in_workspace`, and the file is created with
    ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to it, so neither an existing file nor a link
    planted at the name -- dangling or not -- is ever opened. A taken name gets ``-1``, ``-2``...
    """
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise _escape(name, "a file name may not contain / or be . or ..")
    dfd, shown = open_in_workspace(workspace, folder, os.O_PATH | os.O_DIRECTORY,
                                   create_dirs=True)
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    try:
        for n in range(1000):
            cand = name if n == 0 else f"{stem}-{n}{dot}{ext}"
            try:
                fd = os.open(cand, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode, dir_fd=dfd)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return cand if shown == "." else f"{shown}/{cand}"
        raise ToolError(f"{shown}/{name} and 999 variants of it exist already",
                        fix=f"remove old files from {shown}")
    finally:
        os.close(dfd)


def open_parent_nofollow(
    workspace: Path, path: str, *, create_dirs: bool = False
) -> tuple[int, str]:
    """Open the directory that holds ``path`` and return ``(directory fd, last component)``.

    Stricter than :func:`open_in_workspace`: no symbolic link is followed at all, not even one
    that stays inside the workspace, so whatever a sandbox planted cannot redirect the caller
    (restores write exactly where the path says or nowhere). A component that is a link or
    not a directory raises :class:`ToolError`; a missing one is created (``0o755``) with
    ``create_dirs``. The returned fd is a plain read-only directory fd; the caller closes it.
    """
    parts = split_path(path, workspace)
    if not parts:
        raise _escape(path, "the workspace root has no parent inside the workspace")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(workspace, flags)
    try:
        for i, name in enumerate(parts[:-1]):
            try:
                nfd = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError as err:
                if not create_dirs:
                    raise ToolError(f"{'/'.join(parts[:i + 1])} does not exist") from err
                os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise ToolError(f"cannot open {path!r}: {exc.strerror}") from exc
                shown = "/".join(parts[:i + 1])
                raise _escape(path, f"{shown} is a symbolic link or not a directory") from exc
            os.close(fd)
            fd = nfd
        return fd, parts[-1]
    except BaseException:
        os.close(fd)
        raise
