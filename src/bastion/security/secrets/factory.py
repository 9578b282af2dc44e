"""Build the configured secret backends (env and sops always; vault when configured)."""

from __future__ import annotations

from bastion.config import paths
from bastion.config.model import Config
from bastion.security.secrets.base import SecretBackend


def build_backends(config: Config) -> dict[str, SecretBackend]:
    """Return the configured secret backends by name (env and sops always; vault if set)."""
    from bastion.security.secrets.env import EnvBackend
    from bastion.security.secrets.sops import SopsBackend

    s = config.secrets
    folder = paths.home() / "secrets"
    backends: dict[str, SecretBackend] = {
        "env": EnvBackend(s.env_prefix),
        "sops": SopsBackend(s.sops.file or folder / "secrets.enc.yaml",
                            s.sops.identity_file or folder / "age.key", s.sops.recipients),
    }
    if s.vault is not None:
        from bastion.security.secrets.vault import VaultBackend

        v = s.vault
        vault = VaultBackend(
            v.url, token=v.token.get_secret_value() if v.token else None, role_id=v.role_id,
            secret_id=v.secret_id.get_secret_value() if v.secret_id else None, mount=v.mount,
            namespace=v.namespace)
        if v.renew:
            vault.start_renewal()
        backends["vault"] = vault
    return backends
