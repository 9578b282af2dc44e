"""F22 (web_fetch): a hostile web server or a model-chosen address must not make bastion's own
process buffer gigabytes, fetch forever, or reach a non-public address.

The attacks run against a real HTTP server in a subprocess on loopback (so its memory is not
counted as bastion's); the fetcher is built from the config the way ``build_app`` builds it.
Loopback is reachable only because each test lists 127.0.0.1/32 in web_fetch's egress.
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.app import _fetcher, build_app
from bastion.config.model import Config
from bastion.errors import ToolError
from bastion.memory.base import EphemeralMemory
from bastion.messages import ToolCall
from bastion.testing import ScriptedModel
from bastion.tools.base import ToolContext
from bastion.tools.builtin.web import DirectFetcher, address_problem, web_fetch

# A hostile server: /trickle sends one byte every 50 ms forever, /huge sends 1 GB as fast as
# the client reads, /bomb sends 6.7 MB of deflate that inflates to 1 GB.
SERVER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def bomb(periods):
    # zlib stream of 1 + 258*8*periods zero bytes: fixed Huffman, one literal 0, then copies
    # of (length 258, distance 1); the bits repeat every 8 copies (104 bits = 13 bytes)
    def pack(n):
        def code(v, w):
            return [(v >> i) & 1 for i in range(w - 1, -1, -1)]  # Huffman codes: MSB first
        bits = [1, 1, 0] + code(0x30, 8)  # BFINAL, fixed Huffman; literal 0
        for _ in range(8 * n):
            bits += code(0b11000101, 8) + code(0, 5)
        bits += code(0, 7) + [0] * 7  # end of block, padding
        return bytes(sum(b << i for i, b in enumerate(bits[j:j + 8]))
                     for j in range(0, len(bits) - 7, 8))
    small = pack(3)
    size = 1 + 258 * 8 * periods
    adler = ((size % 65521) << 16) | 1
    return (b"\x78\x01" + small[:2] + small[2:15] * (periods - 1) + small[28:]
            + adler.to_bytes(4, "big"))

BOMB = bomb(520_000)

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if self.path == "/bomb":
            self.send_header("Content-Encoding", "deflate")
            self.send_header("Content-Length", str(len(BOMB)))
        self.end_headers()
        try:
            if self.path == "/trickle":
                while True:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(0.05)
            elif self.path == "/huge":
                block = b"A" * (1 << 20)
                for _ in range(1024):
                    self.wfile.write(block)
            else:
                self.wfile.write(BOMB)
        except OSError:
            pass
    def log_message(self, *a):
        pass

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


@pytest.fixture(scope="module")
def hostile() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _ctx(tmp_path: Path, port: int, **web_fetch: object) -> ToolContext:
    security: dict[str, object] = {
        "egress": {"web_fetch": {"domains": ["example.invalid"], "cidrs": ["127.0.0.1/32"],
                                 "ports": [port]}}}
    if web_fetch:
        security["web_fetch"] = web_fetch
    return ToolContext(workspace=tmp_path,
                       http=_fetcher(Config.model_validate({"security": security})))


async def test_trickling_server_cannot_hold_a_fetch_open(hostile: int, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, hostile, timeout_s=2)
    start = time.monotonic()
    with pytest.raises(ToolError, match="took longer than 2 s"):
        # the guard only keeps a broken build from hanging the suite
        await asyncio.wait_for(web_fetch({"url": f"http://127.0.0.1:{hostile}/trickle"}, ctx), 20)
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("path", ["/huge", "/bomb"])
async def test_a_gigabyte_response_is_never_buffered(hostile: int, tmp_path: Path,
                                                     path: str) -> None:
    ctx = _ctx(tmp_path, hostile)  # the defaults: 4 MB and 100,000 characters at most
    tracemalloc.start()
    try:
        start = time.monotonic()
        out = await asyncio.wait_for(
            web_fetch({"url": f"http://127.0.0.1:{hostile}{path}", "max_chars": 10**9}, ctx), 60)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"bastion buffered {peak / 1e6:.0f} MB for one fetch"
    assert elapsed < 10
    body = out.text.split("\n", 1)[1]
    assert body.startswith("AAAA" if path == "/huge" else "\0\0\0")
    assert len(body) <= 100_000 + 100 and "truncated at 100000 characters" in body


async def test_max_chars_below_one_is_refused(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, http=DirectFetcher())
    with pytest.raises(ToolError, match="at least 1"):
        await web_fetch({"url": "http://127.0.0.1:9/", "max_chars": -5}, ctx)


# Each of these reaches a private, link-local or otherwise non-public host in some network:
# through a 6to4 relay, a Teredo relay, a NAT64 gateway, a site-local or unique-local route.
SSRF = [
    "2002:a9fe:a9fe::1",                      # 6to4 of 169.254.169.254 (cloud metadata)
    "2002:7f00:1::1",                         # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",                       # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",   # Teredo
    "64:ff9b::a9fe:a9fe",                     # NAT64 of 169.254.169.254
    "fec0::1",                                # site-local
    "fd00:ec2::254",                          # AWS metadata over IPv6 (unique local)
    "::ffff:169.254.169.254",                 # IPv4-mapped metadata
    "::a9fe:a9fe",                            # IPv4-compatible (deprecated) metadata
    "192.0.0.8",                              # IETF protocol assignments 192.0.0.0/24
    "192.0.0.170",                            # NAT64 discovery
    "100.64.0.1",                             # CGNAT
    "198.18.0.1",                             # benchmarking
    "192.88.99.1",                            # 6to4 relay anycast
    "3fff::1",                                # documentation (RFC 9637)
]


@pytest.mark.parametrize("addr", SSRF)
async def test_ssrf_address_forms_are_refused_before_connecting(addr: str) -> None:
    # resolve() is what the guarded transport calls before it opens any socket
    with pytest.raises(ToolError, match="refused to fetch"):
        await DirectFetcher().resolve(addr, 80)
    assert address_problem(ipaddress.ip_address(addr)) is not None


@pytest.mark.parametrize("addr", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                  "2002:5db8:d70e::1", "64:ff9b::5db8:d70e"])
def test_public_addresses_stay_reachable(addr: str) -> None:
    # a public IPv4 address behind 6to4 or NAT64 is public too (no connection is made here)
    assert address_problem(ipaddress.ip_address(addr)) is None


async def test_a_refused_fetch_is_audited_with_the_reason(tmp_path: Path) -> None:
    config = Config.model_validate({"agent": {"workspace": str(tmp_path)},
                                    "security": {"tools": {"web_fetch": "allow"}}})
    app = build_app(config, model=ScriptedModel(), memory=EphemeralMemory())
    try:
        res = await app.gateway.execute(
            ToolCall("web_fetch", {"url": "http://[2002:a9fe:a9fe::1]/latest/meta-data/"}))
        assert not res.ok
        app.audit.flush()
        rows = [e for e in app.audit.events(tool="web_fetch") if e.kind == "tool_call"]
    finally:
        await app.aclose()
    assert rows and "6to4 address embedding 169.254.169.254" in (rows[0].result or ""), rows
