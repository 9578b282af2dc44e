"""Where bastion keeps its config and data: ``BASTION_HOME`` or the platform's user data dir.

Everything there is private to the user: the home and every data directory are created 0700
(an existing home of ours that is open to others is tightened), and the CLI and server run
with ``umask 077`` (see :func:`private_umask`), so the files they create are 0600. Audit log,
conversations, workspace and run records are not readable by other local users.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

import platformdirs

PRIVATE_UMASK = 0o077


def home() -> Path:
    """Return bastion's home directory (created on demand by callers that write)."""
    env = os.environ.get("BASTION_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("bastion", appauthor=False))


def config_file() -> Path:
    """Return the path of ``bastion.yaml``."""
    return home() / "bastion.yaml"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) mode 0700; tighten it if it is ours and open."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            path.chmod(stat.S_IMODE(st.st_mode) & 0o700)
    return path


def ensure_home() -> Path:
    """Return bastion's home, created (or tightened to) mode 0700."""
    return private_dir(home())


def data_dir(name: str) -> Path:
    """Return (and create, 0700) a data sub-directory of the home, e.g. ``audit``."""
    ensure_home()
    return private_dir(home() / name)


def private_umask() -> None:
    """Set ``umask 077`` for this process (the CLI and server entry): new files are 0600."""
    os.umask(PRIVATE_UMASK)


def write_private(path: Path, data: str | bytes) -> Path:
    """Replace ``path`` with ``data`` atomically, mode 0600 whatever the umask.

    The temporary file has a name of its own in the same folder (``mkstemp``), so processes
    writing the same file at once never rename each other's temporary file away (each write is
    whole; the last one wins), and it is removed when the write fails.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp: created 0600
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return path
