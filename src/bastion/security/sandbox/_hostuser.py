"""Which host user sandboxed code runs as, and handing the workspace over to it.

When bastion runs as an ordinary user, sandboxes act as that user on the host (bubblewrap's
user namespace maps its uid 1000 to it; podman and gVisor use the workspace's owner), which
is no more than bastion itself may do.

When bastion runs as root (egress control needs it), that rule would make sandboxed code
host root: files it writes would be root's, and ``chmod 4755`` would plant a setuid-root
binary any local user who can reach the workspace could run. So every backend then runs
sandboxed code as a dedicated unprivileged system account, ``bastion-sandbox`` (created once
with ``useradd --system`` when missing), and a root-owned workspace is handed over to it
(:func:`hand_over`): its files become that account's, so code in the sandbox can change
them, while bastion (root) can still read and write everything afterwards. Files bastion's
own file tools create later take the workspace owner too (``tools/builtin/_paths.py``).
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from bastion.errors import SandboxError

ACCOUNT = "bastion-sandbox"
_USERADD_FIX = (f"useradd --system --user-group --no-create-home --home-dir /nonexistent "
                f"--shell /usr/sbin/nologin {ACCOUNT}")


@functools.cache
def _account() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(ACCOUNT)
    except KeyError as cause:
        exe = shutil.which("useradd") or "/usr/sbin/useradd"
        try:
            proc = subprocess.run(_USERADD_FIX.replace("useradd", exe, 1).split(),
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"cannot create the sandbox account {ACCOUNT}: {exc}",
                               fix=_USERADD_FIX) from exc
        if proc.returncode not in (0, 9):  # 9: created meanwhile by another process
            raise SandboxError(f"cannot create the sandbox account {ACCOUNT}: "
                               f"{proc.stderr.strip()[-200:]}", fix=_USERADD_FIX) from cause
        entry = pwd.getpwnam(ACCOUNT)
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxError(f"the sandbox account {ACCOUNT} has uid or gid 0",
                           fix=f"userdel {ACCOUNT}, then let bastion create it again")
    return entry.pw_uid, entry.pw_gid


def drop_to() -> tuple[int, int] | None:
    """Return the unprivileged ``(uid, gid)`` sandboxes must run as, or None (not root).

    None means bastion is not root: then the sandbox acting as bastion's own user (or the
    workspace owner) is already unprivileged.
    """
    if os.geteuid() != 0:
        return None
    return _account()


def owner_ids(workspace: Path) -> tuple[int, int]:
    """Return the host ``(uid, gid)`` a podman or gVisor sandbox on ``workspace`` runs as.

    The workspace owner when bastion is not root; else the sandbox account, after the
    workspace has been handed over to it (see :func:`hand_over`).
    """
    ids = drop_to()
    if ids is None:
        st = os.stat(workspace)
        return st.st_uid, st.st_gid
    hand_over(workspace, *ids)
    return ids


def hand_over(workspace: Path, uid: int, gid: int) -> None:
    """Give a root-owned workspace (and the root-owned entries in it) to ``uid:gid``.

    Done once: a workspace already owned by someone other than root is left as it is.
    Symbolic links are never followed (``lchown``), so a link planted in the workspace
    cannot hand over anything outside it.
    """
    st = os.lstat(workspace)
    if not stat.S_ISDIR(st.st_mode):
        raise SandboxError(f"the workspace {workspace} is not a directory",
                           fix="set agent.workspace to a directory")
    if st.st_uid != 0:
        return
    for dirpath, dirnames, filenames in os.walk(workspace, followlinks=False):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            entry = os.lstat(path)
            if entry.st_uid == 0:
                os.lchown(path, uid, gid)
    os.chown(workspace, uid, gid)
    os.chmod(workspace, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
