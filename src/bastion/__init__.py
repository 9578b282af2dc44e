"""bastion: a self-hosted, security-first agent framework."""

__version__ = "0.1.0"
