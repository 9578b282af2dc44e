"""Signing with a key that never leaves a PKCS#11 token (an HSM), through python-pkcs11.

Any PKCS#11 module works: SoftHSM2 (``/usr/lib/softhsm/libsofthsm2.so``, a software token,
what the tests use), a TPM 2.0 through ``tpm2-pkcs11`` (``libtpm2_pkcs11.so``; P-256 only),
a YubiHSM 2 (``yubihsm_pkcs11.so``), a Nitrokey/SmartCard-HSM through OpenSC
(``opensc-pkcs11.so``), or a cloud HSM's client library (AWS CloudHSM, Thales Luna,
Google Cloud KMS via ``libkmsp11.so``).

Keys are generated *inside* the token with ``CKA_TOKEN``, ``CKA_SENSITIVE`` and
``CKA_EXTRACTABLE=false``: bastion can ask the token to sign, never read the key. Two key
types are used: Ed25519 (``CKM_EDDSA``) and ECDSA P-256 (``CKM_ECDSA`` over a SHA-256 digest
computed here, because SoftHSM2 and many tokens lack ``CKM_ECDSA_SHA256``). SoftHSM2 2.6.1
supports both; ``key_type="auto"`` picks Ed25519 when the token offers ``CKM_EDDSA`` and
P-256 otherwise (TPMs). Signatures verify with :func:`bastion.crypto.keys.verify`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bastion._extras import require
from bastion.crypto.keys import P256_PREFIX
from bastion.errors import CryptoError

__all__ = ["SOFTHSM_MODULE", "Pkcs11Signer", "TokenInfo", "init_softhsm_token", "token_info"]

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
KeyType = Literal["auto", "ed25519", "ec-p256"]
_P256_OID = "secp256r1"
_ED25519_OID = "1.3.101.112"
_libs: dict[str, Any] = {}
_libs_lock = threading.Lock()


def _pk() -> Any:
    return require("pkcs11", extra="crypto", feature="PKCS#11 HSM signing")


def _lib(module: str) -> Any:
    """Load a PKCS#11 module once per process (C_Initialize may run only once)."""
    with _libs_lock:
        if module not in _libs:
            if not Path(module).exists():
                raise CryptoError(f"PKCS#11 module {module} does not exist",
                                  fix="install the token's library (apt install softhsm2) or "
                                      "set crypto.hsm.module")
            try:
                _libs[module] = _pk().lib(module)
            except Exception as exc:
                # from None: a PKCS#11 error can carry the PIN
                raise CryptoError(f"cannot load PKCS#11 module {module}: {exc}") from None
        return _libs[module]


def softhsm_conf(home: Path) -> Path:
    """Return (creating) a private SoftHSM2 config whose tokens live under ``home``."""
    tokens = home / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = home / "softhsm2.conf"
    if not conf.exists():
        conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                        "log.level = ERROR\nslots.removable = false\n")
    return conf


def init_softhsm_token(conf: Path, label: str, pin: str, so_pin: str) -> None:
    """Initialise a new SoftHSM2 token (other tokens need their vendor's tool)."""
    exe = shutil.which("softhsm2-util")
    if exe is None:
        raise CryptoError("softhsm2-util is not installed", fix="apt-get install softhsm2")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    proc = subprocess.run(
        [exe, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise CryptoError(f"softhsm2-util failed: {proc.stderr.strip() or proc.stdout.strip()}")


@dataclass(slots=True)
class TokenInfo:
    """What ``bastion crypto hsm status`` shows."""

    module: str
    library: str
    token: str
    manufacturer: str
    model: str
    serial: str
    mechanisms: list[str]
    keys: list[dict[str, Any]]


def _open(token: Any, pin: str, *, rw: bool) -> Any:
    """Open a logged-in session (login state is per process: a second session inherits it)."""
    pk = _pk()
    try:
        return token.open(user_pin=pin, rw=rw)
    except pk.exceptions.UserAlreadyLoggedIn:
        return token.open(rw=rw)
    except (pk.exceptions.PinIncorrect, pk.exceptions.PinLenRange):
        # from None: a PKCS#11 error can carry the PIN
        raise CryptoError(f"the PIN for token {token.label!r} is wrong",
                          fix="check crypto.hsm.pin (a secret:// reference)") from None


def _point_bytes(ec_point: bytes) -> bytes:
    """Unwrap CKA_EC_POINT (a DER OCTET STRING in PKCS#11 2.40; raw in some tokens)."""
    if ec_point[:1] == b"\x04" and len(ec_point) >= 2:
        n = ec_point[1]
        if n < 0x80 and n == len(ec_point) - 2:
            return ec_point[2:]
        if n == 0x81 and len(ec_point) >= 3 and ec_point[2] == len(ec_point) - 3:
            return ec_point[3:]
    return ec_point


class Pkcs11Signer:
    """A :class:`bastion.crypto.keys.Signer` whose private key is inside a PKCS#11 token."""

    def __init__(self, module: str, token_label: str, pin: str, key_label: str, *,
                 key_type: KeyType = "auto", create: bool = True) -> None:
        pk = _pk()
        self.module = module
        self.key_label = key_label
        lib = _lib(module)
        try:
            token = lib.get_token(token_label=token_label)
        except pk.exceptions.NoSuchToken:
            # from None: a PKCS#11 error can carry the PIN
            raise CryptoError(f"no PKCS#11 token labelled {token_label!r} in {module}",
                              fix="bastion crypto hsm init (or the vendor's tool)") from None
        self._lock = threading.Lock()
        self._session = _open(token, pin, rw=True)
        try:
            self._key, self.algorithm = self._find_or_create(token, key_type, create)
            self.public_hex = self._public()
        except BaseException:
            self._session.close()
            raise

    def _find_or_create(self, token: Any, key_type: KeyType, create: bool) -> tuple[Any, str]:
        pk = _pk()
        try:
            key = self._session.get_key(object_class=pk.ObjectClass.PRIVATE_KEY,
                                        label=self.key_label)
        except pk.exceptions.NoSuchKey:
            if not create:
                # from None: a PKCS#11 error can carry the PIN
                raise CryptoError(f"no key {self.key_label!r} in the token",
                                  fix="bastion crypto hsm keygen") from None
            return self.generate(token, key_type)
        except pk.exceptions.MultipleObjectsReturned:
            # from None: a PKCS#11 error can carry the PIN
            raise CryptoError(f"several keys are labelled {self.key_label!r} in the token",
                              fix="delete the extras or pick another crypto.hsm.key_label"
                              ) from None
        kt = key[pk.Attribute.KEY_TYPE]
        return key, "ed25519" if kt == pk.KeyType.EC_EDWARDS else "ecdsa-p256"

    def generate(self, token: Any, key_type: KeyType) -> tuple[Any, str]:
        """Generate a non-extractable key pair inside the token; return (private key, algo)."""
        pk = _pk()
        ec_util = require("pkcs11.util.ec", extra="crypto", feature="PKCS#11 HSM signing")
        mechs = set(token.slot.get_mechanisms())
        if key_type == "auto":
            ed_ok = {pk.Mechanism.EDDSA, pk.Mechanism.EC_EDWARDS_KEY_PAIR_GEN} <= mechs
            key_type = "ed25519" if ed_ok else "ec-p256"
        if key_type == "ed25519":
            kt, curve, algo = pk.KeyType.EC_EDWARDS, _ED25519_OID, "ed25519"
        else:
            kt, curve, algo = pk.KeyType.EC, _P256_OID, "ecdsa-p256"
        A = pk.Attribute
        private = {A.TOKEN: True, A.PRIVATE: True, A.SENSITIVE: True, A.EXTRACTABLE: False,
                   A.SIGN: True, A.LABEL: self.key_label}
        public = {A.TOKEN: True, A.VERIFY: True, A.LABEL: self.key_label}
        try:
            params = self._session.create_domain_parameters(
                kt, {A.EC_PARAMS: ec_util.encode_named_curve_parameters(curve)}, local=True)
            _pub, priv = params.generate_keypair(store=True, label=self.key_label,
                                                 public_template=public,
                                                 private_template=private)
        except pk.exceptions.PKCS11Error as exc:
            # from None: a PKCS#11 error can carry the PIN
            raise CryptoError(f"the token cannot generate a {key_type} key "
                              f"({type(exc).__name__})",
                              fix="set crypto.hsm.key_type to ec-p256") from None
        return priv, algo

    def _public(self) -> str:
        pk = _pk()
        try:
            pub = self._session.get_key(object_class=pk.ObjectClass.PUBLIC_KEY,
                                        label=self.key_label)
        except pk.exceptions.PKCS11Error:
            # from None: a PKCS#11 error can carry the PIN
            raise CryptoError(f"the token holds no public key labelled {self.key_label!r}",
                              fix="regenerate the key with bastion crypto hsm keygen") from None
        point = _point_bytes(bytes(pub[pk.Attribute.EC_POINT]))
        if self.algorithm == "ed25519":
            return point.hex()
        return P256_PREFIX + point.hex()

    def sign(self, message: bytes) -> str:
        """Return the hex signature of ``message``, computed inside the token."""
        pk = _pk()
        with self._lock:
            if self.algorithm == "ed25519":
                sig = self._key.sign(message, mechanism=pk.Mechanism.EDDSA)
            else:
                sig = self._key.sign(hashlib.sha256(message).digest(),
                                     mechanism=pk.Mechanism.ECDSA)
        return bytes(sig).hex()

    def close(self) -> None:
        """Close the token session."""
        with self._lock:
            self._session.close()


def token_info(module: str, token_label: str, pin: str | None) -> TokenInfo:
    """Describe a token: library, model, mechanisms and (with the PIN) its keys."""
    pk = _pk()
    lib = _lib(module)
    try:
        token = lib.get_token(token_label=token_label)
    except pk.exceptions.NoSuchToken:
        # from None: a PKCS#11 error can carry the PIN
        raise CryptoError(f"no PKCS#11 token labelled {token_label!r} in {module}",
                          fix="bastion crypto hsm init") from None
    mechs = sorted(m.name for m in token.slot.get_mechanisms()
                   if m.name.startswith(("EC", "EDDSA")))
    keys: list[dict[str, Any]] = []
    if pin is not None:
        with _open(token, pin, rw=False) as s:
            for obj in s.get_objects({pk.Attribute.CLASS: pk.ObjectClass.PRIVATE_KEY}):
                keys.append({"label": obj[pk.Attribute.LABEL],
                             "type": obj[pk.Attribute.KEY_TYPE].name,
                             "extractable": bool(obj[pk.Attribute.EXTRACTABLE]),
                             "sensitive": bool(obj[pk.Attribute.SENSITIVE])})
    return TokenInfo(module, f"{lib.library_description} {lib.library_version}", token.label,
                     token.manufacturer_id, token.model, token.serial.decode()
                     if isinstance(token.serial, bytes) else str(token.serial), mechs, keys)


def prepare_module(module: str, softhsm_dir: Path | None) -> None:
    """Point SoftHSM2 at bastion's private token store unless ``SOFTHSM2_CONF`` is set."""
    if "softhsm" in Path(module).name and "SOFTHSM2_CONF" not in os.environ and softhsm_dir:
        os.environ["SOFTHSM2_CONF"] = str(softhsm_conf(softhsm_dir))
