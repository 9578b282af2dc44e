"""Gateway overhead and sandboxed-call latency, side by side in one run.

    python bench/gateway.py [--calls 2000] [--sandboxed 40] [--tracing-only]

1. A cheap tool (read_file on a small file) called directly vs through the app's full gateway
   (audit to SQLite, policy, risk/approval, secrets, output scan): p50/p99 per call and the
   gateway's own overhead (difference of p50s).
2. A sandboxed ``/bin/true`` per backend available here: cold (a fresh sandbox per call) and
   warm (the pre-started pool: bubblewrap waiters, podman and Docker attached containers,
   gVisor containers booted ahead, one per call), p50/p99. Docker is measured on the daemon
   at ``$DOCKER_HOST`` (else /var/run/docker.sock); one that is not running is a "skipped"
   row with the reason. The
   pool is refilled (and used containers removed) outside the timed part, as an
   idle pool does between calls, and the next call comes ``--gap`` seconds later (0.1 s:
   an agent waits far longer for its model between two tool calls; back to back, the call
   competes with the refill's tail for the CPU). The load average is printed before and
   after: on a shared machine it moves the sandboxed figures a lot.
3. Risk classification of typical shell/python calls (tree-sitter-bash / ast, the risk
   stage's share of a sandboxed call) against the old destructive-command regex alone.
4. The same gateway call with OpenTelemetry traces off and on (a real OTLP receiver on
   loopback), alternating call by call (``--tracing-only`` runs just this part).
Targets (issue 14): <= 1 ms p50 gateway overhead; <= 15 ms p50 warm bubblewrap/podman call
(issue 24: the same for docker).
Target (issue 23): tracing on adds <= 0.3 ms p50 per gateway call.
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

from bench._stats import line  # noqa: E402


async def gateway_overhead(calls: int, ws: Path) -> tuple[float, float]:
    from bastion.app import build_app
    from bastion.config.model import Config
    from bastion.memory.base import EphemeralMemory
    from bastion.messages import ToolCall
    from bastion.testing import ScriptedModel
    from bastion.tools.base import ToolContext

    (ws / "small.txt").write_text("hello\n" * 10)
    app = build_app(Config.model_validate({"agent": {"workspace": str(ws)}}),
                    model=ScriptedModel(), memory=EphemeralMemory())
    tool = app.registry.get("read_file")
    ctx = ToolContext(workspace=ws)
    args = {"path": "small.txt"}
    direct, through = [], []
    for _ in range(200):  # warm-up both paths
        await tool(args, ctx)
        await app.gateway.execute(ToolCall("read_file", args))
    for _ in range(calls):
        t0 = time.perf_counter()
        await tool(args, ctx)
        t1 = time.perf_counter()
        res = await app.gateway.execute(ToolCall("read_file", args))
        t2 = time.perf_counter()
        assert res.ok, res.text
        direct.append((t1 - t0) * 1000)
        through.append((t2 - t1) * 1000)
    # the same call through a gateway with only policy + approval (no audit write, no scan)
    from bastion.security.approval import DenyApprover
    from bastion.security.gateway import Gateway
    from bastion.security.policy import ApprovalStage, PolicyStage
    from bastion.tools.base import Risk

    bare = Gateway(app.registry, app.gateway.environment,
                   [PolicyStage({}), ApprovalStage(DenyApprover(), Risk.HIGH, 5)])
    lean = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await bare.execute(ToolCall("read_file", args))
        lean.append((time.perf_counter() - t0) * 1000)
    await app.aclose()
    print(line("direct tool call", direct))
    print(line("gateway, policy+approval only", lean))
    print(line("through the gateway", through))
    overhead = statistics.median(through) - statistics.median(direct)
    print(f"{'gateway overhead (p50 difference)':<34} {overhead:8.3f} ms   "
          f"ratio gateway/direct {statistics.median(through) / statistics.median(direct):6.1f}x")
    return overhead, statistics.median(through)


async def tracing_overhead(calls: int, ws: Path) -> float:
    """The same gateway call with traces off and on, alternating; returns the p50 difference."""
    from _tracing import switchable_tracing

    from bastion.app import build_app
    from bastion.config.model import Config
    from bastion.memory.base import EphemeralMemory
    from bastion.messages import ToolCall
    from bastion.testing import ScriptedModel

    (ws / "small.txt").write_text("hello\n" * 10)
    app = build_app(Config.model_validate({"agent": {"workspace": str(ws)}}),
                    model=ScriptedModel(), memory=EphemeralMemory())
    call = ToolCall("read_file", {"path": "small.txt"})
    times: dict[bool, list[float]] = {False: [], True: []}
    with switchable_tracing() as switch:
        for i in range(200 + calls):  # 200 warm-up rounds, then alternate which goes first
            for on in ((False, True) if i % 2 else (True, False)):
                switch(on)
                t0 = time.perf_counter()
                res = await app.gateway.execute(call)
                ms = (time.perf_counter() - t0) * 1000
                assert res.ok, res.text
                if i >= 200:
                    times[on].append(ms)
    await app.aclose()
    print(line("gateway, tracing off", times[False]))
    print(line("gateway, tracing on (OTLP)", times[True]))
    extra = statistics.median(times[True]) - statistics.median(times[False])
    print(f"{'tracing cost per call (p50 diff)':<34} {extra:8.3f} ms   ratio on/off "
          f"{statistics.median(times[True]) / statistics.median(times[False]):6.3f}x "
          "(target <= 0.3 ms)")
    return extra


async def sandboxed(n: int, ws: Path, gap: float, only: list[str]) -> None:
    from bastion.config.model import LimitsConfig
    from bastion.security.sandbox.factory import BACKENDS, backend_class, create_sandbox

    for kind in BACKENDS:
        if only and kind not in only:
            continue
        try:
            problem = backend_class(kind).available()
        except Exception as exc:  # a backend module missing in this build
            problem = str(exc)
        if problem:
            print(f"{kind:<12} skipped: {problem}")
            continue
        # cold: a backend without a pool (a pooled one would serve some "cold" calls warm once
        # its background refill is done)
        cold_box, why = create_sandbox(kind, ws, LimitsConfig())
        assert cold_box is not None, why
        box, why = create_sandbox(kind, ws, LimitsConfig(), warm=2)
        assert box is not None, why
        runs = n if kind == "bubblewrap" else max(5, n // 4)
        cold = []
        for _ in range(runs):
            t0 = time.perf_counter()
            res = await cold_box.run(["/bin/true"])
            cold.append((time.perf_counter() - t0) * 1000)
            assert res.exit_code == 0, res.stderr
        print(line(f"{kind} cold", cold))
        pool = getattr(box, "warm_pool", None)
        if pool is None:
            print(f"{kind:<12} warm: no pool for this backend")
            continue
        await pool.fill()
        warm = []
        for _ in range(runs):
            t0 = time.perf_counter()
            res = await box.run(["/bin/true"])
            warm.append((time.perf_counter() - t0) * 1000)
            assert res.exit_code == 0, res.stderr
            drain = getattr(box, "drain", None)
            if drain is not None:
                await drain()  # podman/docker: the used container is removed off the call's path
            await pool.fill()  # refill outside the timed part, as the idle pool does
            await asyncio.sleep(gap)  # the pause between two calls of an agent (model time)
        print(line(f"{kind} warm pool", warm))
        ratio = statistics.median(warm) / statistics.median(cold)
        print(f"{kind:<12} warm/cold p50 ratio {ratio:.2f}")
        await pool.close()


def classification(calls: int, ws: Path) -> None:
    from bastion.security.hitl.risk import DESTRUCTIVE, RiskClassifier, builtin_rules
    from bastion.tools.builtin.exec import python, shell

    c = RiskClassifier(builtin_rules(), ws)
    cases = [(shell, {"command": "ls -la"}),
             (shell, {"command": "grep -rn TODO src | sort | head -20 > todo.txt"}),
             (shell, {"command": "for f in *.py; do python3 -m py_compile $f; done"}),
             (python, {"code": "import json\nfor i in range(3):\n    print(json.dumps(i))"})]
    semantic, regex = [], []
    for _ in range(calls // len(cases)):
        for tool, args in cases:
            t0 = time.perf_counter()
            c.classify(tool, args, "bench")
            t1 = time.perf_counter()
            any(DESTRUCTIVE.search(v) for v in args.values())
            t2 = time.perf_counter()
            semantic.append((t1 - t0) * 1000)
            regex.append((t2 - t1) * 1000)
    print(line("classify shell/python (parsed)", semantic))
    print(line("destructive regex alone (old)", regex))
    print(f"{'classification cost (p50 difference)':<34} "
          f"{statistics.median(semantic) - statistics.median(regex):8.3f} ms   "
          f"ratio parsed/regex {statistics.median(semantic) / statistics.median(regex):6.1f}x")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sandboxed", type=int, default=40)
    parser.add_argument("--backends", default="", help="comma-separated (default: all)")
    parser.add_argument("--gap", type=float, default=0.1,
                        help="seconds between two warm calls (an agent waits for its model)")
    parser.add_argument("--tracing-only", action="store_true",
                        help="only the traces on/off comparison")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["BASTION_HOME"] = home
        ws = Path(home) / "ws"
        ws.mkdir()
        print(f"# bench/gateway.py on {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if opts.tracing_only:
            await tracing_overhead(opts.calls, ws)
            return
        await gateway_overhead(opts.calls, ws)
        await tracing_overhead(opts.calls, ws)
        classification(opts.calls, ws)
        if opts.sandboxed > 0:
            print(f"# warm calls {opts.gap:g} s apart (after the refill)")
            await sandboxed(opts.sandboxed, ws, opts.gap,
                            [b for b in opts.backends.split(",") if b])
        print(f"# load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
