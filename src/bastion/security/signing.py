"""Which key signs the audit log: the Ed25519 key file, or a key inside a PKCS#11 token.

``audit.signer: pkcs11`` opens the token of ``crypto.hsm`` with the PIN its ``secret://``
reference resolves to (through the configured secret backends) and generates the key inside
the token on first use. The public key is added to the log's trusted-keys file.
"""

from __future__ import annotations

from pathlib import Path

from bastion.config import paths
from bastion.config.model import Config
from bastion.crypto.keys import Signer
from bastion.errors import CryptoError
from bastion.security.secrets.base import is_ref

__all__ = ["audit_signer", "hsm_pin", "hsm_signer"]


def hsm_pin(config: Config) -> str:
    """Resolve ``crypto.hsm.pin`` (a ``secret://`` reference) to the PIN."""
    ref = config.crypto.hsm.pin
    if not ref:
        raise CryptoError("crypto.hsm.pin is not set",
                          fix="set it to a secret reference, e.g. secret://env/hsm_pin and "
                              "export BASTION_SECRET_HSM_PIN")
    if not is_ref(ref):
        raise CryptoError("crypto.hsm.pin must be a secret:// reference, not the PIN itself",
                          fix="e.g. secret://env/hsm_pin with BASTION_SECRET_HSM_PIN exported")
    from bastion.security.secrets.factory import build_backends
    from bastion.security.secrets.resolver import SecretResolver

    backends = build_backends(config)
    try:
        return SecretResolver(backends).resolve(ref)
    finally:
        for b in backends.values():
            b.close()


def softhsm_dir(config: Config) -> Path:
    """Return where bastion's SoftHSM2 tokens live."""
    return config.crypto.hsm.softhsm_dir or paths.home() / "hsm"


def hsm_signer(config: Config, *, create: bool = True) -> Signer:
    """Open the configured token and return its signer (generating the key if asked)."""
    from bastion.crypto.pkcs11 import Pkcs11Signer, prepare_module

    h = config.crypto.hsm
    prepare_module(h.module, softhsm_dir(config))
    return Pkcs11Signer(h.module, h.token_label, hsm_pin(config), h.key_label,
                        key_type=h.key_type, create=create)


def audit_signer(config: Config) -> Signer | None:
    """Return the audit log's signer for ``audit.signer`` (None = the default key file)."""
    if config.audit.signer == "pkcs11":
        return hsm_signer(config)
    return None
