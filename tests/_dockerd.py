"""The tests' own Docker daemons: started on first use (CI runs as root), stopped at the end.

They never clash with another daemon: each has its own ``--data-root`` (kept between runs under
``/var/tmp/bastion-test-dockerd`` so the sandbox image is loaded once; a fresh one when another
test process holds that), its own ``--exec-root``, socket and pidfile in a new temporary
directory, no bridge, no iptables, no ip_forward (the egress tests own those). Storage driver
overlay2, vfs where the kernel refuses overlay. The sandbox image is copied from podman's
storage (scripts/test-assets.sh builds it there) -- no second debootstrap.

``ensure()`` starts the plain daemon (root, no remapping: Docker's default) and points
``DOCKER_HOST`` at it for this process, so :class:`DockerSandbox` talks to it.
``ensure("remap")`` starts a second one with ``--userns-remap default`` (uid 0 in a container
is an unprivileged host uid) and returns its address without touching ``DOCKER_HOST``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

DOCKERD = "/usr/sbin/dockerd"
CLI = "/usr/bin/docker"
CACHE = Path(os.environ.get("BASTION_TEST_DOCKERD_CACHE", "/var/tmp/bastion-test-dockerd"))


@dataclass
class _Daemon:
    flavour: str  # "plain" or "remap"
    problem: str | None = None
    host: str = ""
    proc: subprocess.Popen[bytes] | None = None
    run_dir: Path | None = None
    data_root: Path | None = None
    lock: IO[str] | None = None
    previous_host: list[str | None] = field(default_factory=list)


_daemons: dict[str, _Daemon] = {}


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln]
        return (errors or lines or ["(empty log)"])[-1][-300:]
    return "(no log)"


def _start(d: _Daemon, driver: str) -> subprocess.Popen[bytes]:
    assert d.run_dir is not None and d.data_root is not None
    d.host = f"unix://{d.run_dir}/docker.sock"
    log = (d.run_dir / f"dockerd-{driver}.log").open("wb")
    proc = subprocess.Popen(
        [DOCKERD, "--data-root", str(d.data_root), "--exec-root", str(d.run_dir / "exec"),
         "--host", d.host, "--pidfile", str(d.run_dir / "dockerd.pid"), "--bridge=none",
         "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
         "--storage-driver", driver, "--log-level", "warn",
         *(["--userns-remap", "default"] if d.flavour == "remap" else [])],
        stdout=log, stderr=log, start_new_session=True,
        # the daemon holds the data-root's lock too: one that outlives this process (killed
        # test run) keeps the next run off its data-root
        pass_fds=(d.lock.fileno(),) if d.lock is not None else ())
    log.close()
    return proc


def _wait_up(proc: subprocess.Popen[bytes], host: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            if subprocess.run([CLI, "-H", host, "version"], capture_output=True,
                              timeout=10).returncode == 0:
                return True
        time.sleep(0.2)
    return False


def _ensure_image(host: str) -> str | None:
    from bastion.security.sandbox.container import IMAGE, copy_image

    if subprocess.run([CLI, "-H", host, "image", "inspect", IMAGE],
                      capture_output=True).returncode == 0:
        return None
    if shutil.which("podman") is None or subprocess.run(
            ["podman", "image", "exists", IMAGE], capture_output=True).returncode != 0:
        return f"no {IMAGE} in podman's storage to copy (fix: scripts/test-assets.sh)"
    copy_image(["podman"], [CLI, "-H", host])
    return None


def ensure(flavour: str = "plain") -> str | None:
    """Start that daemon once per process; return why it cannot run (None when it does)."""
    d = _daemons.get(flavour)
    if d is None:
        d = _daemons[flavour] = _Daemon(flavour)
        d.problem = _boot(d)
    return d.problem


def address(flavour: str = "plain") -> str:
    """Return the ``-H`` address of a started daemon."""
    return _daemons[flavour].host


def _boot(d: _Daemon) -> str | None:
    if os.geteuid() != 0:
        return "the test dockerd needs root (CI runs as root)"
    if not (os.access(DOCKERD, os.X_OK) and os.access(CLI, os.X_OK)):
        return "docker.io is not installed (fix: scripts/system-deps.sh)"
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (CACHE / f"{d.flavour}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        d.lock, d.data_root = lock, CACHE / d.flavour
    except BlockingIOError:  # another test process runs its daemon on the cache
        lock.close()
        d.data_root = Path(tempfile.mkdtemp(prefix="bdk-data-", dir="/var/tmp"))
    d.run_dir = Path(tempfile.mkdtemp(prefix="bdk-", dir="/tmp"))  # short: socket paths
    atexit.register(stop)
    why = ""
    for driver in ("overlay2", "vfs"):  # vfs where the kernel refuses overlay mounts
        d.proc = _start(d, driver)
        if _wait_up(d.proc, d.host):
            break
        why = _log_tail(d.run_dir / f"dockerd-{driver}.log")
        _terminate(d.proc)
        d.proc = None
    else:
        return f"dockerd does not start here: {why}"
    if d.flavour == "plain":
        d.previous_host = [os.environ.get("DOCKER_HOST")]
        os.environ["DOCKER_HOST"] = d.host
    try:
        problem = _ensure_image(d.host)
    except Exception as exc:  # a failed copy is a reason to skip, with its words
        problem = str(exc)
    from bastion.security.sandbox import base
    from bastion.security.sandbox.docker import DockerSandbox

    base._PROBED.pop(DockerSandbox, None)  # probe again, against this daemon
    return problem


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def stop() -> None:
    """Stop every daemon started here (their containers with them), remove their run dirs."""
    for d in _daemons.values():
        if d.proc is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                names = subprocess.run([CLI, "-H", d.host, "ps", "-aq"], capture_output=True,
                                       text=True, timeout=30).stdout.split()
                if names:
                    subprocess.run([CLI, "-H", d.host, "rm", "-f", *names],
                                   capture_output=True, timeout=60)
            _terminate(d.proc)
            d.proc = None
            d.problem = "the test dockerd was stopped"
        if d.previous_host:
            previous = d.previous_host.pop()
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous
        if d.run_dir is not None:
            shutil.rmtree(d.run_dir, ignore_errors=True)
            for remapped in d.run_dir.parent.glob(f"{d.run_dir.name}.*"):  # remap's exec root
                shutil.rmtree(remapped, ignore_errors=True)
            d.run_dir = None
        if d.data_root is not None and d.data_root.parent != CACHE:  # a throw-away one
            shutil.rmtree(d.data_root, ignore_errors=True)
        d.data_root = None
        if d.lock is not None:
            d.lock.close()
            d.lock = None


def docker_problem() -> str | None:
    """Return why the docker sandbox cannot run in this test process (starting the daemon)."""
    problem = ensure()
    if problem is not None:
        return problem
    from bastion.security.sandbox.docker import DockerSandbox

    return DockerSandbox.available()


def backend_problem(kind: str) -> str | None:
    """Return why sandbox backend ``kind`` cannot run here (docker: on the tests' daemon)."""
    if kind == "docker":
        return docker_problem()
    from bastion.security.sandbox.factory import backend_class

    try:
        return backend_class(kind).available()
    except Exception as exc:  # a backend module missing in this build
        return str(exc)


def needs_backend(kind: str, *, even_in_ci: bool = False) -> pytest.MarkDecorator:
    """Skip a test when sandbox backend ``kind`` cannot run here -- asked when the test starts.

    Outside CI only, unless ``even_in_ci`` (CI fails such a test instead). Asking starts the
    tests' dockerd for a docker test (and points ``DOCKER_HOST`` at it). Asking at collection
    would start it in every pytest process that merely collects a docker test (each xdist
    worker), and the second one loads the image into a fresh data-root; this way only a process
    that runs one starts it. tests/conftest.py reads the mark.
    """
    return pytest.mark.sandbox_backend(kind, even_in_ci=even_in_ci)


def skip_unusable(item: pytest.Item) -> None:
    """``pytest_runtest_setup`` helper: skip ``item`` as its ``sandbox_backend`` marks say."""
    for mark in item.iter_markers("sandbox_backend"):
        why = backend_problem(mark.args[0])  # docker: starts the daemon, even where CI fails
        if why is not None and (mark.kwargs.get("even_in_ci") or not os.environ.get("CI")):
            pytest.skip(f"{mark.args[0]}: {why}")
