"""Building browser sessions from config and hooking them into the gateway (used by app.py)."""

from __future__ import annotations

from pathlib import Path

from bastion.config import paths
from bastion.config.model import Config
from bastion.security.browser.manager import BrowserManager, BrowserSettings, Resolver
from bastion.security.browser.preauth import Site
from bastion.security.browser.rules import BrowserGuardStage, browser_conditions, browser_rules
from bastion.security.gateway import Gateway
from bastion.security.hitl.risk import RiskClassifier, RiskStage
from bastion.security.recorder import AuditRecorder
from bastion.security.redact import Redactor
from bastion.tools.builtin.web import DirectFetcher


def browser_fetcher(config: Config) -> DirectFetcher:
    """Return the browser's egress policy: ``browser.egress`` (if set) plus the SSRF guard."""
    allow_private = config.security.allow_private_network
    rule = config.browser.egress
    if rule is None:
        return DirectFetcher(allow_private=allow_private,
                             timeout_s=config.browser.action_timeout_s,
                             allow_metadata=config.security.allow_metadata)
    return DirectFetcher(allow_private=allow_private, allowed_networks=rule.cidrs,
                         allow_domains=rule.domains, allow_ports=rule.ports,
                         timeout_s=config.browser.action_timeout_s,
                         egress_setting="browser.egress",
                         allow_metadata=config.security.allow_metadata)


def build_browser(config: Config, workspace: Path, *, resolver: Resolver | None,
                  audit: AuditRecorder | None) -> BrowserManager:
    """Return the session manager for ``config.browser`` (chromium starts on first use)."""
    b = config.browser
    settings = BrowserSettings(
        executable=b.executable, sandbox=b.sandbox, max_sessions=b.max_sessions,
        idle_timeout_s=b.idle_timeout_s, max_actions=b.max_actions,
        action_timeout_s=b.action_timeout_s, max_response_bytes=int(b.max_response_mb * 1e6),
        snapshot_chars=b.snapshot_chars)
    sites = [Site(s.name, [d.lower().removeprefix("*.").rstrip(".") for d in s.domains],
                  s.login_url, s.username, s.password, s.username_selector, s.password_selector,
                  s.submit_selector, s.success_selector) for s in b.sites]
    return BrowserManager(settings, fetcher=browser_fetcher(config), workspace=workspace,
                          sites=sites, resolver=resolver, audit=audit,
                          runtime_dir=paths.data_dir("browser"))


def attach(manager: BrowserManager, gateway: Gateway, classifier: RiskClassifier,
           redactor: Redactor | None, *, rules: bool = True) -> None:
    """Add the browser risk rules to ``classifier`` and the guard stage before the risk stage."""
    if rules:
        def holds_secret(text: str) -> bool:
            return redactor is not None and redactor.text(text) != text

        classifier.rules.extend(browser_rules())
        classifier.conditions.update(browser_conditions(manager, is_secret=holds_secret))
    gateway.add_stage(BrowserGuardStage(manager), before=RiskStage)
