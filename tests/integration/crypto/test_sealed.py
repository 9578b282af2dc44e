"""Sealed mode on real key files: the audit key and the sops age identity need t shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.crypto import sealed, shamir
from bastion.crypto.keys import FileSigner
from bastion.errors import CryptoError, SealedError
from bastion.security.audit import AuditLog
from bastion.security.secrets.sops import SopsBackend
from tests.integration.crypto.test_hsm import run_cli


def _forge(share: str) -> str:
    """Change a share's data and recompute its check digits (a deliberate forgery)."""
    s = shamir.parse_share(share)
    value = bytes([s.value[0] ^ 1]) + s.value[1:]
    return shamir.Share(s.set_id, s.threshold, s.total, s.index, value).text()


def test_seal_unseal_audit_key_and_age_identity(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    log = AuditLog(db)
    log.record("tool_call", tool="shell", decision="allowed")
    log.close()
    sops = SopsBackend(tmp_path / "s.enc.yaml", tmp_path / "age.key")
    sops.put("db", {"password": "hunter2-sealed"})
    key_file = tmp_path / "audit-signing.key"
    public = FileSigner(key_file).public_hex
    manifest = tmp_path / "sealed.json"
    shares = sealed.seal([key_file, tmp_path / "age.key"], 2, 3, manifest)
    assert len(shares) == 3 and not key_file.exists() and not (tmp_path / "age.key").exists()
    assert b"hunter2" not in (tmp_path / "age.key.sealed").read_bytes()

    with pytest.raises(SealedError, match="has not been unsealed"):
        AuditLog(db)  # no signing key: the log cannot start while sealed
    with pytest.raises(SealedError):
        sops.get("db")
    with pytest.raises(CryptoError, match="1 distinct share"):
        sealed.unseal(manifest, shares[:1])
    with pytest.raises(CryptoError, match="share 2 is corrupted"):
        sealed.unseal(manifest, [shares[0], shares[1][:-3] + "zzz"])
    with pytest.raises(CryptoError, match=r"share 1 \(#2\) was altered"):
        sealed.unseal(manifest, [_forge(shares[1]), shares[2]])
    other = shamir.split(2, 3)[2][0].text()
    with pytest.raises(CryptoError, match="belongs to another share set"):
        sealed.unseal(manifest, [shares[0], other])
    assert sealed.status(manifest)["sealed"] is True

    sealed.unseal(manifest, [shares[2], shares[0]])
    assert sealed.status(manifest)["sealed"] is False
    assert FileSigner(key_file).public_hex == public
    assert sops.get("db") == {"password": "hunter2-sealed"}
    log = AuditLog(db)
    log.record("tool_call", tool="shell", decision="denied")
    assert log.verify().ok
    log.close()

    assert sealed.lock(manifest) >= 2
    sealed._memory.clear()
    with pytest.raises(SealedError):
        sops.get("db")
    new = sealed.reseal(manifest, shares[1:], 3, 4)
    with pytest.raises(CryptoError, match="another share set"):
        sealed.unseal(manifest, shares[:2])  # old shares are void after a reseal
    sealed.unseal(manifest, new[1:])
    assert sops.get("db")["password"] == "hunter2-sealed"


def test_cli_seal_unseal_split_combine(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "audit").mkdir(parents=True)
    FileSigner(home / "audit" / "audit-signing.key")
    out = tmp_path / "shares"
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 400)
    sh = tmp_path / "sh"
    r = run_cli(home, [
        ["crypto", "seal", "-t", "2", "-n", "3", "--out-dir", str(out)],
        ["crypto", "status"],
        ["crypto", "unseal", str(out / "share-1.txt"), str(out / "share-3.txt")],
        ["crypto", "status", "--json"],
        ["crypto", "split", str(big), "-t", "3", "-n", "5", "--out-dir", str(sh)],
        ["crypto", "combine", str(big) + ".shamir.json", str(sh / "share-5.txt"),
         str(sh / "share-2.txt"), str(sh / "share-4.txt"), "-o", str(tmp_path / "back.bin")],
        ["crypto", "combine", str(big) + ".shamir.json", str(sh / "share-5.txt"),
         str(sh / "share-2.txt"), "-o", str(tmp_path / "no.bin")],
    ], XDG_RUNTIME_DIR=str(tmp_path))
    assert [s["code"] for s in r] == [0, 0, 0, 0, 0, 0, 1], r
    assert "SEALED: 2-of-3" in r[1]["out"] and "audit-signing.key" in r[1]["out"]
    assert "unsealed 1 file(s)" in r[2]["out"]
    assert '"sealed": false' in r[3]["out"]
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    assert "2 distinct share(s) given, 3 needed" in r[6]["err"]
    assert (out / "share-1.txt").stat().st_mode & 0o777 == 0o600
