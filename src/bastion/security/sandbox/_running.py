"""Which sandboxed runs are alive: one small JSON file per run under HOME/sandbox/running.

``bastion sandbox ls`` reads them and ``bastion sandbox kill`` ends a run (its process
group and pids cgroup), from any process of the same user.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.config import paths


def running_dir() -> Path:
    """Return (and create) the directory of run records."""
    path = paths.data_dir("sandbox") / "running"
    path.mkdir(parents=True, exist_ok=True)
    return path


def track(pid: int, cgroup: Path | None, label: Mapping[str, str]) -> Path:
    """Record a started run; returns its record path (pass it to :func:`untrack`)."""
    rid = uuid.uuid4().hex[:10]
    record = {"id": rid, "pid": pid, "cgroup": str(cgroup) if cgroup else None,
              "started": time.time(), "owner_pid": os.getpid(), **dict(label)}
    path = running_dir() / f"{rid}.json"
    path.write_text(json.dumps(record))
    return path


def untrack(path: Path) -> None:
    """Forget a finished run."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runs() -> list[dict[str, Any]]:
    """Return the live runs (stale records of dead processes are removed)."""
    out = []
    for f in sorted(running_dir().glob("*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(rec["pid"])):
            out.append(rec)
        else:
            untrack(f)
    return out


def kill(run_id: str) -> bool:
    """SIGKILL one run's process tree; False if no such live run."""
    for rec in runs():
        if rec["id"] != run_id:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(rec["pid"]), signal.SIGKILL)
        if rec.get("cgroup"):
            from bastion.security.sandbox._cgroup import PidsCgroup

            PidsCgroup(Path(rec["cgroup"]), 1 if "/pids/" in rec["cgroup"] else 2).kill_all()
        return True
    return False
