"""Code execution tools: ``shell``, ``python`` and ``node`` (when Node.js is installed).

Both are ``sandboxed``: they run only through ``ctx.runner``, which the gateway sets to the
configured sandbox (workspace mounted at ``/workspace``, no network unless policy grants it,
resource limits). Without a runner they refuse; there is no fallback to the host.
"""

from __future__ import annotations

from bastion.errors import ToolError
from bastion.tools.base import ProcessResult, ProcessRunner, Risk, ToolContext, ToolOutput, tool

_MAX_TIMEOUT_S = 600.0


def _runner(ctx: ToolContext, name: str) -> ProcessRunner:
    if ctx.runner is None:
        raise ToolError(
            f"{name} runs only inside a sandbox and none was provided",
            fix="install bubblewrap (apt-get install bubblewrap) and set security.sandbox",
        )
    return ctx.runner


def _timeout(timeout_s: float | None) -> float | None:
    if timeout_s is None:
        return None
    if not 0 < timeout_s <= _MAX_TIMEOUT_S:
        raise ToolError(f"timeout_s must be between 0 and {_MAX_TIMEOUT_S:.0f}")
    return timeout_s


def format_result(res: ProcessResult) -> ToolOutput:
    """Render a process result for the model: exit code, stdout, stderr, why it was killed."""
    parts = [f"exit_code: {res.exit_code}"]
    if res.killed_reason:
        parts.append(f"killed: {res.killed_reason}")
    parts.append("stdout:\n" + (res.stdout.rstrip("\n") or "(empty)"))
    if res.stderr.strip():
        parts.append("stderr:\n" + res.stderr.rstrip("\n"))
    data = {
        "exit_code": res.exit_code,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "timed_out": res.timed_out,
        "killed_reason": res.killed_reason,
        "duration_ms": round(res.duration_ms, 1),
    }
    return ToolOutput("\n".join(parts), data=data, is_error=res.killed_reason is not None)


@tool(name="shell", risk=Risk.MEDIUM, sandboxed=True, egress=False)
async def shell(
    ctx: ToolContext, command: str, timeout_s: float | None = None
) -> ToolOutput:
    """Run a shell command in the sandbox; the working directory is the workspace.

    Args:
        ctx: The call's context from the gateway (its runner is the sandbox).
        command: The command line, run by /bin/sh -c (no network, workspace at /workspace).
        timeout_s: Kill the command after this many seconds (default: the sandbox limit).

    """
    runner = _runner(ctx, "shell")
    # Secrets the gateway injected travel in the exec environment (never argv).
    res = await runner.run(["/bin/sh", "-c", command], timeout_s=_timeout(timeout_s),
                           env=dict(ctx.secrets) or None)
    return format_result(res)


@tool(name="python", risk=Risk.MEDIUM, sandboxed=True, egress=False)
async def python(
    ctx: ToolContext, code: str, timeout_s: float | None = None
) -> ToolOutput:
    """Run a Python 3 program in the sandbox and return what it prints.

    Args:
        ctx: The call's context from the gateway (its runner is the sandbox).
        code: The program; use print() to show results. The workspace is the working directory.
        timeout_s: Kill the program after this many seconds (default: the sandbox limit).

    """
    res = await _runner(ctx, "python").run(
        ["python3", "-I", "-"], stdin=code.encode("utf-8"), timeout_s=_timeout(timeout_s),
        env=dict(ctx.secrets) or None,
    )
    return format_result(res)


@tool(name="node", risk=Risk.MEDIUM, sandboxed=True, egress=False)
async def node(
    ctx: ToolContext, code: str, timeout_s: float | None = None
) -> ToolOutput:
    """Run a JavaScript (Node.js) program in the sandbox and return what it prints.

    Args:
        ctx: The call's context from the gateway (its runner is the sandbox).
        code: The program; use console.log() to show results. The workspace is the working
            directory.
        timeout_s: Kill the program after this many seconds (default: the sandbox limit).

    """
    # --jitless: V8's JIT reserves a large code range up front, which the sandbox's address-
    # space limit refuses ("Failed to reserve virtual memory for CodeRange"); the interpreter
    # fits. --no-expose-wasm: WebAssembly needs the JIT (and would warn on every run).
    res = await _runner(ctx, "node").run(
        ["node", "--jitless", "--no-expose-wasm", "-"], stdin=code.encode("utf-8"),
        timeout_s=_timeout(timeout_s), env=dict(ctx.secrets) or None,
    )
    return format_result(res)
