"""Private sum across parties (secure multi-party computation by additive secret sharing).

Use: several bastion nodes learn the *total* of a number each holds (tool calls served,
tokens used, denied calls) without any node learning another's number.

Protocol, for ``n`` parties with inputs ``x_i`` (integers, ``|x_i| < 2^125``), modulus the
Mersenne prime ``p = 2^127 - 1``:

1. party ``i`` draws ``r_ij`` uniformly for every other party ``j``, keeps
   ``s_ii = x_i - Σ_j r_ij mod p`` and sends ``r_ij`` to party ``j``;
2. party ``j`` adds what it kept and what it received: ``S_j = s_jj + Σ_i r_ij``, and sends
   ``S_j`` to everyone;
3. everyone outputs ``Σ_j S_j mod p`` (= ``Σ x_i``, read as a signed number).

Channels: each pair derives a key with X25519 (static keys, public keys exchanged out of band)
and HKDF-SHA256 bound to the session id and both party ids; every message is ChaCha20-Poly1305
sealed with a nonce unique to (round, sender, receiver) and its header as additional data.
So an outsider on the network can neither read nor forge nor replay (across sessions) a
message. Primitives are ``cryptography``'s; the composition is this module.

Threat model, plainly: **semi-honest** parties (they follow the protocol but may be curious).
Any coalition of up to ``n - 1`` parties learns nothing beyond its own inputs and the sum.
A *malicious* party can make the sum wrong (there is no verifiability) or abort (any party
failing aborts the run: no partial result). Use a fresh session id per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion._extras import require
from bastion.errors import CryptoError

__all__ = ["MODULUS", "Party", "Peer", "load_or_create_key", "private_sum"]

MODULUS = (1 << 127) - 1
_MAX_FRAME = 4096


@dataclass(frozen=True, slots=True)
class Peer:
    """Another party: its id, where it listens and its X25519 public key (hex)."""

    pid: int
    host: str
    port: int
    public_key: str


@dataclass(slots=True)
class Party:
    """The local party: id, listen address and X25519 private key (raw 32 bytes)."""

    pid: int
    host: str
    port: int
    private_key: bytes

    def public_key(self) -> str:
        """Return this party's X25519 public key (hex)."""
        x = require("cryptography.hazmat.primitives.asymmetric.x25519", extra="secrets",
                    feature="MPC")
        ser = require("cryptography.hazmat.primitives.serialization", extra="secrets",
                      feature="MPC")
        key = x.X25519PrivateKey.from_private_bytes(self.private_key)
        return bytes(key.public_key().public_bytes(ser.Encoding.Raw,
                                                   ser.PublicFormat.Raw)).hex()


def load_or_create_key(path: Path) -> bytes:
    """Return the X25519 private key in ``path`` (hex), creating it (0600) if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_bytes(32).hex())
    return bytes.fromhex(path.read_text().strip())


def _pair_key(me: Party, peer: Peer, session: str) -> bytes:
    x = require("cryptography.hazmat.primitives.asymmetric.x25519", extra="secrets",
                feature="MPC")
    hkdf = require("cryptography.hazmat.primitives.kdf.hkdf", extra="secrets", feature="MPC")
    hashes = require("cryptography.hazmat.primitives.hashes", extra="secrets", feature="MPC")
    try:
        shared = x.X25519PrivateKey.from_private_bytes(me.private_key).exchange(
            x.X25519PublicKey.from_public_bytes(bytes.fromhex(peer.public_key)))
    except ValueError as exc:
        raise CryptoError(f"party {peer.pid} has an invalid public key",
                          fix="copy it again from its `bastion crypto mpc-sum --show-key`"
                          ) from exc
    lo, hi = sorted((me.pid, peer.pid))
    info = f"bastion-mpc-sum/v1|{session}|{lo}|{hi}".encode()
    return bytes(hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                           info=info).derive(shared))


def _nonce(round_: int, sender: int, receiver: int) -> bytes:
    return struct.pack(">IIi", round_, sender, receiver)


class _Mailbox:
    def __init__(self) -> None:
        self.frames: dict[tuple[int, int], dict[str, Any]] = {}
        self.aborted: dict[int, str] = {}
        self.changed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            size = struct.unpack(">I", await reader.readexactly(4))[0]
            if size <= _MAX_FRAME:
                frame = json.loads(await reader.readexactly(size))
                if frame.get("abort"):  # unauthenticated: it can only stop the run early
                    self.aborted[int(frame["from"])] = str(frame["abort"])[:200]
                else:
                    self.frames[(int(frame["round"]), int(frame["from"]))] = frame
                self.changed.set()
        except (asyncio.IncompleteReadError, ValueError, KeyError, TypeError):
            pass  # a malformed or partial frame is ignored; the run times out instead
        except asyncio.CancelledError:
            # the run ended while a peer was still sending (e.g. its abort note). Python 3.11's
            # stream server calls task.exception() on a cancelled handler and prints a
            # traceback, so the handler ends quietly instead.
            pass
        finally:
            writer.close()

    async def take(self, round_: int, sender: int, deadline: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while (round_, sender) not in self.frames:
            if self.aborted:
                who, why = next(iter(self.aborted.items()))
                raise CryptoError(f"party {who} aborted the run: {why}")
            left = deadline - loop.time()
            if left <= 0:
                raise CryptoError(f"party {sender} sent nothing for round {round_}",
                                  fix="start every party with the same --session; check ports")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                continue
        return self.frames.pop((round_, sender))


async def _send(peer: Peer, frame: dict[str, Any], deadline: float,
                box: _Mailbox | None = None) -> None:
    data = json.dumps(frame).encode()
    loop = asyncio.get_running_loop()
    while True:
        try:
            _, writer = await asyncio.open_connection(peer.host, peer.port)
            break
        except OSError as exc:
            if box is not None and box.aborted:  # it left because someone aborted the run
                who, why = next(iter(box.aborted.items()))
                raise CryptoError(f"party {who} aborted the run: {why}") from exc
            if loop.time() > deadline:
                raise CryptoError(f"party {peer.pid} at {peer.host}:{peer.port} is unreachable",
                                  fix="start it, or check its address") from exc
            await asyncio.sleep(0.05)  # it may not be listening yet
    writer.write(struct.pack(">I", len(data)) + data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def private_sum(me: Party, peers: list[Peer], value: int, session: str, *,
                      timeout_s: float = 30.0) -> int:
    """Run the protocol as ``me`` with ``peers``; return the sum of every party's value."""
    aead = require("cryptography.hazmat.primitives.ciphers.aead", extra="secrets",
                   feature="MPC")
    if abs(value) >= 1 << 125:
        raise CryptoError("the value is too large for the private sum")
    ids = [me.pid] + [p.pid for p in peers]
    if len(set(ids)) != len(ids):
        raise CryptoError("party ids must be distinct", fix="give every party its own --party")
    keys = {p.pid: aead.ChaCha20Poly1305(_pair_key(me, p, session)) for p in peers}
    box = _Mailbox()
    server = await asyncio.start_server(box.handle, me.host, me.port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    def seal(peer: Peer, round_: int, number: int) -> dict[str, Any]:
        header = f"{session}|{round_}|{me.pid}|{peer.pid}".encode()
        ct = keys[peer.pid].encrypt(_nonce(round_, me.pid, peer.pid),
                                    number.to_bytes(16, "big"), header)
        return {"round": round_, "from": me.pid, "ct": ct.hex()}

    def open_(peer: Peer, frame: dict[str, Any], round_: int) -> int:
        header = f"{session}|{round_}|{peer.pid}|{me.pid}".encode()
        try:
            plain = keys[peer.pid].decrypt(_nonce(round_, peer.pid, me.pid),
                                           bytes.fromhex(frame["ct"]), header)
        except Exception:
            # from None: it could hold key material
            raise CryptoError(f"message from party {peer.pid} failed authentication",
                              fix="check its public key and the session id") from None
        return int.from_bytes(plain, "big") % MODULUS

    try:
        # round 1: shares of my value
        shares = {p.pid: secrets.randbelow(MODULUS) for p in peers}
        kept = (value - sum(shares.values())) % MODULUS
        await asyncio.gather(*(_send(p, seal(p, 1, shares[p.pid]), deadline, box)
                               for p in peers))
        partial = kept
        for p in peers:
            partial = (partial + open_(p, await box.take(1, p.pid, deadline), 1)) % MODULUS
        # round 2: publish partial sums (each is uniformly random on its own)
        await asyncio.gather(*(_send(p, seal(p, 2, partial), deadline, box) for p in peers))
        total = partial
        for p in peers:
            total = (total + open_(p, await box.take(2, p.pid, deadline), 2)) % MODULUS
    except CryptoError as exc:  # tell the others at once instead of letting them time out
        note = {"round": 0, "from": me.pid, "abort": exc.message}
        soon = loop.time() + 2
        await asyncio.gather(*(_send(p, note, soon) for p in peers), return_exceptions=True)
        raise
    finally:
        server.close()
        await server.wait_closed()
    return total - MODULUS if total > MODULUS // 2 else total
