"""F22 (sandbox part): bubblewrap's kernel surface, /tmp and memory are bounded.

Attacks from inside a real bubblewrap sandbox:
- raw syscalls through ctypes to io_uring, userfaultfd (user-mode-only, which an
  unprivileged process may normally open) and the key ring: each must fail with EPERM;
- filling /tmp far past its size: the write must fail (no space), not eat the host's RAM;
- several processes, each within RLIMIT_AS, that together exceed the sandbox's memory:
  the kernel must stop the tree (the memory cgroup), not let 64 x RLIMIT_AS through.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.security._backends import make, problem

pytestmark = [pytest.mark.needs_root,
              pytest.mark.skipif(problem("bubblewrap") is not None,
                                 reason=str(problem("bubblewrap")))]

SYSCALLS = r"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(nr, *args)
    print(name, "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?"))
params = ctypes.create_string_buffer(120)
call("io_uring_setup", 425, 1, params)
call("userfaultfd", 323, 0x80000 | 1)  # O_CLOEXEC | UFFD_USER_MODE_ONLY
call("keyctl", 250, 0, ctypes.c_long(-3), 1)  # KEYCTL_GET_KEYRING_ID of the session ring
"""


async def test_dangerous_syscalls_are_refused(tmp_path: Path) -> None:
    box = make("bubblewrap", tmp_path)
    res = await box.run(["python3", "-c", SYSCALLS])
    got = dict(line.split() for line in res.stdout.splitlines())
    assert got == {"io_uring_setup": "EPERM", "userfaultfd": "EPERM", "keyctl": "EPERM"}, \
        res.stdout + res.stderr


async def test_filling_tmp_fails_at_its_size(tmp_path: Path) -> None:
    box = make("bubblewrap", tmp_path, file_size_mb=1024, wall_seconds=60)
    res = await box.run(["/bin/sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=300 2>&1;"
                                          " echo rc=$?; du -m /tmp/fill"])
    assert "No space left on device" in res.stdout, res.stdout + res.stderr
    used_mb = int(res.stdout.split()[-2])
    assert used_mb <= 64


def memory_cgroups() -> bool:
    """Whether this host has a writable memory cgroup (v1 hierarchy or v2 controller)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        return "memory" in v2.read_text().split()
    return os.access("/sys/fs/cgroup/memory", os.W_OK)


@pytest.mark.skipif(not memory_cgroups(), reason="no writable memory cgroup here")
async def test_processes_together_cannot_exceed_the_sandbox_memory(tmp_path: Path) -> None:
    box = make("bubblewrap", tmp_path, memory_mb=256, wall_seconds=60)
    hog = "import time; b = 'x' * (180 << 20); time.sleep(3); print('held')"
    res = await box.run(["/bin/sh", "-c",
                         f'for i in 1 2 3 4; do python3 -c "{hog}" & done; wait'])
    held = res.stdout.split().count("held")
    assert held < 4, f"4 x 180 MiB all held in a 256 MiB sandbox: {res.stdout} {res.stderr}"
    assert "memory limit reached" in res.stderr
