"""Human in the loop: risk classification (LOW..CRITICAL) and the one approval manager."""

from bastion.security.hitl.manager import ApprovalManager, PendingApproval
from bastion.security.hitl.risk import RiskClassifier, RiskRule, RiskStage, builtin_rules

__all__ = ["ApprovalManager", "PendingApproval", "RiskClassifier", "RiskRule", "RiskStage",
           "builtin_rules"]
