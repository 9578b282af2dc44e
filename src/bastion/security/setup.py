"""Assembling the security layer from config (used by the composition root, ``bastion.app``).

Pipeline order (outermost first): audit -> policy -> risk -> approval -> secrets ->
output scan -> invoke. Audit sees every outcome; secrets are resolved only for calls that
passed policy and approval; the output scan runs while the secret values are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.config import paths
from bastion.config.model import Config
from bastion.security._audit_anchor import HeadAnchor
from bastion.security.approval import Approver, DenyApprover
from bastion.security.audit import AuditLog, AuditStage
from bastion.security.gateway import Stage
from bastion.security.hitl.manager import ApprovalManager
from bastion.security.hitl.risk import (
    RiskClassifier,
    RiskRule,
    RiskStage,
    builtin_rules,
    tool_egress,
)
from bastion.security.identity import ToolScopeStage
from bastion.security.model_guard import OutputScanStage
from bastion.security.policy import ApprovalStage
from bastion.security.quota import ToolQuotaStage, quotas_for
from bastion.security.redact import Redactor
from bastion.security.secrets.factory import build_backends
from bastion.security.secrets.resolver import SecretResolver, SecretsStage, tool_declarations
from bastion.security.signing import audit_signer
from bastion.tools.base import Risk


def audit_path() -> Path:
    """Return the audit database path."""
    return paths.data_dir("audit") / "audit.db"


def build_audit(config: Config, redactor: Redactor) -> AuditLog:
    """Open the audit log with the configured durability (and apply retention)."""
    a = config.audit
    signer = audit_signer(config)  # None = the Ed25519 key file; pkcs11 = the HSM's key
    log = AuditLog(audit_path(), redactor, durability=a.durability,
                   flush_interval_ms=a.flush_interval_ms, batch_size=a.batch_size,
                   checkpoint_every=a.checkpoint_every, signer=signer,
                   trust_signer=signer is not None, pinned=tuple(a.key_fingerprints),
                   anchor=build_anchor(config))
    if a.retention_days:
        import time

        log.prune(before_ts=time.time() - a.retention_days * 86400)
    return log


def build_anchor(config: Config) -> HeadAnchor | None:
    """Return the external anchor for signed audit heads (file and/or syslog), if configured."""
    from bastion.security._audit_anchor import FileAnchor, SyslogAnchor

    cfg = config.audit.anchor
    if cfg is None:
        return None
    anchors: list[HeadAnchor] = []
    if cfg.file is not None:
        anchors.append(FileAnchor(cfg.file.expanduser()))
    if cfg.syslog is not None:
        host, _, port = cfg.syslog.rpartition(":")
        anchors.append(SyslogAnchor(host.strip("[]"), int(port)))
    if not anchors:
        return None
    return anchors[0] if len(anchors) == 1 else _Anchors(anchors)


class _Anchors:
    """Several anchors as one."""

    def __init__(self, anchors: list[HeadAnchor]) -> None:
        self.anchors = anchors

    def publish(self, head: dict[str, Any]) -> None:
        for a in self.anchors:
            a.publish(head)

    def close(self) -> None:
        for a in self.anchors:
            a.close()


@dataclass
class Security:
    """The assembled security layer."""

    audit: AuditLog
    manager: ApprovalManager
    approvals: ApprovalStage
    resolver: SecretResolver
    classifier: RiskClassifier
    stages: list[Stage]

    def egress_capable(self, tool: Any) -> bool:
        """Whether ``tool`` can send data off the machine (declared, or a network sandbox)."""
        return self.classifier.egress_capable(tool)

    def close(self) -> None:
        """Stop background work of the backends (vault renewal)."""
        for backend in self.resolver.backends.values():
            backend.close()


def build_security(
    config: Config,
    workspace: Path,
    redactor: Redactor,
    *,
    approver: Approver | None = None,
    policy: Stage,
    audit: AuditLog | None = None,
) -> Security:
    """Build audit, risk, approval, secrets and output-scan stages around ``policy``."""
    sec = config.security
    audit = audit or build_audit(config, redactor)
    threshold = Risk.parse(sec.approval_threshold)
    manager = ApprovalManager(default_threshold=threshold, audit=audit, redactor=redactor,
                              delegate=approver or DenyApprover())
    approvals = ApprovalStage(manager, threshold, sec.approval_timeout_s)
    resolver = SecretResolver(build_backends(config), redactor)
    secrets_stage = SecretsStage(resolver, config.secrets.tools)
    rules: list[RiskRule] = builtin_rules() if config.hitl.builtin_rules else []
    rules += [RiskRule(r.name, Risk.parse(r.level), list(r.tools), r.match, r.argument, r.when)
              for r in config.hitl.rules]
    networked = set(sec.egress)  # sandboxed tools given an egress allowlist

    def egress_capable(tool: Any) -> bool:
        return tool_egress(tool) or tool.name in networked

    # destinations the operator allowlisted for egress are not "new": asking adds nothing
    allowlists = [*sec.egress.values(), config.browser.egress,
                  *(m.egress for m in config.mcp_servers)]
    known = [*config.hitl.known_domains, *(d for a in allowlists if a for d in a.domains)]
    classifier = RiskClassifier(
        rules, workspace, known_domains=known,
        known_networks=[c for a in allowlists if a for c in a.cidrs],
        secret_use=lambda tool: bool(tool_declarations(tool, config.secrets.tools)),
        egress_capable=egress_capable)
    stages: Sequence[Stage] = (
        AuditStage(audit), ToolScopeStage(), ToolQuotaStage(quotas_for(paths.home())), policy,
        RiskStage(classifier, manager.session_threshold), approvals,
        secrets_stage, OutputScanStage(redactor, config.secrets.scan_policy),
    )
    return Security(audit, manager, approvals, resolver, classifier, list(stages))
