"""The seccomp filter bubblewrap loads into every sandbox (compiled with libseccomp).

Built with ``pyseccomp`` (ctypes bindings to the system's libseccomp, the library Docker,
podman and systemd use) rather than hand-written BPF: libseccomp resolves syscall numbers
per architecture and emits the architecture check, so a 32-bit ``int 0x80`` call cannot
slip past (a foreign architecture is killed). Everything is allowed except:

- kernel surfaces sandboxed code never needs and that keep producing privilege-escalation
  bugs: io_uring, userfaultfd, the key ring, perf events, bpf, kernel modules, kexec;
- mount and namespace calls (bwrap has already set the sandbox up when the filter loads);
- ``clone3`` answers ``ENOSYS``, so libc falls back to ``clone``, whose flags *can* be
  checked (``clone3`` passes them in memory a filter cannot read): no new user namespace;
- creating setuid/setgid files: ``chmod``/``fchmod``/``fchmodat`` and ``mknod`` with
  ``S_ISUID``/``S_ISGID``, and ``open``/``openat``/``creat`` that create with those bits.

Denied calls fail with ``EPERM`` (``ENOSYS`` for ``clone3``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import stat
import tempfile
from pathlib import Path

DENIED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
    "keyctl", "add_key", "request_key", "perf_event_open", "bpf",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr", "unshare", "setns",
    "swapon", "swapoff", "reboot", "syslog", "acct", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "quotactl", "open_by_handle_at", "name_to_handle_at",
    "fanotify_init", "lookup_dcookie", "vhangup", "iopl", "ioperm", "uselib", "ustat",
    "sysfs", "_sysctl", "nfsservctl",
)
CLONE_NEWUSER = 0x10000000
_SETID = stat.S_ISUID | stat.S_ISGID
# (syscall, index of the mode argument, index of the flags argument or None)
_MODE_ARGS = (("chmod", 1, None), ("fchmod", 1, None), ("fchmodat", 2, None),
              ("fchmodat2", 2, None), ("mknod", 1, None), ("mknodat", 2, None),
              ("creat", 1, None), ("open", 2, 1), ("openat", 3, 2))


@functools.cache
def filter_bytes() -> bytes:
    """Return the compiled BPF program (raises ImportError/OSError without libseccomp)."""
    import pyseccomp as sc

    filt = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        with contextlib.suppress(Exception):  # not known on this architecture/libseccomp
            filt.add_rule(deny, name)
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    filt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    for name, mode_arg, flags_arg in _MODE_ARGS:
        for bit in (stat.S_ISUID, stat.S_ISGID):
            args = [sc.Arg(mode_arg, sc.MASKED_EQ, bit, bit)]
            if flags_arg is not None:
                args.append(sc.Arg(flags_arg, sc.MASKED_EQ, os.O_CREAT, os.O_CREAT))
            with contextlib.suppress(Exception):
                filt.add_rule(deny, name, *args)
    with tempfile.TemporaryFile() as out:
        filt.export_bpf(out)
        out.seek(0)
        return out.read()


def filter_file() -> Path | None:
    """Return the compiled filter (a file bwrap reads with ``--seccomp``), or None.

    None when libseccomp or its bindings are missing (``available()`` of the backend then
    says so). Kept under bastion's home, 0600, rewritten only when missing or different.
    """
    try:
        data = filter_bytes()
    except (ImportError, OSError, RuntimeError):
        return None
    from bastion.config import paths

    digest = hashlib.sha256(data).hexdigest()[:16]
    path = paths.data_dir("sandbox") / f"seccomp-{digest}.bpf"
    if path in _WRITTEN and path.is_file():
        return path
    if not (path.is_file() and path.read_bytes() == data):
        fd, tmp = tempfile.mkstemp(prefix=".seccomp-", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    _WRITTEN.add(path)
    return path


_WRITTEN: set[Path] = set()
