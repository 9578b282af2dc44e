"""The egress proxy's fast body relay (#18 speed), over real TLS on loopback sockets.

A real TLS server (Python's ``ssl``) stands in for the API, pyOpenSSL memory-BIO connections
(what mitmproxy hands the proxy) for the proxy's two legs, and a real TLS client reads what
the relay sent. Checked: exactly the announced bytes go on in order (not the bytes a lying
server adds), a body that ends short stays short, and a slow client pauses the server's reads
without losing or reordering anything. The relay inside the running proxy is checked by
``tests/security/test_i18_egress_protocol_filtering.py`` (a download through a sandbox).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytest.importorskip("OpenSSL", reason="pip install 'bastion[egress-proxy]'")

from OpenSSL import SSL  # noqa: E402

from bastion.security.egress._relay import BodyRelay  # noqa: E402


def _cert(tmp: Path) -> tuple[Any, Any, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert, key, tmp / "c.pem", tmp / "k.pem"


async def _handshake(conn: Any, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            conn.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        try:
            while True:
                writer.write(conn.bio_read(1 << 16))
        except SSL.WantReadError:
            pass
        if done:
            return
        data = await reader.read(1 << 16)
        assert data, "the peer closed during the handshake"
        conn.bio_write(data)


def _unverified_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback stand-ins: the relay is checked, not the PKI
    return ctx


async def _relay(tmp: Path, body: bytes, left: int, *, close_early: bool = False,
                 slow_client: bool = False) -> tuple[bytes, BodyRelay]:
    """Serve ``body`` over TLS, relay ``left`` bytes of it; return what the client got."""
    cert, key, cert_file, key_file = _cert(tmp)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)

    async def origin(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for i in range(0, len(body), 1 << 16):
            w.write(body[i:i + (1 << 16)])
            await w.drain()
        if close_early:
            w.close()
        else:
            await asyncio.sleep(30)  # keep-alive: the relay must stop by the count

    api = await asyncio.start_server(origin, "127.0.0.1", 0, ssl=server_ctx)
    srv_reader, srv_writer = await asyncio.open_connection(
        "127.0.0.1", api.sockets[0].getsockname()[1])
    up = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    up.set_connect_state()
    await _handshake(up, srv_reader, srv_writer)

    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
        asyncio.get_running_loop().create_future()

    async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result((r, w))

    front = await asyncio.start_server(on_client, "127.0.0.1", 0)
    sock = socket.socket()
    if slow_client:  # small socket buffers: the relay soon finds the client's side full
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(("127.0.0.1", front.sockets[0].getsockname()[1]))
    client = asyncio.ensure_future(asyncio.open_connection(
        sock=sock, ssl=_unverified_client(), server_hostname="localhost"))
    cli_reader, cli_writer = await accepted
    if slow_client:
        cli_writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                       1 << 16)
    down_ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    down_ctx.use_certificate(cert)
    down_ctx.use_privatekey(key)
    down = SSL.Connection(down_ctx, None)
    down.set_accept_state()
    await _handshake(down, cli_reader, cli_writer)
    reader, _writer = await client

    async def read_all() -> bytes:
        if slow_client:
            await asyncio.sleep(0.3)  # the relay meets a full socket and pauses
        out = bytearray()
        while chunk := await reader.read(1 << 16):
            out += chunk
            if slow_client:
                await asyncio.sleep(0.001)
        return bytes(out)

    got = asyncio.ensure_future(read_all())
    relay = BodyRelay(left, up, down, srv_writer, cli_writer, lambda: None)
    await asyncio.wait_for(relay.run(srv_reader), 20)
    cli_writer.close()  # as the proxy does once the body went (Connection: close)
    try:
        data = await asyncio.wait_for(got, 20)
    finally:
        srv_writer.close()
        api.close()
        front.close()
    return data, relay


def test_exactly_the_announced_bytes_go_on_in_order(tmp_path: Path) -> None:
    body = b"".join(hashlib.sha256(b"%d" % i).digest() * 64 for i in range(2000))  # 4 MB
    left = len(body) - 5000  # the server sends more than it announced: those stay behind
    got, relay = asyncio.run(_relay(tmp_path, body, left))
    assert len(got) == left
    assert got == body[:left]
    assert relay.left == 0


def test_a_body_that_ends_short_stays_short(tmp_path: Path) -> None:
    body = b"x" * 700_000
    got, relay = asyncio.run(_relay(tmp_path, body, 2_000_000, close_early=True))
    assert got == body  # nothing made up, and the client sees a short body
    assert relay.left == 2_000_000 - len(body)


def test_a_slow_client_pauses_the_server_without_loss(tmp_path: Path) -> None:
    body = b"".join(b"%09d\n" % i for i in range(300_000))  # 3 MB, every line numbered
    got, relay = asyncio.run(_relay(tmp_path, body, len(body), slow_client=True))
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert relay.left == 0
    assert relay.pauses > 0  # the server's reads did wait for the client
