"""Secrets: the :class:`SecretBackend` seam (env, OpenBao/Vault, sops+age files), references
(``secret://backend/path#key``) resolved only at injection, and the gateway stage that injects
them into a tool's sandbox."""

from bastion.security.secrets.base import SecretBackend, SecretRef, parse_ref
from bastion.security.secrets.resolver import SecretResolver, SecretsStage

__all__ = ["SecretBackend", "SecretRef", "SecretResolver", "SecretsStage", "parse_ref"]
