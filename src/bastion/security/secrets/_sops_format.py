"""The sops file format (v3) with age recipients, encrypt and decrypt, in memory only.

Each leaf value is AES-256-GCM encrypted under one random data key with the value's key path
(``a:b:`` — list indices are not part of it) as additional data, written as
``ENC[AES256_GCM,data:..,iv:..,tag:..,type:str|int|float|bool]``. The data key is encrypted to
every age recipient (one armored age file each). A MAC (SHA-512 over every leaf value in
document order, upper-case hex) is encrypted with ``lastmodified`` as additional data, so
adding or removing values is detected. Keys ending in ``unencrypted_suffix`` stay plain but
are covered by the MAC.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
from collections.abc import Iterator
from typing import Any

from bastion._extras import require
from bastion.errors import SecretError

SOPS_VERSION = "3.9.4"
UNENCRYPTED_SUFFIX = "_unencrypted"
_ENC = re.compile(r"^ENC\[AES256_GCM,data:(.*),iv:(.+),tag:(.+),type:(.+)\]$")


def _aesgcm(key: bytes) -> Any:
    mod = require("cryptography.hazmat.primitives.ciphers.aead", extra="secrets",
                  feature="sops files")
    return mod.AESGCM(key)


def _to_text(value: Any) -> tuple[str, str]:
    """Return (plaintext, sops type) the way sops serialises scalars."""
    if isinstance(value, bool):
        return ("True" if value else "False"), "bool"
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or "E" in text:
            text = format(value, "f").rstrip("0").rstrip(".")
        return text, "float"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat(), "str"
    return str(value), "str"


def _from_text(text: str, kind: str) -> Any:
    if kind == "bool":
        return text.lower() == "true"
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bytes":
        return text
    return text


def encrypt_value(value: Any, key: bytes, aad: str) -> str:
    """Encrypt one scalar into sops' ``ENC[...]`` form."""
    text, kind = _to_text(value)
    iv = os.urandom(32)
    sealed = _aesgcm(key).encrypt(iv, text.encode(), aad.encode())
    data, tag = sealed[:-16], sealed[-16:]
    b64 = base64.b64encode
    return (f"ENC[AES256_GCM,data:{b64(data).decode()},iv:{b64(iv).decode()},"
            f"tag:{b64(tag).decode()},type:{kind}]")


def decrypt_value(enc: str, key: bytes, aad: str) -> tuple[Any, str]:
    """Decrypt an ``ENC[...]`` string; return (typed value, plaintext)."""
    m = _ENC.match(enc)
    if not m:
        raise SecretError("malformed sops value", fix="the file is not a sops file or is damaged")
    data, iv, tag = (base64.b64decode(x) for x in m.group(1, 2, 3))
    try:
        plain = _aesgcm(key).decrypt(iv, data + tag, aad.encode()).decode()
    except Exception:
        # from None: it could quote key or plaintext bytes
        raise SecretError(f"sops value at {aad!r} failed authentication",
                          fix="the file was modified or the data key is wrong") from None
    return _from_text(plain, m.group(4)), plain


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any, Any, Any]]:
    """Yield (path, container, index, leaf) in document order; lists don't add to the path."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        sub = path if isinstance(node, list) else (*path, str(k))
        if isinstance(v, (dict, list)):
            yield from _walk(v, sub)
        else:
            yield sub, node, k, v


def _aad(path: tuple[str, ...]) -> str:
    return ":".join(path) + ":"


def _plain_key(path: tuple[str, ...], suffix: str) -> bool:
    return any(p.endswith(suffix) for p in path)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _armor_encrypt(data_key: bytes, recipient: str) -> str:
    pyrage = require("pyrage", extra="secrets", feature="sops files with age recipients")
    try:
        rcpt = pyrage.x25519.Recipient.from_str(recipient)
    except Exception:
        # from None: it could quote key or plaintext bytes
        raise SecretError(f"not an age recipient: {recipient!r}",
                          fix="age recipients look like age1...") from None
    return bytes(pyrage.encrypt(data_key, [rcpt], armored=True)).decode()


def encrypt_tree(plain: dict[str, Any], recipients: list[str],
                 data_key: bytes | None = None) -> dict[str, Any]:
    """Return the sops document for ``plain`` encrypted to the age ``recipients``."""
    if not recipients:
        raise SecretError("a sops file needs at least one age recipient",
                          fix="set secrets.sops.recipients or let bastion create its key")
    import copy

    key = data_key or os.urandom(32)
    tree = copy.deepcopy(plain)
    tree.pop("sops", None)
    digest = hashlib.sha512()
    for path, parent, idx, value in list(_walk(tree, ())):
        if value is None:
            continue
        text, _ = _to_text(value)
        digest.update(text.encode())
        if _plain_key(path, UNENCRYPTED_SUFFIX) or value == "":
            continue  # sops leaves empty strings as they are; its decryptors do the same
        parent[idx] = encrypt_value(value, key, _aad(path))
    modified = _now()
    tree["sops"] = {
        "age": [{"recipient": r, "enc": _armor_encrypt(key, r)} for r in recipients],
        "lastmodified": modified,
        "mac": encrypt_value(digest.hexdigest().upper(), key, modified),
        "unencrypted_suffix": UNENCRYPTED_SUFFIX,
        "version": SOPS_VERSION,
    }
    return tree


def data_key(doc: dict[str, Any], identities: list[Any]) -> bytes:
    """Recover the data key with one of the age ``identities``."""
    pyrage = require("pyrage", extra="secrets", feature="sops files with age recipients")
    meta = doc.get("sops")
    if not isinstance(meta, dict) or not meta.get("age"):
        raise SecretError("not a sops file with age recipients",
                          fix="create it with `bastion secrets set` or `sops --age ...`")
    for entry in meta["age"]:
        try:
            return bytes(pyrage.decrypt(entry["enc"].encode(), identities))
        except Exception:  # not ours; try the next recipient
            continue
    raise SecretError("none of bastion's age identities can open this sops file",
                      fix="add bastion's age recipient (bastion secrets recipient) and re-encrypt")


def decrypt_tree(doc: dict[str, Any], identities: list[Any]) -> tuple[dict[str, Any], bytes]:
    """Decrypt a sops document and check its MAC; return (plain tree, data key)."""
    import copy

    key = data_key(doc, identities)
    meta = doc["sops"]
    suffix = meta.get("unencrypted_suffix") or UNENCRYPTED_SUFFIX
    tree = copy.deepcopy({k: v for k, v in doc.items() if k != "sops"})
    digest = hashlib.sha512()
    for path, parent, idx, value in list(_walk(tree, ())):
        if value is None:
            continue
        if isinstance(value, str) and value.startswith("ENC[") and not _plain_key(path, suffix):
            parent[idx], text = decrypt_value(value, key, _aad(path))
        else:
            text, _ = _to_text(value)
        digest.update(text.encode())
    modified = meta.get("lastmodified")
    if isinstance(modified, dt.datetime):
        modified = modified.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mac, _ = decrypt_value(str(meta.get("mac", "")), key, str(modified))
    if str(mac).upper() != digest.hexdigest().upper():
        raise SecretError("sops MAC mismatch: values were added, removed or changed",
                          fix="restore the file from a trusted copy")
    return tree, key
