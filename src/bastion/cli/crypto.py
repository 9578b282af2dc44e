"""``bastion crypto ...`` (HSM, sealing, Shamir, MPC) and ``bastion audit prove|verify-proof``.

- ``crypto hsm init|status|keygen``: a PKCS#11 token for the audit signing key;
- ``crypto seal|unseal|lock|status|reseal``: key files encrypted at rest under a t-of-n
  Shamir-shared key;
- ``crypto split|combine``: share any file t-of-n;
- ``crypto mpc-sum``: a private sum across parties (see :mod:`bastion.crypto.mpc`);
- ``audit prove ID`` / ``audit prove --count PREDICATE`` / ``audit verify-proof FILE``;
- ``secrets rotate NAME [--emergency]`` / ``secrets retire``.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._options import JsonOpt
from bastion.cli._options import load_config as _config
from bastion.errors import CryptoError

crypto_app = typer.Typer(help="HSM signing, sealed keys, Shamir shares, MPC.",
                         no_args_is_help=True)
hsm_app = typer.Typer(help="The PKCS#11 token (HSM) that signs the audit log.",
                      no_args_is_help=True)
crypto_app.add_typer(hsm_app, name="hsm")



def manifest_path() -> Path:
    """Return where the sealed-set manifest lives."""
    from bastion.config import paths

    return paths.home() / "sealed.json"


def _secret(ref: str) -> str:
    from bastion.security.secrets.factory import build_backends
    from bastion.security.secrets.resolver import SecretResolver

    return SecretResolver(build_backends(_config())).resolve(ref)


# ---- hsm -------------------------------------------------------------------------------------
@hsm_app.command("init")
def hsm_init(
    so_pin_ref: Annotated[str | None, typer.Option(
        "--so-pin-ref", help="secret:// reference to the security-officer PIN (default: prompt)")]
    = None,
) -> None:
    """Create the SoftHSM2 token of crypto.hsm (other tokens: use the vendor's tool)."""
    from bastion.crypto.pkcs11 import init_softhsm_token, softhsm_conf
    from bastion.security.signing import hsm_pin, softhsm_dir

    cfg = _config()
    h = cfg.crypto.hsm
    if "softhsm" not in Path(h.module).name:
        raise CryptoError(f"bastion initialises SoftHSM2 tokens only; {h.module} is another "
                          "token", fix="initialise it with its vendor's tool (tpm2_ptool, "
                          "yubihsm-shell, pkcs11-tool --init-token), then run hsm keygen")
    pin = hsm_pin(cfg)
    if so_pin_ref:
        so_pin = _secret(so_pin_ref)
    elif sys.stdin.isatty():
        so_pin = getpass.getpass("new SO PIN (security officer; hidden): ")
    else:
        raise CryptoError("the token's new security-officer (SO) PIN is asked at a hidden "
                          "prompt, and there is no terminal",
                          fix="bastion crypto hsm init --so-pin-ref secret://env/hsm_so_pin "
                          "(with $BASTION_SECRET_HSM_SO_PIN set), or run it in a terminal")
    conf = Path(os.environ.get("SOFTHSM2_CONF") or softhsm_conf(softhsm_dir(cfg)))
    init_softhsm_token(conf, h.token_label, pin, so_pin)
    typer.echo(f"initialised token {h.token_label!r} (SoftHSM2, config {conf})")


@hsm_app.command("keygen")
def hsm_keygen() -> None:
    """Generate the signing key inside the token (non-extractable); print its public key."""
    from bastion.crypto.keys import fingerprint
    from bastion.crypto.pkcs11 import Pkcs11Signer, prepare_module
    from bastion.security.signing import hsm_pin, softhsm_dir

    cfg = _config()
    h = cfg.crypto.hsm
    prepare_module(h.module, softhsm_dir(cfg))
    pin = hsm_pin(cfg)
    try:
        Pkcs11Signer(h.module, h.token_label, pin, h.key_label, create=False).close()
    except CryptoError as exc:
        if "no key" not in exc.message:
            raise
    else:
        raise CryptoError(f"the token already holds key {h.key_label!r}",
                          fix="use it (audit.signer: pkcs11) or pick another crypto.hsm.key_label")
    signer = Pkcs11Signer(h.module, h.token_label, pin, h.key_label, key_type=h.key_type)
    typer.echo(f"generated {signer.algorithm} key {h.key_label!r} inside token "
               f"{h.token_label!r}\npublic key: {signer.public_hex}\n"
               f"fingerprint: {fingerprint(signer.public_hex)}")
    pins = cfg.audit.key_fingerprints
    if pins:  # the user pins audit keys (bastion init did): trust this one too, from now on
        from bastion.config.loader import set_key

        fp = fingerprint(signer.public_hex, 32)
        set_key(None, "audit.key_fingerprints", json.dumps([*pins, fp]))
        typer.echo(f"pinned for audit verify: audit.key_fingerprints += {fp}")
    signer.close()


@hsm_app.command("status")
def hsm_status(as_json: JsonOpt = False) -> None:
    """Show the token, its mechanisms and keys (with the PIN, when configured)."""
    from dataclasses import asdict

    from bastion.crypto.pkcs11 import prepare_module, token_info
    from bastion.security.signing import hsm_pin, softhsm_dir

    cfg = _config()
    h = cfg.crypto.hsm
    prepare_module(h.module, softhsm_dir(cfg))
    info = token_info(h.module, h.token_label, hsm_pin(cfg) if h.pin else None)
    data = {**asdict(info), "audit_signer": cfg.audit.signer}
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"token {info.token!r}: {info.manufacturer} {info.model} serial {info.serial}")
    typer.echo(f"library: {info.library} ({info.module})")
    typer.echo(f"mechanisms: {', '.join(info.mechanisms)}")
    for k in info.keys:
        typer.echo(f"key {k['label']!r}: {k['type']}, extractable={k['extractable']}, "
                   f"sensitive={k['sensitive']}")
    typer.echo(f"audit.signer: {cfg.audit.signer}")


# ---- sealing ---------------------------------------------------------------------------------
def default_seal_targets() -> list[Path]:
    """Return the key files sealed by default: audit signing and commit keys, the age key."""
    from bastion.config import paths
    from bastion.security.audit_proofs import commit_key_path
    from bastion.security.setup import audit_path

    cfg = _config()
    db = audit_path()
    age = cfg.secrets.sops.identity_file or paths.home() / "secrets" / "age.key"
    return [p for p in (db.with_name(db.stem + "-signing.key"), commit_key_path(db), Path(age))
            if p.exists()]


def _write_shares(shares: list[str], out_dir: Path | None) -> None:
    if out_dir is None:
        for s in shares:
            typer.echo(s)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(shares, 1):
        fd = os.open(out_dir / f"share-{i}.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(s + "\n")
    typer.echo(f"wrote {len(shares)} shares to {out_dir}/share-N.txt: give each to a "
               "different person and delete them here", err=True)


def _read_shares(files: list[Path], needed: int | None) -> list[str]:
    shares = [f.read_text().strip() for f in files]
    if not shares and not sys.stdin.isatty():
        shares = [line.strip() for line in sys.stdin if line.strip()]
    while needed is not None and len(shares) < needed and sys.stdin.isatty():
        shares.append(getpass.getpass(f"share {len(shares) + 1} of {needed} (hidden): ").strip())
    return shares


ThresholdOpt = Annotated[int, typer.Option("--threshold", "-t", min=2, help="shares needed")]
SharesOpt = Annotated[int, typer.Option("--shares", "-n", min=2, max=255, help="shares made")]
OutDirOpt = Annotated[Path | None, typer.Option(
    "--out-dir", help="write share-N.txt files (0600) instead of printing")]
ShareFiles = Annotated[list[Path] | None, typer.Argument(
    help="files holding one share each (default: prompt, or stdin lines)",
    exists=True, dir_okay=False, readable=True)]


@crypto_app.command("seal")
def seal_cmd(
    threshold: ThresholdOpt = 3, shares: SharesOpt = 5, out_dir: OutDirOpt = None,
    files: Annotated[list[Path] | None, typer.Option(
        "--file", help="key file to seal (default: audit signing + commit keys, age identity)")]
    = None,
) -> None:
    """Encrypt key files at rest under a new t-of-n share set (prints the shares once)."""
    from bastion.crypto.sealed import seal

    targets = files or default_seal_targets()
    if not targets:
        raise CryptoError("no key files to seal yet", fix="run bastion once so keys exist")
    printed = seal(targets, threshold, shares, manifest_path())
    typer.echo(f"sealed {len(targets)} file(s) {threshold}-of-{shares}: "
               + ", ".join(p.name for p in targets), err=True)
    _write_shares(printed, out_dir)


@crypto_app.command("unseal")
def unseal_cmd(
    share_files: ShareFiles = None,
    memory_only: Annotated[bool, typer.Option(
        "--check", help="only check the shares; keep nothing unsealed")] = False,
) -> None:
    """Recover the key from t shares and unseal the keys into memory-backed runtime storage."""
    from bastion.crypto.sealed import lock, status, unseal

    st = status(manifest_path())
    files = unseal(manifest_path(), _read_shares(share_files or [], st.get("threshold")),
                   persist=not memory_only)
    if memory_only:
        lock(manifest_path())
        typer.echo(f"shares are valid: they unseal {len(files)} file(s)")
    else:
        typer.echo(f"unsealed {len(files)} file(s): " + ", ".join(p.name for p in files))


@crypto_app.command("lock")
def lock_cmd() -> None:
    """Drop every unsealed copy: bastion is sealed again until the next unseal."""
    from bastion.crypto.sealed import lock

    typer.echo(f"locked: {lock(manifest_path())} unsealed copies wiped")


@crypto_app.command("reseal")
def reseal_cmd(share_files: ShareFiles = None, threshold: ThresholdOpt = 3,
               shares: SharesOpt = 5, out_dir: OutDirOpt = None) -> None:
    """Replace the share set (after a holder leaves): old shares stop working."""
    from bastion.crypto.sealed import reseal, status

    st = status(manifest_path())
    new = reseal(manifest_path(), _read_shares(share_files or [], st.get("threshold")),
                 threshold, shares)
    _write_shares(new, out_dir)


@crypto_app.command("status")
def status_cmd(as_json: JsonOpt = False) -> None:
    """Show whether bastion's keys are sealed."""
    from bastion.crypto.sealed import status

    st = status(manifest_path())
    if as_json:
        typer.echo(json.dumps(st))
        return
    if not st["files"]:
        typer.echo("not sealed (bastion crypto seal to seal the key files)")
        return
    typer.echo(f"{'SEALED' if st['sealed'] else 'unsealed'}: {st['threshold']}-of-"
               f"{st['shares']} shares (set {st['set_id']})")
    for f in st["files"]:
        typer.echo(f"  {f['state']:9} {f['path']}")


@crypto_app.command("split")
def split_cmd(
    file: Annotated[Path, typer.Argument(help="file to share (any size)", exists=True,
                                         dir_okay=False, readable=True)],
    threshold: ThresholdOpt = 3, shares: SharesOpt = 5, out_dir: OutDirOpt = None,
) -> None:
    """Split a file t-of-n: FILE.shamir.json (ciphertext) plus the printed shares."""
    from bastion.crypto.shamir import split_secret

    blob, printed = split_secret(file.read_bytes(), threshold, shares)
    out = file.with_name(file.name + ".shamir.json")
    out.write_text(json.dumps(blob, indent=2))
    typer.echo(f"wrote {out}", err=True)
    _write_shares(printed, out_dir)


@crypto_app.command("combine")
def combine_cmd(
    blob: Annotated[Path, typer.Argument(help="the .shamir.json file from split", exists=True,
                                         dir_okay=False, readable=True)],
    share_files: ShareFiles = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the secret")]
    = Path("-"),
) -> None:
    """Recover a split file from its .shamir.json and t shares (a bad share is named)."""
    from bastion.crypto.shamir import combine_secret

    data = json.loads(blob.read_text())
    secret = combine_secret(data, _read_shares(share_files or [],
                                               int(data.get("header", {}).get("threshold", 0))))
    if str(output) == "-":
        sys.stdout.buffer.write(secret)
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
        typer.echo(f"wrote {output} ({len(secret)} bytes)", err=True)


@crypto_app.command("pin")
def pin_cmd(
    target: Annotated[str, typer.Argument(help="HOST[:PORT] to read the key of, or a PEM file")],
) -> None:
    """Print the SPKI SHA-256 pin of a server's (or a PEM certificate's) key for crypto.tls_pins.

    Reading a pin from the network trusts that connection: compare it out of band.
    """
    import ssl

    from bastion.crypto.pinning import fetch_pin, pin_for_der

    path = Path(target)
    if path.is_file():
        try:
            der = ssl.PEM_cert_to_DER_cert(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CryptoError(f"{path} is not a PEM certificate",
                              fix="pass a file with -----BEGIN CERTIFICATE-----, or HOST:PORT"
                              ) from exc
        typer.echo(pin_for_der(der))
        return
    if "/" in target or path.suffix in (".pem", ".crt"):
        raise CryptoError(f"no certificate file at {path}",
                          fix="pass an existing PEM file, or HOST[:PORT] to read a server's key")
    host, _, port = target.rpartition(":") if ":" in target else (target, "", "443")
    typer.echo(fetch_pin(host, int(port)))


# ---- MPC -------------------------------------------------------------------------------------
def _metric(name: str) -> int:
    from bastion.security.audit import open_reader, stats
    from bastion.security.setup import audit_path

    path = audit_path()
    if not path.exists():
        return 0
    conn = open_reader(path)
    try:
        s = stats(conn)
    finally:
        conn.close()
    if name == "tool_calls":
        return int(s["by_kind"].get("tool_call", 0))
    if name in ("denied", "allowed", "error"):
        return int(s["by_decision"].get(name, 0))
    raise CryptoError(f"unknown metric {name!r}", fix="use tool_calls, denied, allowed or error")


@crypto_app.command("mpc-sum")
def mpc_sum_cmd(
    party: Annotated[int, typer.Option("--party", help="this party's id (distinct per party)")]
    = 0,
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT this party listens on")]
    = "127.0.0.1:7781",
    peer: Annotated[list[str] | None, typer.Option(
        "--peer", help="ID@HOST:PORT@PUBLICKEY of another party (repeat)")] = None,
    session: Annotated[str, typer.Option("--session", help="run id, the same for all parties")]
    = "",
    value: Annotated[int | None, typer.Option("--value", help="this party's private number")]
    = None,
    metric: Annotated[str | None, typer.Option(
        "--metric", help="use a local audit count as the value: tool_calls, denied, allowed")]
    = None,
    key: Annotated[Path | None, typer.Option("--key", help="X25519 key file (HOME/mpc.key)")]
    = None,
    show_key: Annotated[bool, typer.Option("--show-key", help="print the public key, exit")]
    = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds for the whole run")]
    = 60.0,
) -> None:
    """Sum private numbers across parties; each learns the total, not the others' values."""
    import asyncio

    from bastion.config import paths
    from bastion.crypto.mpc import Party, Peer, load_or_create_key, private_sum

    host, _, port = listen.rpartition(":")
    me = Party(party, host, int(port), load_or_create_key(key or paths.home() / "mpc.key"))
    if show_key:
        typer.echo(me.public_key())
        return
    if not peer or not session:
        raise CryptoError("an MPC run needs --peer for every other party and a --session",
                          fix="e.g. --peer 1@10.0.0.2:7781@<its public key> --session 2026-11-25")
    peers = []
    for spec in peer:
        try:
            pid, addr, pub = spec.split("@")
            h, _, pt = addr.rpartition(":")
            peers.append(Peer(int(pid), h, int(pt), pub))
        except ValueError as exc:
            raise CryptoError(f"cannot read --peer {spec!r}",
                              fix="write it as ID@HOST:PORT@PUBLICKEY") from exc
    if (value is None) == (metric is None):
        raise CryptoError("give exactly one of --value or --metric")
    mine = value if value is not None else _metric(str(metric))
    total = asyncio.run(private_sum(me, peers, mine, session, timeout_s=timeout))
    typer.echo(f"sum over {len(peers) + 1} parties: {total}")


# ---- secret rotation -------------------------------------------------------------------------
def _rotator(cfg: Any) -> Any:
    from bastion.config import paths
    from bastion.security.redact import Redactor
    from bastion.security.secrets.factory import build_backends
    from bastion.security.secrets.rotation import Rotator
    from bastion.security.setup import build_audit

    audit = build_audit(cfg, Redactor())
    return Rotator(build_backends(cfg), paths.home() / "secrets" / "rotation.json", audit=audit)


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError as exc:
        raise CryptoError(f"cannot read the duration {text!r}",
                          fix="use seconds or 30s, 15m, 2h, 7d") from exc


def rotate_cmd(
    path: Annotated[str, typer.Argument(help="secret path, e.g. app/db")],
    backend: Annotated[str | None, typer.Option(
        "--backend", "-b", help="vault or sops (default: secrets.default_backend)")] = None,
    key: Annotated[str, typer.Option("--key", "-k", help="key that gets a new value")]
    = "value",
    from_stdin: Annotated[bool, typer.Option(
        "--stdin", help="read the new value from stdin (default: generate 32 random bytes)")]
    = False,
    emergency: Annotated[bool, typer.Option(
        "--emergency", help="destroy the old version now, refuse its value, stop calls using "
        "it (through a running server with --api), audit a critical event")] = False,
    grace: Annotated[str, typer.Option("--grace", help="keep the old version this long")]
    = "1h",
    api: Annotated[bool, typer.Option(
        "--api", help="rotate through the running API server (stops its running calls)")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Rotate a secret: new version now, old one retired after --grace (or at once)."""
    cfg = _config()
    name = backend or cfg.secrets.default_backend
    value = sys.stdin.read().rstrip("\n") if from_stdin else None
    if from_stdin and not value:
        raise CryptoError("empty value on stdin", fix="pipe the new value in")
    if api:
        from pydantic import ValidationError

        from bastion.client import BastionClient, ServerUnreachable
        from bastion.server.schemas import RotateBody

        try:
            body = RotateBody(backend=name, path=path, key=key, value=value,  # type: ignore[arg-type]
                              emergency=emergency, grace_s=_seconds(grace))
        except ValidationError as exc:
            # from None: it quotes the new secret value
            raise CryptoError(f"cannot rotate through the API: {exc.errors()[0]['msg']}",
                              fix="the API rotates vault or sops secrets") from None
        try:
            with BastionClient.from_config(cfg) as client:
                result = client.rotate_secret(body).model_dump(mode="json")
        except ServerUnreachable as exc:
            raise CryptoError(exc.message, fix="start it with bastion serve, or rotate without "
                              "--api") from exc
    else:
        rot = _rotator(cfg)
        try:
            result = rot.rotate(name, path, key=key, value=value, grace_s=_seconds(grace),
                                emergency=emergency).to_dict()
        finally:
            rot.audit.close()
    if as_json:
        typer.echo(json.dumps(result))
    elif emergency:
        typer.secho(f"EMERGENCY rotation of {result['ref']}: version {result['new_version']} "
                    f"is current; destroyed {', '.join(result['destroyed']) or 'nothing'}; "
                    f"{result['stopped_calls']} running call(s) stopped", fg="red")
    else:
        typer.echo(f"rotated {result['ref']}: version {result['new_version']} is current; "
                   f"version {result['old_version']} is destroyed after {grace}")


def retire_cmd(as_json: JsonOpt = False) -> None:
    """Destroy old secret versions whose grace period is over; list the rest."""
    cfg = _config()
    rot = _rotator(cfg)
    try:
        done = rot.sweep()
        left = rot.pending()
    finally:
        rot.audit.close()
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps({"destroyed": [asdict(r) for r in done],
                               "pending": [asdict(r) for r in left]}))
        return
    for r in done:
        typer.echo(f"destroyed secret://{r.backend}/{r.path} version {r.version}")
    for r in left:
        typer.echo(f"pending   secret://{r.backend}/{r.path} version {r.version} "
                   f"(in {max(r.due - __import__('time').time(), 0):.0f}s)")


def register(app: typer.Typer) -> None:
    """Add ``bastion crypto ...``; audit.py and secrets.py add the proof and rotation commands."""
    app.add_typer(crypto_app, name="crypto")
