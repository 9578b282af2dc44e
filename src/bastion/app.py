"""The one composition root.

Builds model, tools, gateway, memory and agent the same way for the CLI, the API and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
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
        close_memory = getattr(self.memory, "aclose", None)
        if close_memory is not None:
            await close_memory()


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
        from bastion.tools.builtin import builtin_tools

        for t in builtin_tools():
            registry.add(t)
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
    """Assemble the app from config; any part can be passed in (tests pass fakes)."""
    from bastion.models import create_model
    from bastion.security.sandbox.factory import create_sandbox

    config = config or load()
    from bastion.crypto.pinning import configure as configure_pins

    configure_pins(config.crypto.tls_pins)  # outgoing HTTPS to pinned hosts checks their key
    sec = config.security
    workspace = workspace_dir(config)
    sandbox, problem = create_sandbox(sec.sandbox, workspace, sec.limits, warm=sec.warm_pool)
    env = Environment(
        workspace=workspace,
        sandbox=sandbox,
        sandbox_problem=problem,
        http=_fetcher(config),
    )
    redactor = Redactor(
        [s.get_secret_value() for s in (config.api.token, config.model.api_key) if s is not None],
        scanner=SecretScanner(entropy=config.secrets.scan_entropy),
    )
    from bastion.security.redact import install_log_redaction
    from bastion.security.setup import build_security

    install_log_redaction(redactor)  # no secret reaches a log line, whoever logs it
    from bastion import telemetry

    tel = config.telemetry  # traces: off unless an OTLP endpoint is set (content redacted)
    telemetry.configure(tel.otlp_endpoint, record_content=tel.record_content,
                        redact=redactor.text, owner=redactor)

    security = build_security(
        config, workspace, redactor, approver=approver, policy=PolicyStage(sec.tools)
    )
    audit, approvals = security.audit, security.approvals
    registry = registry or build_registry(config)
    closers: list[Callable[[], None]] = []
    pool = getattr(sandbox, "warm_pool", None)
    if pool is not None:
        closers.append(pool.shutdown)
    if config.mcp_servers:  # external MCP servers: prefixed toolsets, stdio ones sandboxed
        from bastion.mcp.mount import mount_servers

        closers.append(mount_servers(config, registry, audit=audit).close)
    if sec.egress or sec.tool_sandboxes:  # per-tool backend and/or egress namespace
        from bastion.privacy.detect import egress_inspector
        from bastion.security.egress.setup import Inspection, tool_runners

        sandboxed = {t.name for t in registry if t.sandboxed}  # web_fetch filters in-process
        inspection = Inspection(security.resolver.book, redactor.scanner, egress_inspector)
        runners, egress_closers, _problems = tool_runners(config, workspace, audit, sandboxed,
                                                          inspection)
        env.runners.update(runners)
        closers.extend(egress_closers)
    gateway = Gateway(registry, env, security.stages)
    browser = None
    browser_names = {"browser_navigate", "browser_click", "browser_type", "browser_read",
                     "browser_screenshot", "browser_close_session"}
    if not config.browser.enabled:
        for name in browser_names:
            registry.remove(name)
    elif any(name in registry for name in browser_names):  # chromium starts on first use
        from bastion.security.browser.setup import attach as attach_browser
        from bastion.security.browser.setup import build_browser

        browser = build_browser(config, workspace, resolver=security.resolver, audit=audit)
        env.browser = browser
        attach_browser(browser, gateway, security.classifier, redactor,
                       rules=config.hitl.builtin_rules)
    closers.append(security.close)
    intel = None
    if config.intelligence.enabled:  # threat/anomaly + trust stages just before approval
        from bastion.intelligence.setup import attach
        from bastion.intelligence.setup import build as build_intel

        intel = build_intel(config, audit)
        attach(intel, gateway)  # just before approval
        closers.append(intel.close)
    undo = None
    if config.undo.enabled:  # innermost stage: only calls that really run are snapshotted
        from bastion.security.undo import UndoStage, open_store

        undo = open_store(config, workspace)
        gateway.add_stage(UndoStage(undo))
        closers.append(undo.close)
    privacy = config.privacy
    origin: dict[str, Any] = {}
    if model is None and not (privacy.enabled and privacy.local is not None):
        from bastion.llm.factory import provenance

        model = create_model(config)
        origin = provenance(config)
    if privacy.enabled:  # PII decides local vs remote; memory counts in the local model
        from bastion.privacy.setup import build_privacy_router

        def egress(name: str) -> bool:  # unknown names count as egress: nothing restored
            return name not in registry or security.egress_capable(registry.get(name))

        router = build_privacy_router(config, model, audit=audit, scanner=redactor.scanner,
                                      egress=egress, build=create_model)
        model, window_model = router, router.local
    else:
        assert model is not None
        window_model = model
    return App(
        config=config,
        model=model,
        registry=registry,
        gateway=gateway,
        audit=audit,
        memory=memory or build_memory(config, window_model),
        approvals=approvals,
        redactor=redactor,
        closers=closers,
        hitl=security.manager,
        browser=browser,
        secrets=security.resolver,
        intel=intel,
        undo=undo,
        provenance=origin,
    )
