"""Sealed mode: key files encrypted at rest, usable only after ``t`` of ``n`` shares unseal them.

``seal([FILE, ...], t, n)`` encrypts each file to ``FILE.sealed`` under one Shamir-shared KEK
(:mod:`bastion.crypto.shamir`), wipes the plaintext and records the set in a manifest. The
audit signing key, the sops age identity (which opens bastion's local secret store) and any
other key file can be sealed together.

``unseal(manifest, shares)`` recovers the KEK, decrypts every sealed file and keeps the
plaintext only in memory-backed runtime storage: ``$XDG_RUNTIME_DIR/bastion-unsealed`` or
``/dev/shm/bastion-unsealed-<uid>`` (mode 0700/0600, gone at reboot), plus this process's
memory. Readers (:class:`bastion.crypto.keys.FileSigner`, the sops backend) call
:func:`read_unsealed`; while sealed they fail with :class:`SealedError` naming the fix.
``lock(manifest)`` drops the unsealed copies again.

Limits, said plainly: this protects keys at rest (a stolen disk or backup), not from root on
a running unsealed host. Wiping the plaintext overwrites it before unlinking, which copy-on-
write filesystems and SSDs may not honour; seal keys right after creating them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from bastion.crypto import shamir
from bastion.errors import CryptoError, SealedError

__all__ = ["is_sealed", "lock", "read_unsealed", "runtime_dir", "seal", "status", "unseal"]

SUFFIX = ".sealed"
_memory: dict[str, bytes] = {}
_mem_lock = threading.Lock()


def sealed_path(path: Path) -> Path:
    """Return where the sealed form of ``path`` lives."""
    return path.with_name(path.name + SUFFIX)


def is_sealed(path: Path) -> bool:
    """Return whether ``path`` exists only in sealed form."""
    return sealed_path(path).exists() and not path.exists()


def runtime_dir() -> Path:
    """Return the memory-backed directory unsealed copies live in (created 0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = (Path(base) / "bastion-unsealed" if base and Path(base).is_dir()
              else Path("/dev/shm") / f"bastion-unsealed-{os.getuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def _runtime_copy(path: Path) -> Path:
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    return runtime_dir() / key


def read_unsealed(path: Path) -> bytes:
    """Return the plaintext of a sealed file (from memory or runtime storage)."""
    key = str(Path(path).resolve())
    with _mem_lock:
        if key in _memory:
            return _memory[key]
    copy = _runtime_copy(path)
    if copy.exists():
        return copy.read_bytes()
    raise SealedError(f"{path.name} is sealed and bastion has not been unsealed",
                      fix="run `bastion crypto unseal` with the threshold number of shares")


def _wipe(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_manifest(manifest: Path) -> dict[str, Any]:
    if not manifest.exists():
        raise CryptoError("nothing is sealed", fix="seal keys first: bastion crypto seal")
    data: dict[str, Any] = json.loads(manifest.read_text())
    return data


def seal(paths: list[Path], threshold: int, total: int, manifest: Path) -> list[str]:
    """Seal ``paths`` under one new share set; return the printed shares (shown once)."""
    if manifest.exists():
        raise CryptoError("bastion is already sealed with a share set",
                          fix="unseal, then `bastion crypto reseal` to change the shares")
    files = [Path(p).resolve() for p in paths]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise CryptoError(f"cannot seal missing files: {', '.join(missing)}",
                          fix="create the keys first (e.g. run bastion once), then seal")
    kek, header, shares = shamir.split(threshold, total)
    for p in files:
        body = shamir.encrypt(kek, header, p.read_bytes(), p.name)
        _write_private(sealed_path(p), json.dumps(
            {"format": "bastion-sealed-1", "header": header.to_dict(), "data": body}).encode())
    _write_private(manifest, json.dumps(
        {"header": header.to_dict(), "files": [str(p) for p in files]}, indent=2).encode())
    for p in files:
        _wipe(p)
    return [s.text() for s in shares]


def unseal(manifest: Path, shares: list[str], *, persist: bool = True) -> list[Path]:
    """Recover the KEK from ``shares`` and decrypt every sealed file; return their paths.

    ``persist`` keeps the plaintext in runtime storage for other bastion processes; without
    it only this process can use the keys.
    """
    data = _load_manifest(manifest)
    header = shamir.ShareSet.from_dict(data["header"])
    kek = shamir.combine(header, [shamir.parse_share(s, n) for n, s in enumerate(shares, 1)])
    out: list[Path] = []
    plain: dict[Path, bytes] = {}
    for name in data["files"]:
        p = Path(name)
        doc = json.loads(sealed_path(p).read_text())
        if shamir.ShareSet.from_dict(doc["header"]).aad() != header.aad():
            raise CryptoError(f"{sealed_path(p)} belongs to another share set",
                              fix="restore the sealed file that matches the manifest")
        plain[p] = shamir.decrypt(kek, header, doc["data"])
    for p, value in plain.items():  # all decrypted: only now hand anything out
        with _mem_lock:
            _memory[str(p.resolve())] = value
        if persist:
            _write_private(_runtime_copy(p), value)
        out.append(p)
    return out


def lock(manifest: Path) -> int:
    """Forget every unsealed copy (memory and runtime storage); return how many were dropped."""
    data = _load_manifest(manifest)
    n = 0
    for name in data["files"]:
        p = Path(name)
        with _mem_lock:
            n += _memory.pop(str(p.resolve()), None) is not None
        copy = _runtime_copy(p)
        if copy.exists():
            _wipe(copy)
            n += 1
    return n


def reseal(manifest: Path, shares: list[str], threshold: int, total: int) -> list[str]:
    """Replace the share set (new KEK, new shares); the old shares stop working."""
    data = _load_manifest(manifest)
    files = unseal(manifest, shares, persist=False)
    plain = {p: read_unsealed(p) for p in files}
    kek, header, new = shamir.split(threshold, total)
    for p, value in plain.items():
        body = shamir.encrypt(kek, header, value, p.name)
        _write_private(sealed_path(p), json.dumps(
            {"format": "bastion-sealed-1", "header": header.to_dict(), "data": body}).encode())
    data["header"] = header.to_dict()
    _write_private(manifest, json.dumps(data, indent=2).encode())
    return [s.text() for s in new]


def status(manifest: Path) -> dict[str, Any]:
    """Return whether bastion is sealed, the threshold, and each file's state."""
    if not manifest.exists():
        return {"sealed": False, "files": []}
    data = _load_manifest(manifest)
    header = data["header"]
    files = []
    for name in data["files"]:
        p = Path(name)
        try:
            read_unsealed(p)
            state = "unsealed"
        except SealedError:
            state = "sealed"
        files.append({"path": str(p), "state": "plain" if p.exists() else state})
    return {"sealed": any(f["state"] == "sealed" for f in files),
            "threshold": header["threshold"], "shares": header["total"],
            "set_id": header["set_id"], "files": files}
