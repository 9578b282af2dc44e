"""Crypto costs: HSM vs file signing, audit checkpoints signed in an HSM, proofs vs log size.

Run: .venv/bin/python bench/crypto.py [--signs 2000] [--events 20000] [--sizes 1000,10000]

1. Sign/verify throughput: Ed25519 key file (``cryptography``) vs SoftHSM2 Ed25519 and
   SoftHSM2 ECDSA P-256 (keys inside the token, PKCS#11 round trip per signature), same run.
2. Audit log: events/s with checkpoints every 100 records signed by the key file vs the HSM.
3. Proofs: inclusion-proof generation/verification and a zero-knowledge count proof, vs the
   number of records in the log.

SoftHSM2 is a software token: a hardware HSM or TPM is slower per signature (TPMs often
10-100 ms); the HSM ratio here is the PKCS#11 overhead floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.crypto.keys import FileSigner, Signer, verify  # noqa: E402
from bastion.crypto.pkcs11 import (  # noqa: E402
    SOFTHSM_MODULE,
    Pkcs11Signer,
    init_softhsm_token,
    softhsm_conf,
)
from bastion.security.audit import AuditLog  # noqa: E402
from bastion.security.audit_proofs import prove_count, prove_event, verify_bundle  # noqa: E402


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10.0f}/s"


def bench_sign(signers: dict[str, Signer], n: int) -> dict[str, float]:
    out = {}
    msg = b"bastion-audit/checkpoint/123456/" + b"ab" * 32
    for name, s in signers.items():
        t = time.perf_counter()
        sigs = [s.sign(msg + str(i).encode()) for i in range(n)]
        ts = time.perf_counter() - t
        t = time.perf_counter()
        ok = all(verify(s.public_hex, msg + str(i).encode(), sig) for i, sig in enumerate(sigs))
        tv = time.perf_counter() - t
        assert ok
        out[name] = n / ts
        print(f"  {name:22} sign {rate(n, ts)}  verify {rate(n, tv)}")
    return out


def bench_audit(tmp: Path, signers: dict[str, Signer | None], events: int) -> None:
    base = None
    for name, s in signers.items():
        db = tmp / f"audit-{name}.db"
        log = AuditLog(db, checkpoint_every=100, durability="queued", signer=s,
                       trust_signer=s is not None)
        t = time.perf_counter()
        for i in range(events):
            log.record("tool_call", tool="shell", decision="allowed", risk="low",
                       arguments={"i": i})
        log.flush()
        dt = time.perf_counter() - t
        ok = log.verify().ok
        log.close()
        base = base or events / dt
        print(f"  {name:22} {rate(events, dt)}  ({events // 100} signed checkpoints, "
              f"verify ok={ok}, {events / dt / base:.2f}x of file key)")


def bench_proofs(tmp: Path, signer: Signer, sizes: list[int]) -> None:
    for n in sizes:
        db = tmp / f"proof-{n}.db"
        log = AuditLog(db, checkpoint_every=0, durability="queued", signer=signer)
        for i in range(n):
            log.record("tool_call", tool="shell", decision="denied" if i % 7 == 0 else "allowed")
        log.close()
        t = time.perf_counter()
        bundle = prove_event(db, n // 2, signer)
        tp = time.perf_counter() - t
        t = time.perf_counter()
        assert verify_bundle(bundle, [signer.public_hex])[0]
        tv = time.perf_counter() - t
        window = min(n, 1000)
        t = time.perf_counter()
        cb = prove_count(db, "denied", signer, first=n - window + 1, last=n)
        tc = time.perf_counter() - t
        t = time.perf_counter()
        assert verify_bundle(cb, [signer.public_hex])[0]
        tcv = time.perf_counter() - t
        print(f"  {n:>7} records: inclusion prove {tp * 1000:8.1f} ms verify {tv * 1000:6.2f} ms"
              f" ({len(bundle['path'])} hashes) | count over {window}: prove {tc:6.2f} s "
              f"verify {tcv:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signs", type=int, default=2000)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--sizes", default="1000,10000,50000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        conf = softhsm_conf(tmp / "hsm")
        init_softhsm_token(conf, "bench", "1234", "5678")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        file_signer = FileSigner(tmp / "file.key")
        hsm_ed = Pkcs11Signer(SOFTHSM_MODULE, "bench", "1234", "ed", key_type="ed25519")
        hsm_p256 = Pkcs11Signer(SOFTHSM_MODULE, "bench", "1234", "p256", key_type="ec-p256")
        print(f"1. sign/verify, {args.signs} messages")
        r = bench_sign({"file Ed25519": file_signer, "SoftHSM2 Ed25519": hsm_ed,
                        "SoftHSM2 ECDSA P-256": hsm_p256}, args.signs)
        print(f"  HSM/file signing ratio: Ed25519 {r['SoftHSM2 Ed25519'] / r['file Ed25519']:.2f}"
              f"x, P-256 {r['SoftHSM2 ECDSA P-256'] / r['file Ed25519']:.2f}x")
        print(f"2. audit log, {args.events} events, a signed checkpoint every 100")
        bench_audit(tmp, {"file key": None, "SoftHSM2 Ed25519": hsm_ed,
                          "SoftHSM2 P-256": hsm_p256}, args.events)
        print("3. proofs (file key), vs log size")
        bench_proofs(tmp, file_signer, [int(x) for x in args.sizes.split(",")])
        hsm_ed.close()
        hsm_p256.close()


if __name__ == "__main__":
    main()
