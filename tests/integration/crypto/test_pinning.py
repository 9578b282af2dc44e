"""Certificate pinning against real local TLS servers with self-signed keys we generate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.crypto import pinning
from bastion.llm.http import PROFILES, HttpModel
from bastion.messages import Message
from bastion.tools.builtin.web import DirectFetcher


def _cert(tmp: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    # distinct subjects: OpenSSL finds a trust anchor by subject name
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bastion-test-{name}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


class _Server:
    def __init__(self, crt: Path, key: Path) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: bytes, ctype: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                seen.append(f"GET {self.path} auth={self.headers.get('Authorization')}")
                self._send(b"pinned hello", "text/plain")

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                req = json.loads(self.rfile.read(n))
                seen.append(f"POST {self.path} auth={self.headers.get('Authorization')}")
                msg = {"role": "assistant", "content": "hi over a pinned channel"}
                if req.get("stream"):
                    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
                             "choices": [{"index": 0, "delta": msg, "finish_reason": "stop"}]}
                    self._send(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(),
                               "text/event-stream")
                else:
                    self._send(json.dumps({"id": "c", "object": "chat.completion", "model": "m",
                                           "choices": [{"index": 0, "message": msg,
                                                        "finish_reason": "stop"}]}).encode(),
                               "application/json")

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[_Server, _Server, str]]:
    crt_a, key_a = _cert(tmp_path, "a")
    crt_b, key_b = _cert(tmp_path, "b")
    bundle = tmp_path / "trust.pem"  # both are trusted CAs: only the pin tells them apart
    bundle.write_bytes(crt_a.read_bytes() + crt_b.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    a, b = _Server(crt_a, key_a), _Server(crt_b, key_b)
    pin_a = pinning.pin_for_der(ssl.PEM_cert_to_DER_cert(crt_a.read_text()))
    yield a, b, pin_a
    pinning.configure({})
    for s in (a, b):
        s.httpd.shutdown()
        s.httpd.server_close()


def test_pin_helper_reads_the_served_key(servers: tuple[_Server, _Server, str]) -> None:
    a, b, pin_a = servers
    assert pinning.fetch_pin("127.0.0.1", a.port) == pin_a
    assert pinning.fetch_pin("127.0.0.1", b.port) != pin_a
    with pytest.raises(Exception, match="malformed pin|unsupported pin"):
        pinning.configure({"localhost": ["sha1/abc"]})


def test_model_client_pinned_ok_and_wrong_key_refused(
        servers: tuple[_Server, _Server, str]) -> None:
    a, b, pin_a = servers
    pinning.configure({"localhost": [pin_a]})

    async def ask(port: int) -> str:
        model = HttpModel("m", quirks=PROFILES["openai"], api_key="sk-pinned-secret",
                          base_url=f"https://localhost:{port}/v1")
        try:
            out = []
            async for ev in model.chat([Message(role="user", content="hi")]):
                out.append(getattr(ev, "text", ""))
            return "".join(out)
        finally:
            await model.aclose()

    assert "hi over a pinned channel" in asyncio.run(ask(a.port))
    assert a.requests and "sk-pinned-secret" in a.requests[0]
    with pytest.raises(pinning.CertificatePinError, match=f"pin mismatch for localhost:{b.port}"):
        asyncio.run(ask(b.port))
    assert b.requests == []  # not one byte of the request (nor the API key) reached it


def test_web_fetch_pinned_per_port(servers: tuple[_Server, _Server, str]) -> None:
    a, b, pin_a = servers
    fetch = DirectFetcher(allow_private=True)
    pinning.configure({f"localhost:{a.port}": [pin_a], f"localhost:{b.port}": [pin_a]})
    status, _, text = asyncio.run(fetch.get(f"https://localhost:{a.port}/x", max_bytes=1000))
    assert status == 200 and text == "pinned hello"
    with pytest.raises(pinning.CertificatePinError, match="expected sha256/"):
        asyncio.run(fetch.get(f"https://localhost:{b.port}/x", max_bytes=1000))
    assert b.requests == []
    pinning.configure({})  # unpinned: CA verification alone accepts either server
    assert asyncio.run(fetch.get(f"https://localhost:{b.port}/y", max_bytes=100))[0] == 200
    with httpx.Client() as c:  # sanity: the CA bundle is what made B acceptable
        assert c.get(f"https://localhost:{b.port}/z").status_code == 200
