"""What the undo snapshot adds to a mutating tool call, against the same call without it.

    python bench/undo.py [--files 1000] [--big-mb 100] [--calls 200] [--sandboxed 30]

Workspace: ``--files`` small files in 20 folders plus one ``--big-mb`` file. Each call is a
``write_file`` that changes one small file, run through the app's full gateway with the undo
stage (snapshot before, diff after) and through the same gateway without it, interleaved.
The same for ``--sandboxed`` shell calls (bubblewrap) that write one file.
Printed: the first snapshot (copies everything once), p50/p99 per call both ways, the p50
added per mutating call and the ratio, and how many bytes the store copied per call (only
the file the previous call changed: unchanged files, the big one included, are not copied).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench.gateway import line  # noqa: E402  (p50/p99 line, same format as the gateway bench)


def seed(ws: Path, files: int, big_mb: int) -> None:
    for i in range(files):
        folder = ws / f"dir{i % 20:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"file{i:05d}.txt").write_text(f"small file {i}\n" * 8)
    with (ws / "big.bin").open("wb") as fh:
        block = os.urandom(1 << 20)
        for _ in range(big_mb):
            fh.write(block)


async def run(files: int, big_mb: int, calls: int, sandboxed: int, home: Path) -> None:
    os.environ["BASTION_HOME"] = str(home)
    from bastion.app import build_app
    from bastion.config.model import Config
    from bastion.memory.base import EphemeralMemory
    from bastion.messages import ToolCall
    from bastion.security.approval import AllowApprover
    from bastion.security.gateway import Gateway
    from bastion.security.undo import UndoStage
    from bastion.testing import ScriptedModel

    ws = home / "workspace"
    ws.mkdir()
    seed(ws, files, big_mb)
    cfg = Config.model_validate({"agent": {"workspace": str(ws)},
                                 "intelligence": {"enabled": False},
                                 "audit": {"durability": "queued"}})
    app = build_app(cfg, model=ScriptedModel(), memory=EphemeralMemory(), approver=AllowApprover())
    assert app.undo is not None
    store = app.undo
    plain = Gateway(app.registry, app.gateway.environment,
                    [s for s in app.gateway.stages if not isinstance(s, UndoStage)])

    t0 = time.perf_counter()
    await app.gateway.execute(ToolCall("write_file", {"path": "dir00/file00000.txt",
                                                      "content": "first"}), session_id="b")
    first = (time.perf_counter() - t0) * 1000
    kept0 = store._bytes
    with_undo: list[float] = []
    without: list[float] = []
    cpu_with: list[float] = []
    cpu_without: list[float] = []
    for i in range(calls):
        path = f"dir{i % 20:02d}/file{i % files:05d}.txt"
        for gw, out, cpu in ((app.gateway, with_undo, cpu_with), (plain, without, cpu_without)):
            args = {"path": path, "content": f"call {i} {'u' if gw is plain else 'n'}\n"}
            c0, t0 = time.process_time(), time.perf_counter()
            res = await gw.execute(ToolCall("write_file", args), session_id="b")
            out.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            assert res.ok, res.text
    per_call = (store._bytes - kept0) / calls
    shell_with: list[float] = []
    shell_without: list[float] = []
    for i in range(sandboxed if app.gateway.environment.sandbox is not None else 0):
        for gw, out in ((app.gateway, shell_with), (plain, shell_without)):
            cmd = f"echo {i} > dir01/file{i % files:05d}.txt"
            t0 = time.perf_counter()
            res = await gw.execute(ToolCall("shell", {"command": cmd}), session_id="b")
            out.append((time.perf_counter() - t0) * 1000)
            assert res.ok, res.text
    await app.aclose()

    entries = files + 20 + 1
    print(f"workspace: {files} small files in 20 folders + one {big_mb} MB file "
          f"({entries} entries)")
    print(f"first snapshot (copies everything once): {first:8.1f} ms")
    print(line("write_file without undo", without))
    print(line("write_file with undo snapshot", with_undo))
    added = statistics.median(with_undo) - statistics.median(without)
    ratio = statistics.median(with_undo) / statistics.median(without)
    print(f"undo adds p50 {added:.3f} ms per mutating call ({ratio:.2f}x the call without it);"
          f" {added * 1000 / entries:.2f} us per workspace entry")
    added_cpu = statistics.median(cpu_with) - statistics.median(cpu_without)
    print(f"process CPU per call p50: {statistics.median(cpu_without):.3f} ms without, "
          f"{statistics.median(cpu_with):.3f} ms with undo (+{added_cpu:.3f} ms; wall time on a "
          "loaded machine is inflated, CPU is not)")
    print(f"bytes copied per call after the first: {per_call:.0f} (the big file: 0)")
    if shell_with:
        print(line("sandboxed shell without undo", shell_without))
        print(line("sandboxed shell with undo", shell_with))
        ratio = statistics.median(shell_with) / statistics.median(shell_without)
        print(f"sandboxed call: undo adds p50 "
              f"{statistics.median(shell_with) - statistics.median(shell_without):.3f} ms "
              f"({ratio:.2f}x)")
    print(f"load average now: {os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--big-mb", type=int, default=100)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--sandboxed", type=int, default=30, help="shell calls (0 = skip)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-undo-") as tmp:
        asyncio.run(run(a.files, a.big_mb, a.calls, a.sandboxed, Path(tmp)))


if __name__ == "__main__":
    main()
