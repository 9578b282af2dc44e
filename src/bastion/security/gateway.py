"""The gateway: the only way a tool runs.

A call passes a pipeline of stages (audit, policy, approval, ... , invoke). Each stage is
``async def stage(req, next) -> ToolResult``; it may refuse (return a denied result), change
the request, or wrap ``next``. Higher layers add stages (trust, anomaly) when the app is
assembled; this module imports nothing above ``tools``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion import telemetry
from bastion.errors import BastionError, ConfigError, PolicyDenied, ToolArgumentsError
from bastion.messages import ToolCall
from bastion.security.approval import CallRef, tool_call
from bastion.telemetry.metrics import METRICS
from bastion.tools.base import (
    BrowserAccess,
    HttpFetcher,
    ProcessRunner,
    Risk,
    Tool,
    ToolContext,
)
from bastion.tools.registry import ToolRegistry


@dataclass(slots=True, frozen=True)
class ApprovalRecord:
    """Who decided a call that needed approval, and why (audited as ``detail.approval``)."""

    approved: bool
    by: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the audit form: ``{"approved", "by", "reason"}``."""
        return {"approved": self.approved, "by": self.by, "reason": self.reason}


@dataclass(slots=True)
class CallRequest:
    """One tool call on its way through the gateway.

    The approval state is typed, set only by the stages that decide it: ``needs_approval``
    (policy ``ask``, a tainted session, intel), ``policy_allow`` (policy ``allow``, or trust),
    ``risk_threshold`` (the session's, from the risk stage) and ``approval`` (the decision).
    :meth:`approval_needed` is the one test of whether a human must decide. ``annotations``
    carries audit extras only (``intel``, ``scan``, ``secret_refs``, ...): nothing in it can
    loosen approval.
    """

    call: ToolCall
    tool: Tool
    session_id: str | None = None
    actor: str = "agent"
    risk: Risk = Risk.LOW
    reasons: list[str] = field(default_factory=list)
    approved_by: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    needs_approval: bool = False
    policy_allow: bool = False
    risk_threshold: Risk | None = None
    approval: ApprovalRecord | None = None
    taint: str | None = None  # why the session is tainted: no "always allow" rule is offered

    def threshold(self, default: Risk) -> Risk:
        """Return the approval threshold for this call: the session's if set, else ``default``."""
        return default if self.risk_threshold is None else self.risk_threshold

    def approval_needed(self, default: Risk) -> bool:
        """Whether a human must decide: demanded by a stage, or risk at the threshold.

        Risk alone does not ask for a tool policy allows (``policy_allow``); a demand
        (``needs_approval``) always asks. ``default`` is the gateway's threshold.
        """
        return self.needs_approval or (
            self.risk >= self.threshold(default) and not self.policy_allow)


@dataclass(slots=True)
class ToolResult:
    """What came of a call: text for the model plus what the client and audit need."""

    call_id: str
    name: str
    ok: bool
    text: str
    decision: str = "allowed"  # allowed | denied | error
    error: str | None = None
    duration_ms: float = 0.0
    data: Any = None

    def for_model(self) -> str:
        """Return the text the model sees (errors are structured so it can recover)."""
        if self.ok:
            return self.text
        return f'{{"error": {_json_str(self.error or self.text)}, "decision": "{self.decision}"}}'


def _json_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


Next = Callable[[CallRequest], Awaitable[ToolResult]]
Stage = Callable[[CallRequest, Next], Awaitable[ToolResult]]


def denied(req: CallRequest, reason: str) -> ToolResult:
    """Build the result of a refused call."""
    return ToolResult(req.call.id, req.call.name, False, reason, decision="denied", error=reason)


@dataclass(slots=True)
class Environment:
    """What the invoke stage hands tools: workspace, sandbox, egress-bound HTTP."""

    workspace: Path
    sandbox: ProcessRunner | None = None
    sandbox_problem: str | None = None  # why the sandbox is unavailable, if it is
    http: HttpFetcher | None = None
    runners: dict[str, ProcessRunner] = field(default_factory=dict)  # per-tool (egress) sandboxes
    browser: BrowserAccess | None = None  # browser sessions (security.browser), when enabled


class Gateway:
    """Runs tool calls through the stage pipeline, then invokes the tool."""

    def __init__(
        self,
        registry: ToolRegistry,
        environment: Environment,
        stages: Sequence[Stage] = (),
    ) -> None:
        self.registry = registry
        self.environment = environment
        self.stages: list[Stage] = list(stages)

    def add_stage(self, stage: Stage, *, before: type | None = None) -> None:
        """Add a stage just before the first stage of type ``before``, else innermost.

        Raises :class:`~bastion.errors.ConfigError` when ``before`` is given and no stage of
        that type is in the pipeline: a stage meant to run before approval must never end up
        after it (or after the output scan) because the anchor was missing.
        """
        if before is None:
            self.stages.append(stage)
            return
        self.stages.insert(stage_index(self.stages, before), stage)

    async def execute(
        self,
        call: ToolCall,
        *,
        session_id: str | None = None,
        actor: str = "agent",
        context: Mapping[str, Any] | None = None,
        tool: Tool | None = None,
    ) -> ToolResult:
        """Run one call through every stage; never raises for tool or policy failures.

        ``tool`` runs a tool that is not in the registry (the model is never offered it)
        through the same stages, e.g. the MCP server's resource reads.
        """
        if tool is None:
            try:
                tool = self.registry.get(call.name)
            except BastionError as exc:
                return ToolResult(call.id, call.name, False, exc.user_text(), "error",
                                  exc.user_text())
        req = CallRequest(call, tool, session_id, actor, tool.risk)
        if context:
            req.annotations.update(context)
        if telemetry.enabled():
            result = await _traced_call(self.stages, self._invoke, req)
        else:
            chain: Next = self._invoke
            for stage in reversed(self.stages):
                chain = _bind(stage, chain)
            result = await chain(req)
        METRICS.tool_calls.inc(tool=call.name, decision=result.decision)
        METRICS.tool_duration.observe(result.duration_ms / 1000, tool=call.name)
        return result

    async def _invoke(self, req: CallRequest) -> ToolResult:
        env = self.environment
        start = time.perf_counter()
        runner = env.runners.get(req.tool.name, env.sandbox)
        if req.tool.sandboxed and runner is None:
            reason = env.sandbox_problem or "no sandbox is available"
            return denied(req, f"{req.tool.name} refused: {reason}")
        ctx = ToolContext(
            workspace=env.workspace,
            runner=runner if req.tool.sandboxed else None,
            http=env.http if getattr(req.tool, "egress", True) else None,  # declared egress only
            secrets=dict(req.secrets),
            session_id=req.session_id,
            browser=env.browser,
        )
        # what the tool's sandbox does (e.g. a request its egress proxy holds for approval)
        # is traced back to this call and session
        token = tool_call.set(CallRef(req.call.name, req.call.id, req.session_id))
        try:
            out = await req.tool(req.call.arguments, ctx)
        except (ToolArgumentsError, PolicyDenied) as exc:
            ms = (time.perf_counter() - start) * 1000
            decision = "denied" if isinstance(exc, PolicyDenied) else "error"
            return ToolResult(req.call.id, req.call.name, False, exc.user_text(), decision,
                              exc.user_text(), ms)
        except BastionError as exc:
            ms = (time.perf_counter() - start) * 1000
            return ToolResult(req.call.id, req.call.name, False, exc.user_text(), "error",
                              exc.user_text(), ms)
        except Exception as exc:  # a tool bug must not kill the agent; the model sees it
            ms = (time.perf_counter() - start) * 1000
            text = f"{type(exc).__name__}: {exc}"
            return ToolResult(req.call.id, req.call.name, False, text, "error", text, ms)
        finally:
            tool_call.reset(token)
        ms = (time.perf_counter() - start) * 1000
        return ToolResult(
            req.call.id, req.call.name, not out.is_error, out.text,
            "allowed", out.text if out.is_error else None, ms, out.data,
        )


def stage_index(stages: Sequence[Stage], kind: type) -> int:
    """Return the position of the first stage of type ``kind``; raise if there is none."""
    for i, stage in enumerate(stages):
        if isinstance(stage, kind):
            return i
    raise ConfigError(
        f"the gateway has no {kind.__name__}, so a stage meant to run before it has no place",
        fix=f"assemble the security stages (bastion.security.setup) before adding stages "
            f"relative to {kind.__name__}")


def _bind(stage: Stage, nxt: Next) -> Next:
    async def run(req: CallRequest) -> ToolResult:
        return await stage(req, nxt)

    return run


def stage_name(stage: object) -> str:
    """Return a stage's span name: ``span_name``, else its name without ``Stage``, snaked."""
    name = getattr(stage, "span_name", None) or getattr(stage, "__name__", None)
    base = (name if isinstance(name, str) else type(stage).__name__).removesuffix("Stage")
    return "".join("_" + c.lower() if c.isupper() else c for c in base).lstrip("_") or "stage"


async def _traced_call(stages: Sequence[Stage], invoke: Next, req: CallRequest) -> ToolResult:
    """Run the pipeline under a GenAI ``execute_tool`` span with one child span per stage.

    A stage's span covers its own work up to the moment it hands the call on (or, with
    ``span_after``, its work after the inner stages returned), so the stages are siblings;
    ``bastion.gateway.decision`` is ``pass`` for a stage that handed the call on, else the
    decision of the result it returned. Only clock reads happen here: the stage spans are
    built when the call's span is exported. Each stage's span id is drawn now and current
    while that span's time runs, so what a stage starts (the approval wait, a sandbox start
    in the tool run) is a child of its stage.
    """
    call = req.call
    parent = telemetry.start(f"execute_tool {call.name}", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id, "gen_ai.tool.type": "function",
        "bastion.tool.risk": req.risk.name.lower(),
    })
    if telemetry.recording():
        parent.content("gen_ai.tool.call.arguments",
                       json.dumps(call.arguments, ensure_ascii=False, default=str))
    records: list[telemetry.Record] = []
    chain: Next = _timed(None, invoke, records, "tool_run", parent)
    for stage in reversed(stages):
        chain = _timed(stage, chain, records, stage_name(stage), parent)
    try:
        with telemetry.activate(parent):  # approval wait, sandbox start: the call's children
            result = await chain(req)
        parent.set("bastion.gateway.decision", result.decision)
        if not result.ok:
            parent.set("error.type", result.decision)
        if telemetry.recording():
            parent.content("gen_ai.tool.call.result", result.text)
    except BaseException as exc:
        parent.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        parent.children(records)
        parent.end()
    return result


def _timed(stage: Stage | None, nxt: Next, records: list[telemetry.Record],
           name: str, parent: telemetry.Span) -> Next:
    """Wrap one stage (``None``: the tool itself), recording its span's times and decision.

    The stage's scope is current exactly while its span's time runs: up to handing the call
    on, or (``span_after``) from the inner stages' return to its own.
    """
    after = bool(getattr(stage, "span_after", False))
    clock = time.time_ns

    async def run(req: CallRequest) -> ToolResult:
        scope = telemetry.child_scope(parent)
        t0 = clock()
        handed_on = False
        if not after:
            scope.enter()

        async def onward(r: CallRequest) -> ToolResult:
            nonlocal handed_on, t0
            handed_on = True
            if not after:
                records.append((name, t0, clock(), "pass", scope.span_id))
                scope.leave()
            res = await nxt(r)
            t0 = clock()
            if after:
                scope.enter()
            return res

        try:
            result = await (nxt(req) if stage is None else stage(req, onward))
        finally:
            if after == handed_on:  # entered and not yet left
                scope.leave()
        if after or not handed_on:
            records.append((name, t0, clock(), result.decision, scope.span_id))
        return result

    return run
