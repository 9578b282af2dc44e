"""Parse untrusted bytes in a child process with resource limits.

PDF and HTML ingestion and audio decoding hand attacker-supplied files to parsers (pypdf,
FFmpeg through PyAV, ...). A crash, an endless loop or a decompression bomb in one of them
must cost that one document, not the bastion process. :func:`run_isolated` runs
``module:function(data, **kwargs)`` in a fresh Python child that first limits itself
(address space, CPU seconds, size of what it writes, no core dumps), reads the input from a
private temporary file and writes ``(metadata, payload)`` to another. The parent enforces a
wall-clock limit (the whole process group is killed), and turns a signal, a limit or a
refusal into one clear error of the caller's type.

Nothing is unpickled from the child: it answers with one JSON line plus raw bytes, so a
parser that was subverted cannot run code in the parent. The child gets a minimal
environment (no secrets, no tokens), one thread for the maths libraries.

``BASTION_TEST_PARSER_FAULT`` (``segv``, ``hang``, ``memory``) makes the child crash, spin
or allocate before parsing; the breach tests use it to prove the parent survives each.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bastion.errors import BastionError
from bastion.security.sandbox.base import Limits

FAULT_ENV = "BASTION_TEST_PARSER_FAULT"


#: what one parse may use: address space, CPU, what it writes, wall-clock time
DEFAULT_LIMITS = Limits(wall_seconds=60.0, cpu_seconds=30, memory_mb=1024, file_size_mb=512)


def _package_root() -> str:
    import bastion

    return str(Path(bastion.__file__).resolve().parents[1])


def _child_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": _package_root(),
           "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if os.environ.get(FAULT_ENV):
        env[FAULT_ENV] = os.environ[FAULT_ENV]
    return env


def run_isolated(
    target: str,
    data: bytes,
    *,
    what: str,
    error: type[BastionError] = BastionError,
    limits: Limits | None = None,
    **kwargs: Any,
) -> tuple[dict[str, Any], bytes]:
    """Run ``target`` (``"package.module:function"``) on ``data`` in a limited child.

    The function is called as ``function(data, **kwargs)`` and returns ``(metadata dict,
    payload bytes)``. A :class:`BastionError` it raises comes back as ``error`` with its
    message and fix; a crash, a limit or any other failure raises ``error`` naming ``what``.
    ``limits`` defaults to :data:`DEFAULT_LIMITS`.
    """
    limits = limits or DEFAULT_LIMITS
    header = json.dumps({"target": target, "kwargs": kwargs,
                         "limits": [limits.memory_mb, limits.cpu_seconds, limits.file_size_mb]})
    with tempfile.TemporaryDirectory(prefix="bastion-parse-") as tmp:
        src, dst = Path(tmp) / "in", Path(tmp) / "out"
        with src.open("wb") as fh:
            fh.write(header.encode() + b"\n")
            fh.write(data)
        with src.open("rb") as fin, dst.open("wb") as fout:
            proc = subprocess.Popen(
                [sys.executable, "-s", "-m", "bastion.security.isolate"], stdin=fin,
                stdout=fout, stderr=subprocess.DEVNULL, env=_child_env(), cwd=tmp,
                start_new_session=True)
            try:
                code = proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired as exc:
                _kill(proc)
                raise error(f"the {what} took longer than {limits.wall_seconds:.0f} s and was "
                            "stopped", fix="the file is malformed or too complex; check it"
                            ) from exc
            finally:
                _kill(proc)
        return _answer(dst, code, what, error, limits)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _answer(
    dst: Path, code: int, what: str, error: type[BastionError], limits: Limits
) -> tuple[dict[str, Any], bytes]:
    raw = dst.read_bytes()
    head, sep, payload = raw.partition(b"\n")
    reply: dict[str, Any] | None = None
    if sep:
        with contextlib.suppress(ValueError):
            reply = json.loads(head)
    if code == 0 and isinstance(reply, dict) and reply.get("ok") is True:
        meta = reply.get("meta")
        return (meta if isinstance(meta, dict) else {}), payload
    if isinstance(reply, dict) and reply.get("ok") is False:
        fix = reply.get("fix")
        raise error(str(reply.get("message") or f"the {what} failed")[:500],
                    fix=str(fix)[:300] if fix else None)
    if code < 0:
        sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        why = {"SIGXCPU": f"used more than {limits.cpu_seconds} s of CPU",
               "SIGXFSZ": f"produced more than {limits.file_size_mb} MB"}.get(
                   str(sig), f"crashed (signal {sig})")
        raise error(f"the {what} {why}; the file was not read",
                    fix="the file is malformed or hostile; check where it came from")
    if reply is None and code == 3:
        raise error(f"the {what} ran out of memory (limit {limits.memory_mb} MB); the file "
                    "was not read", fix="the file is malformed or too large to parse")
    raise error(f"the {what} failed (exit status {code}); the file was not read",
                fix="the file is malformed or hostile; check where it came from")


# ---- the child -------------------------------------------------------------------------------
def _limit(memory_mb: int, cpu_s: int, output_mb: int) -> None:
    mem = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    out = output_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (out, out))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _fault(kind: str) -> None:
    if kind == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "hang":
        while True:
            pass
    elif kind == "memory":
        hog = [bytearray(2**26) for _ in range(4096)]  # 256 GiB, far over any limit
        del hog


def _child() -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    header = json.loads(stdin.readline())
    _limit(*header["limits"])
    try:
        fault = os.environ.get(FAULT_ENV)
        if fault:
            _fault(fault)
        data = stdin.read()
        module, _, name = str(header["target"]).partition(":")
        if not module.startswith("bastion."):
            raise BastionError(f"refused parser target {module}")
        func = getattr(importlib.import_module(module), name)
        meta, payload = func(data, **header["kwargs"])
        stdout.write(json.dumps({"ok": True, "meta": meta}).encode() + b"\n")
        stdout.write(payload)
    except MemoryError:
        return 3
    except BastionError as exc:
        reply = {"ok": False, "message": exc.message, "fix": exc.fix}
        stdout.write(json.dumps(reply).encode() + b"\n")
    except Exception as exc:
        reply = {"ok": False, "message": f"{type(exc).__name__}: {exc}"[:500], "fix": None}
        stdout.write(json.dumps(reply).encode() + b"\n")
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
