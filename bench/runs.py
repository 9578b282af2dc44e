"""What parking and resuming an unattended run costs, against the same run that does not park.

    python bench/runs.py [--runs 50]

One assembled app (real audit log, approval manager, gateway, run store in SQLite with
``synchronous=FULL``) and the scripted model (no model time). Each parked run calls
``write_file`` (policy ``ask``), parks, is approved, resumes and answers; each baseline run is
the same run with the task's ``auto_approve`` rule, so it never parks. Interleaved, same process.

- park: from the approver parking the call to the approval being listed (the agent unwinds,
  the state is saved, the audit record written, the approval queued and published).
- resume: from the decision to the approved call entering the tool stage (the decision saved,
  a worker spawned, the run reloaded and re-entered, the gateway stages run again).
- baseline: a whole unparked run, start to receipt.

Target (issue #21): park and resume each <= 50 ms excluding model time.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def run(n: int, home: Path) -> dict[str, float]:
    os.environ["BASTION_HOME"] = str(home)
    from bastion.app import build_app
    from bastion.config.model import Config
    from bastion.memory.base import EphemeralMemory
    from bastion.security.approval import ApprovalParked
    from bastion.tasks import runs as runs_mod
    from bastion.tasks.park import RunStore
    from bastion.tasks.spec import AutoApprove, Schedule, TaskPolicy, TaskSpec, Trigger
    from bastion.testing.model import ScriptedModel, call, say
    from bastion.tools.base import Risk

    ws = home / "workspace"
    ws.mkdir()
    cfg = Config.model_validate({"agent": {"workspace": str(ws)},
                                 "intelligence": {"enabled": False},
                                 "security": {"sandbox": "none", "tools": {"write_file": "ask"}}})
    model = ScriptedModel()
    app = build_app(cfg, model=model, memory=EphemeralMemory())
    engine = runs_mod.RunEngine(app, RunStore(home / "runs.db"))
    engine.open()
    assert app.hitl is not None
    marks: dict[str, float] = {}
    done: dict[str, asyncio.Event] = {}

    decide = runs_mod.RunApprover.decide

    async def timed_decide(self: Any, request: Any, *, timeout_s: float) -> Any:
        try:
            return await decide(self, request, timeout_s=timeout_s)
        except ApprovalParked:
            marks["raised"] = time.perf_counter()
            raise

    runs_mod.RunApprover.decide = timed_decide  # type: ignore[method-assign]
    publish = app.hitl._publish

    def timed_publish(event: dict[str, Any]) -> None:
        if event.get("type") == "approval_pending":
            marks["listed"] = time.perf_counter()
            marks["approval"] = event["id"]  # type: ignore[assignment]
        publish(event)

    app.hitl._publish = timed_publish  # type: ignore[method-assign]
    journal = runs_mod.JournalStage.__call__

    async def timed_journal(self: Any, req: Any, nxt: Any) -> Any:
        marks.setdefault("tool", time.perf_counter())
        return await journal(self, req, nxt)

    runs_mod.JournalStage.__call__ = timed_journal  # type: ignore[method-assign]
    finish = engine._finish

    async def timed_finish(run: Any, *args: Any) -> None:
        await finish(run, *args)
        done[run.id].set()

    engine._finish = timed_finish  # type: ignore[method-assign]

    park_ms: list[float] = []
    resume_ms: list[float] = []
    base_ms: list[float] = []
    parked_total: list[float] = []
    asks = TaskPolicy()
    rule = TaskPolicy(auto_approve=(AutoApprove("write_file", Risk.HIGH),))
    for i in range(n):
        for policy in (asks, rule):
            model.replies += [call("write_file", path=f"f{i}.txt", content="x"), say("done")]
            marks.clear()
            spec = TaskSpec(f"bench{i}", "admin", "write", Schedule("manual"), policy=policy)
            t0 = time.perf_counter()
            run_id = engine.start(spec, Trigger("manual", 0.0))
            done[run_id] = asyncio.Event()
            if policy is rule:
                await done[run_id].wait()
                base_ms.append((time.perf_counter() - t0) * 1000)
                continue
            while "listed" not in marks:
                await asyncio.sleep(0)
            park_ms.append((marks["listed"] - marks["raised"]) * 1000)
            marks.pop("tool", None)
            t1 = time.perf_counter()
            app.hitl.resolve(str(marks["approval"]), True, by="bench")
            while "tool" not in marks:
                await asyncio.sleep(0)
            resume_ms.append((marks["tool"] - t1) * 1000)
            await done[run_id].wait()
            parked_total.append((time.perf_counter() - t0) * 1000)
    await engine.aclose()
    await app.aclose()
    return {"park_p50": statistics.median(park_ms), "park_p99": _p(park_ms, 0.99),
            "resume_p50": statistics.median(resume_ms), "resume_p99": _p(resume_ms, 0.99),
            "base_p50": statistics.median(base_ms), "parked_p50": statistics.median(parked_total)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(run(args.runs, Path(tmp)))
    print(f"runs: {args.runs} parked + {args.runs} baseline (same run, auto-approved), "
          "scripted model")
    print(f"park    p50 {r['park_p50']:7.2f} ms  p99 {r['park_p99']:7.2f} ms  "
          f"(target <= 50 ms)  = {r['park_p50'] / r['base_p50']:.2f}x a whole baseline run")
    print(f"resume  p50 {r['resume_p50']:7.2f} ms  p99 {r['resume_p99']:7.2f} ms  "
          f"(target <= 50 ms)  = {r['resume_p50'] / r['base_p50']:.2f}x a whole baseline run")
    print(f"baseline run p50 {r['base_p50']:7.2f} ms; parked run p50 (park+approve+resume) "
          f"{r['parked_p50']:7.2f} ms = {r['parked_p50'] / r['base_p50']:.2f}x")


if __name__ == "__main__":
    main()
