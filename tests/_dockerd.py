"""The tests' own Docker daemon: started on first use (CI runs as root), stopped at the end.

It never clashes with another daemon: its own ``--data-root`` (kept between runs under
``/var/tmp/bastion-test-dockerd`` so the sandbox image is loaded once; a fresh one when another
test process holds that), its own ``--exec-root``, socket and pidfile in a new temporary
directory, no bridge, no iptables, no ip_forward (the egress tests own those). Storage driver
overlay2, vfs where the kernel refuses overlay. The sandbox image is copied from podman's
storage (scripts/test-assets.sh builds it there) -- no second debootstrap. ``DOCKER_HOST`` is
set for this process (and what it starts), so :class:`DockerSandbox` talks to this daemon.
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
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
CLI = "/usr/bin/docker"
CACHE = Path(os.environ.get("BASTION_TEST_DOCKERD_CACHE", "/var/tmp/bastion-test-dockerd"))
_state: dict[str, object] = {}


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln]
        return (errors or lines or ["(empty log)"])[-1][-300:]
    return "(no log)"


def _start(data_root: Path, run_dir: Path, driver: str) -> tuple[subprocess.Popen[bytes], str]:
    sock = f"unix://{run_dir}/docker.sock"
    log = (run_dir / f"dockerd-{driver}.log").open("wb")
    proc = subprocess.Popen(
        [DOCKERD, "--data-root", str(data_root), "--exec-root", str(run_dir / "exec"),
         "--host", sock, "--pidfile", str(run_dir / "dockerd.pid"), "--bridge=none",
         "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
         "--storage-driver", driver, "--log-level", "warn"],
        stdout=log, stderr=log, start_new_session=True)
    log.close()
    return proc, sock


def _wait_up(proc: subprocess.Popen[bytes], sock: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            if subprocess.run([CLI, "-H", sock, "version"], capture_output=True,
                              timeout=10).returncode == 0:
                return True
        time.sleep(0.2)
    return False


def _ensure_image(sock: str) -> str | None:
    from bastion.security.sandbox.container import IMAGE, copy_image

    if subprocess.run([CLI, "-H", sock, "image", "inspect", IMAGE],
                      capture_output=True).returncode == 0:
        return None
    if shutil.which("podman") is None or subprocess.run(
            ["podman", "image", "exists", IMAGE], capture_output=True).returncode != 0:
        return f"no {IMAGE} in podman's storage to copy (fix: scripts/test-assets.sh)"
    copy_image(["podman"], [CLI, "-H", sock])
    return None


def ensure() -> str | None:
    """Start the daemon once per process; return why it cannot run (None when it does)."""
    if "problem" in _state:
        return _state["problem"]  # type: ignore[return-value]
    _state["problem"] = problem = _ensure()
    return problem


def _ensure() -> str | None:
    if os.geteuid() != 0:
        return "the test dockerd needs root (CI runs as root)"
    if not (os.access(DOCKERD, os.X_OK) and os.access(CLI, os.X_OK)):
        return "docker.io is not installed (fix: scripts/system-deps.sh)"
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = (CACHE / "lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        data_root = CACHE / "data"
    except BlockingIOError:  # another test process runs its daemon on the cache
        lock.close()
        lock = None  # type: ignore[assignment]
        data_root = Path(tempfile.mkdtemp(prefix="bdk-data-", dir="/var/tmp"))
    run_dir = Path(tempfile.mkdtemp(prefix="bdk-", dir="/tmp"))  # short: socket paths
    _state.update(lock=lock, run_dir=run_dir, data_root=data_root)
    atexit.register(stop)
    why = ""
    for driver in ("overlay2", "vfs"):  # vfs where the kernel refuses overlay mounts
        proc, sock = _start(data_root, run_dir, driver)
        _state["proc"] = proc
        if _wait_up(proc, sock):
            break
        why = _log_tail(run_dir / f"dockerd-{driver}.log")
        _terminate(proc)
    else:
        return f"dockerd does not start here: {why}"
    _state["previous_host"] = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = sock
    try:
        problem = _ensure_image(sock)
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
    """Stop the daemon (its containers with it) and remove its run directory."""
    if "run_dir" in _state:
        _state["problem"] = "the test dockerd was stopped"
    proc = _state.pop("proc", None)
    if isinstance(proc, subprocess.Popen):
        sock = os.environ.get("DOCKER_HOST", "")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            names = subprocess.run([CLI, "-H", sock, "ps", "-aq"], capture_output=True,
                                   text=True, timeout=30).stdout.split()
            if names:
                subprocess.run([CLI, "-H", sock, "rm", "-f", *names], capture_output=True,
                               timeout=60)
        _terminate(proc)
    if "previous_host" in _state:
        previous = _state.pop("previous_host")
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = str(previous)
    run_dir = _state.pop("run_dir", None)
    if isinstance(run_dir, Path):
        shutil.rmtree(run_dir, ignore_errors=True)
    data_root = _state.pop("data_root", None)
    if isinstance(data_root, Path) and data_root.parent != CACHE:  # a throw-away one
        shutil.rmtree(data_root, ignore_errors=True)
    lock = _state.pop("lock", None)
    if lock is not None:
        lock.close()  # type: ignore[attr-defined]


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
