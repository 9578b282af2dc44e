"""The one composition root.

Builds model, tools, gateway, memory and agent the same way for the CLI, the API and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.agent.loop import Agent, AgentOptions
from bastion.config import paths
from bastion.config.loader import load
from bastion.config.model import Config
from bastion.llm.base import Model
from bastion.memory.base import ConversationMemory, EphemeralMemory
from bastion.messages import ChatSettings
from bastion.security.approval import Approver
from bastion.security.audit import AuditLog
from bastion.security.gateway import Environment, Gateway
from bastion.security.hitl.manager import ApprovalManager
from bastion.security.model_guard import GuardedModel
from bastion.security.policy import ApprovalStage, PolicyStage
from bastion.security.redact import Redactor
from bastion.security.scanner import SecretScanner
from bastion.security.secrets.resolver import SecretResolver
from bastion.tools.registry import ToolRegistry, load_entry_point_tools

if TYPE_CHECKING:
    from bastion.intelligence.setup import Intelligence
    from bastion.security.browser.manager import BrowserManager
    from bastion.security.setup import Security
    from bastion.security.undo import UndoStore
    from bastion.tools.builtin.web import DirectFetcher as DirectFetcherT


@dataclass
class App:
    """Everything one bastion process needs, assembled once."""

    config: Config
    model: Model
    registry: ToolRegistry
    gateway: Gateway
    audit: AuditLog
    memory: ConversationMemory
    approvals: ApprovalStage
    redactor: Redactor = field(default_factory=Redactor)
    hitl: ApprovalManager | None = None  # pending approvals, session rules and thresholds
    secrets: SecretResolver | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)  # MCP connections ...
    browser: BrowserManager | None = None  # browser sessions lent to the browser_* tools
    intel: Intelligence | None = None  # anomaly/threat + trust stages, alerts, SIEM
    undo: UndoStore | None = None  # workspace snapshots per mutating call (bastion undo)
    provenance: dict[str, Any] = field(default_factory=dict)  # which weights answer (audited)

    def agent(self) -> Agent:
        """Return an agent wired to this app's model, gateway and memory."""
        cfg = self.config
        options = AgentOptions(
            system_prompt=cfg.agent.system_prompt,
            max_steps=cfg.agent.max_steps,
            settings=ChatSettings(
                temperature=cfg.model.temperature, max_tokens=cfg.model.max_tokens
            ),
        )
        model: Model = self.model
        if cfg.secrets.scan_model_messages:  # every model-bound message passes the scanner
            model = GuardedModel(model, self.redactor, self.audit,
                                 provenance=self.provenance or None)
        return Agent(model, self.gateway, options, self.memory)

    def set_approver(self, approver: Approver | None) -> None:
        """Swap who answers approval requests besides the API queue (CLI prompt, deny).

        ``None`` leaves pending requests to the API / web page until their timeout.
        """
        if self.hitl is not None:
            self.hitl.delegate = approver
        elif approver is not None:
            self.approvals.approver = approver

    async def __aenter__(self) -> App:
        """Use the app as ``async with build_app(...) as app``; it is closed on exit."""
        return self

    async def __aexit__(self, *_: object) -> None:
        """Close the app (see :meth:`aclose`)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Release the model and close stores."""
        if self.browser is not None:  # every browser session and chromium itself
            await self.browser.aclose()
        for close in reversed(self.closers):
            close()
        self.closers.clear()
        await self.model.aclose()
        self.audit.close()
        from bastion import telemetry

        telemetry.shutdown(owner=self.redactor)  # flush spans, if this app switched them on
        await self.memory.aclose()


def workspace_dir(config: Config) -> Path:
    """Return (and create) the tools' workspace root."""
    if config.agent.workspace is None:
        paths.ensure_home()
        return paths.private_dir(paths.home() / "workspace")
    ws = Path(config.agent.workspace).expanduser().resolve()
    ws.mkdir(mode=0o700, parents=True, exist_ok=True)  # a chosen folder keeps its mode
    return ws


def build_registry(config: Config) -> ToolRegistry:
    """Return the registry with built-ins and plugin tools (entry points)."""
    registry = ToolRegistry()
    load_entry_point_tools(registry)
    if not len(registry):  # running from a source tree without installed metadata
        from bastion.tools.builtin import builtin_toolsets

        for toolset in builtin_toolsets():
            registry.add_toolset(toolset)
    return registry


def build_memory(config: Config, model: Model | None = None) -> ConversationMemory:
    """Return the persistent memory (SQLite + semantic index) for the agent.

    With ``memory.enabled: false`` it is an in-process memory and nothing is written.
    """
    if not config.memory.enabled:
        return EphemeralMemory()
    from bastion.memory.persistent import PersistentMemory

    return PersistentMemory(
        config.memory, model=model, n_ctx=config.model.n_ctx, max_tokens=config.model.max_tokens
    )


def _fetcher(config: Config) -> DirectFetcherT:
    """web_fetch's HTTP client: SSRF guard, plus its egress allowlist when one is declared."""
    from bastion.tools.builtin.web import DirectFetcher

    sec = config.security
    caps, rule = sec.web_fetch, sec.egress.get("web_fetch")
    return DirectFetcher(
        allow_private=sec.allow_private_network,
        allow_metadata=sec.allow_metadata,
        allowed_networks=rule.cidrs if rule else (),
        allow_domains=rule.domains if rule else None,
        allow_ports=rule.ports if rule else None,
        max_chars=caps.max_chars, max_bytes=caps.max_bytes, total_timeout_s=caps.timeout_s,
    )


def build_app(
    config: Config | None = None,
    *,
    model: Model | None = None,
    approver: Approver | None = None,
    memory: ConversationMemory | None = None,
    registry: ToolRegistry | None = None,
) -> App:
    """Assemble the app from config; any part can be passed in (tests pass fakes).

    Each part that starts something (warm pool, MCP servers, egress namespaces, the audit
    writer, vault renewal, intel followers, the undo store) goes onto one exit stack as it
    starts. When a later step raises (a wrong ``model.path``, say), the stack unwinds and
    nothing is left running; on success the app owns it (:meth:`App.aclose`).
    """
    config = config or load()
    with ExitStack() as stack:
        app = _assemble(stack, config, model, approver, memory, registry)
        app.closers.append(stack.pop_all().close)
        return app


def _on_failure(stack: ExitStack, close: Callable[[], object]) -> None:
    """Run ``close`` only if the assembly fails; on success :meth:`App.aclose` calls it."""
    def unwind(exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is not None:
            close()
        return False

    stack.push(unwind)


def _assemble(stack: ExitStack, config: Config, model: Model | None,
              approver: Approver | None, memory: ConversationMemory | None,
              registry: ToolRegistry | None) -> App:
    from bastion.crypto.pinning import configure as configure_pins
    from bastion.security.setup import build_security

    configure_pins(config.crypto.tls_pins)  # outgoing HTTPS to pinned hosts checks their key
    workspace = workspace_dir(config)
    env = _wire_sandbox(stack, config, workspace)
    redactor = _wire_redaction(stack, config)
    security = build_security(
        config, workspace, redactor, approver=approver, policy=PolicyStage(config.security.tools)
    )
    _on_failure(stack, security.audit.close)  # the audit writer thread
    stack.callback(security.close)  # vault renewal
    registry = registry or build_registry(config)
    _wire_mcp(stack, config, registry, security.audit, security, redactor)
    _wire_egress(stack, config, workspace, registry, env, security, redactor)
    gateway = Gateway(registry, env, security.stages)
    browser = _wire_browser(config, workspace, registry, env, gateway, security, redactor)
    intel = _wire_intel(stack, config, gateway, security.audit)
    undo = _wire_undo(stack, config, workspace, gateway)
    model, window_model, origin = _wire_model(config, model, registry, security, redactor)
    return App(
        config=config,
        model=model,
        registry=registry,
        gateway=gateway,
        audit=security.audit,
        memory=memory or build_memory(config, window_model),
        approvals=security.approvals,
        redactor=redactor,
        hitl=security.manager,
        browser=browser,
        secrets=security.resolver,
        intel=intel,
        undo=undo,
        provenance=origin,
    )


def _wire_sandbox(stack: ExitStack, config: Config, workspace: Path) -> Environment:
    """Create the default sandbox (its warm pool starts here) and the tools' environment."""
    from bastion.security.sandbox.factory import create_sandbox

    sec = config.security
    sandbox, problem = create_sandbox(sec.sandbox, workspace, sec.limits, warm=sec.warm_pool)
    if sandbox is not None:  # its warm pool and whatever else the backend holds
        stack.callback(sandbox.close)
    return Environment(workspace=workspace, sandbox=sandbox, sandbox_problem=problem,
                       http=_fetcher(config))


def _wire_redaction(stack: ExitStack, config: Config) -> Redactor:
    """Return the redactor every log line, audit record and exported span passes."""
    from bastion import telemetry
    from bastion.security.redact import install_log_redaction

    redactor = Redactor(
        [s.get_secret_value() for s in (config.api.token, config.model.api_key) if s is not None],
        scanner=SecretScanner(entropy=config.secrets.scan_entropy),
    )
    install_log_redaction(redactor)  # no secret reaches a log line, whoever logs it
    tel = config.telemetry  # traces: off unless an OTLP endpoint is set (content redacted)
    telemetry.configure(tel.otlp_endpoint, record_content=tel.record_content,
                        redact=redactor.text, owner=redactor)
    _on_failure(stack, lambda: telemetry.shutdown(owner=redactor))
    return redactor


def _wire_mcp(stack: ExitStack, config: Config, registry: ToolRegistry, audit: AuditLog,
              security: Security, redactor: Redactor) -> None:
    """Mount the external MCP servers: prefixed toolsets, stdio ones sandboxed."""
    if config.mcp_servers:
        from bastion.mcp.mount import mount_servers
        from bastion.privacy.detect import egress_inspector
        from bastion.security.egress.setup import Inspection

        inspection = Inspection(security.resolver.book, redactor.scanner, egress_inspector,
                                security.manager, config.security.approval_timeout_s)
        stack.callback(mount_servers(config, registry, audit=audit, secrets=security.resolver,
                                     inspection=inspection).close)


def _wire_egress(stack: ExitStack, config: Config, workspace: Path, registry: ToolRegistry,
                 env: Environment, security: Security, redactor: Redactor) -> None:
    """Start per-tool sandbox backends and egress namespaces (wire-level inspection)."""
    sec = config.security
    if not (sec.egress or sec.tool_sandboxes):
        return
    from bastion.privacy.detect import egress_inspector
    from bastion.security.egress.setup import Inspection, tool_runners

    sandboxed = {t.name for t in registry if t.sandboxed}  # web_fetch filters in-process
    inspection = Inspection(security.resolver.book, redactor.scanner, egress_inspector,
                            security.manager, config.security.approval_timeout_s)
    runners, egress_closers, _problems = tool_runners(config, workspace, security.audit,
                                                      sandboxed, inspection)
    for close in egress_closers:
        stack.callback(close)
    env.runners.update(runners)


def _wire_browser(config: Config, workspace: Path, registry: ToolRegistry, env: Environment,
                  gateway: Gateway, security: Security, redactor: Redactor
                  ) -> BrowserManager | None:
    """Lend browser sessions to the browser tools (chromium starts on first use), or drop them."""
    from bastion.tools.builtin.browser import BROWSER_TOOLSET

    if not config.browser.enabled:
        registry.remove_toolset(BROWSER_TOOLSET)
        return None
    if not registry.toolset(BROWSER_TOOLSET):
        return None
    from bastion.security.browser.setup import attach as attach_browser
    from bastion.security.browser.setup import build_browser

    browser = build_browser(config, workspace, resolver=security.resolver, audit=security.audit)
    env.browser = browser
    attach_browser(browser, gateway, security.classifier, redactor,
                   rules=config.hitl.builtin_rules)
    return browser


def _wire_intel(stack: ExitStack, config: Config, gateway: Gateway, audit: AuditLog
                ) -> Intelligence | None:
    """Add threat/anomaly and trust stages just before approval; start alerts and SIEM."""
    if not config.intelligence.enabled:
        return None
    from bastion.intelligence.setup import attach
    from bastion.intelligence.setup import build as build_intel

    intel = build_intel(config, audit)
    stack.callback(intel.close)
    attach(intel, gateway)
    return intel


def _wire_undo(stack: ExitStack, config: Config, workspace: Path, gateway: Gateway
               ) -> UndoStore | None:
    """Add the undo stage innermost: only calls that really run are snapshotted."""
    if not config.undo.enabled:
        return None
    from bastion.security.undo import UndoStage, open_store

    undo = stack.enter_context(closing(open_store(config, workspace)))
    gateway.add_stage(UndoStage(undo))
    return undo


def _wire_model(config: Config, model: Model | None, registry: ToolRegistry,
                security: Security, redactor: Redactor
                ) -> tuple[Model, Model, dict[str, Any]]:
    """Build the model (unless passed in), behind the privacy router when it is on.

    Returns the model, the model memory counts context in, and its provenance.
    """
    from bastion.models import create_model

    privacy = config.privacy
    origin: dict[str, Any] = {}
    if model is None and not (privacy.enabled and privacy.local is not None):
        from bastion.llm.factory import provenance

        model = create_model(config)
        origin = provenance(config)
    if not privacy.enabled:
        assert model is not None
        return model, model, origin
    from bastion.privacy.setup import build_privacy_router

    def egress(name: str) -> bool:  # unknown names count as egress: nothing restored
        return name not in registry or security.egress_capable(registry.get(name))

    router = build_privacy_router(config, model, audit=security.audit,
                                  scanner=redactor.scanner, egress=egress, build=create_model)
    return router, router.local, origin
