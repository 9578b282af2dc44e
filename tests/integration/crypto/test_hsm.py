"""A real SoftHSM2 token: keys generated inside it sign the audit log; CLI end to end."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.crypto.keys import FileSigner, verify
from bastion.crypto.pkcs11 import Pkcs11Signer, token_info
from bastion.errors import CryptoError
from bastion.security.audit import AuditLog
from tests.integration.crypto.conftest import SoftHsm, require_softhsm


@pytest.mark.parametrize(("key_type", "algorithm"),
                         [("ed25519", "ed25519"), ("ec-p256", "ecdsa-p256")])
def test_token_keys_sign_and_never_leave(softhsm: SoftHsm, key_type: str,
                                         algorithm: str) -> None:
    label = f"k-{key_type}"
    signer = Pkcs11Signer(softhsm.module, "keys", softhsm.pin, label, key_type=key_type)  # type: ignore[arg-type]
    assert signer.algorithm == algorithm
    sig = signer.sign(b"checkpoint 42")
    assert verify(signer.public_hex, b"checkpoint 42", sig)
    assert not verify(signer.public_hex, b"checkpoint 43", sig)
    forged = sig[:-2] + ("00" if sig[-2:] != "00" else "01")
    assert not verify(signer.public_hex, b"checkpoint 42", forged)
    signer.close()
    # Opening again finds the same key instead of making another.
    again = Pkcs11Signer(softhsm.module, "keys", softhsm.pin, label, create=False)
    assert again.public_hex == signer.public_hex
    again.close()
    keys = {k["label"]: k for k in token_info(softhsm.module, "keys", softhsm.pin).keys}
    assert keys[label]["extractable"] is False and keys[label]["sensitive"] is True


def test_wrong_pin_and_missing_token_refused(softhsm: SoftHsm) -> None:
    with pytest.raises(CryptoError, match="PIN .* is wrong"):
        Pkcs11Signer(softhsm.module, "keys", "0000-wrong", "k")
    with pytest.raises(CryptoError, match="no PKCS#11 token labelled 'nope'"):
        Pkcs11Signer(softhsm.module, "nope", softhsm.pin, "k")
    with pytest.raises(CryptoError, match="no key 'absent'"):
        Pkcs11Signer(softhsm.module, "keys", softhsm.pin, "absent", create=False)


def test_audit_log_moves_from_file_key_to_hsm(softhsm: SoftHsm, tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    log = AuditLog(db, checkpoint_every=2)
    for i in range(3):
        log.record("tool_call", tool="shell", decision="allowed", detail={"i": i})
    log.close()
    file_key = FileSigner(tmp_path / "audit-signing.key").public_hex
    hsm = Pkcs11Signer(softhsm.module, "audit", softhsm.pin, "audit-key", key_type="ec-p256")
    log = AuditLog(db, checkpoint_every=2, signer=hsm, trust_signer=True)
    for i in range(4):
        log.record("tool_call", tool="shell", decision="denied", detail={"i": i})
    assert log.verify().ok, log.verify().reason
    log.close()
    trusted = (tmp_path / "audit-signing.pub").read_text().split()
    assert trusted == [file_key, hsm.public_hex] and hsm.public_hex.startswith("p256:")
    conn = sqlite3.connect(db)
    kinds = [r[0] for r in conn.execute("SELECT kind FROM events")]
    keys = {r[0] for r in conn.execute("SELECT public_key FROM checkpoints")}
    conn.close()
    assert "audit.key_trusted" in kinds and keys == {file_key, hsm.public_hex}
    from bastion.security.audit import verify as verify_log

    only_file = verify_log(db, file_key)  # the HSM-signed checkpoints need the HSM key
    assert not only_file.ok and "invalid signature" in only_file.reason
    conn = sqlite3.connect(db)
    conn.execute("UPDATE head SET ts = ts + 1")  # re-dated head: its HSM signature no longer fits
    conn.commit()
    conn.close()
    rep = verify_log(db)
    assert not rep.ok and "head has an invalid signature" in rep.reason
    hsm.close()


def run_cli(home: Path, steps: list[list[str]], **env: str) -> list[dict[str, Any]]:
    """Run ``bastion`` commands in one fresh process (see _cli_driver.py)."""
    full = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    full.update(BASTION_HOME=str(home), **env)
    r = subprocess.run([sys.executable, "-m", "tests.integration.crypto._cli_driver"],
                       input=json.dumps(steps), env=full, capture_output=True, text=True,
                       timeout=120, check=False, cwd=Path(__file__).parents[3])
    assert r.returncode == 0, r.stderr
    out: list[dict[str, Any]] = json.loads(r.stdout)
    return out


WRITE = ("from bastion.config.loader import load\n"
         "from bastion.security.setup import build_audit\n"
         "from bastion.security.redact import Redactor\n"
         "log = build_audit(load(), Redactor())\n"
         "for i in range(5):\n"
         "    log.record('tool_call', tool='shell', risk='high',"
         " decision='denied' if i in (1, 3) else 'allowed')\n"
         "log.close()\n")


def test_cli_hsm_signs_audit_and_proofs(tmp_path: Path) -> None:
    """hsm init/keygen/status, an HSM-signed log, audit verify, prove and verify-proof."""
    require_softhsm()
    home = tmp_path / "home"
    home.mkdir()
    (home / "bastion.yaml").write_text(
        "audit:\n  signer: pkcs11\n  checkpoint_every: 2\n"
        "crypto:\n  hsm:\n    pin: secret://env/hsm_pin\n    key_type: ed25519\n")
    proof, count = tmp_path / "p.json", tmp_path / "c.json"
    r = run_cli(home, [
        ["crypto", "hsm", "init", "--so-pin-ref", "secret://env/so_pin"],
        ["crypto", "hsm", "keygen"],
        ["crypto", "hsm", "keygen"],
        ["crypto", "hsm", "status", "--json"],
        ["py", WRITE],
        ["audit", "verify"],
        ["audit", "prove", "2", "-o", str(proof)],
        ["audit", "verify-proof", str(proof)],
        ["audit", "prove", "--count", "denied", "-o", str(count)],
        ["audit", "verify-proof", str(count)],
    ], BASTION_SECRET_HSM_PIN="9753", BASTION_SECRET_SO_PIN="8642")
    assert [s["code"] for s in r] == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0], r
    assert "generated ed25519 key" in r[1]["out"]
    public = r[1]["out"].split("public key: ")[1].split()[0]
    assert "already holds key" in r[2]["err"]  # never a second key under one label
    st = json.loads(r[3]["out"])
    assert st["keys"] == [{"label": "bastion-audit", "type": "EC_EDWARDS",
                           "extractable": False, "sensitive": True}]
    assert (home / "audit" / "audit-signing.pub").read_text().split() == [public]
    assert "ok: 5 records, 2 signed checkpoints" in r[5]["out"]
    assert "record 2 is record 2 of 5" in r[7]["out"]
    assert "2 of 5 records 1..5 match 'denied'" in r[9]["out"]
    bundle = json.loads(proof.read_text())
    bundle["record"]["decision"] = "allowed"  # rewrite the disclosed record
    proof.write_text(json.dumps(bundle))
    r = run_cli(home, [["audit", "verify-proof", str(proof)], ["crypto", "hsm", "keygen"]],
                BASTION_SECRET_HSM_PIN="1111")
    assert r[0]["code"] == 2 and "not in the signed tree" in r[0]["out"]
    assert r[1]["code"] == 1 and "PIN for token 'bastion' is wrong" in r[1]["err"]


def test_keygen_pins_the_hsm_key_next_to_the_pinned_file_key(tmp_path: Path) -> None:
    """With keys pinned (bastion init), a log that moves to the HSM verifies against pins only."""
    require_softhsm()
    from bastion.crypto.keys import FileSigner, fingerprint

    home = tmp_path / "home"
    (home / "audit").mkdir(parents=True)
    file_fp = fingerprint(FileSigner(home / "audit" / "audit-signing.key").public_hex, 32)
    (home / "bastion.yaml").write_text(
        f"audit:\n  key_fingerprints: [{file_fp}]\n"
        "crypto:\n  hsm:\n    pin: secret://env/hsm_pin\n    key_type: ed25519\n")
    first = WRITE.replace("range(5)", "range(2)")  # signed by the pinned key file
    r = run_cli(home, [
        ["py", first],
        ["crypto", "hsm", "init", "--so-pin-ref", "secret://env/so_pin"],
        ["crypto", "hsm", "keygen"],
        ["config", "set", "audit.signer", "pkcs11"],
        ["py", WRITE],
        ["audit", "verify"],
    ], BASTION_SECRET_HSM_PIN="9753", BASTION_SECRET_SO_PIN="8642")
    assert [s["code"] for s in r] == [0, 0, 0, 0, 0, 0], r
    assert "pinned for audit verify" in r[2]["out"]
    pins = yaml.safe_load((home / "bastion.yaml").read_text())["audit"]["key_fingerprints"]
    assert len(pins) == 2 and pins[0] == file_fp
    # 7 records + audit.key_trusted
    assert r[5]["out"].startswith("ok: 8 records") and "not pinned" not in r[5]["out"]
