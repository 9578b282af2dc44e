"""One private internet for the egress and credential-proxy breach tests (own DNS, own CA).

bastion runs (in a subprocess: :mod:`_egress_scenario`, :mod:`_credproxy_scenario`) inside a
stand-in host namespace made here, whose default route leads into a world namespace made
here, so the world's servers can have public addresses without touching the real host's
routes. Nothing leaves these namespaces.

    host ns "bsth-TAG" (bastion's uplink: veths, nft table, ip_forward, the proxy -- all inside)
      w0 10.200.0.1/24, default via 10.200.0.2
        |
    world ns "bstw-TAG": w1 10.200.0.2/24 and, as /32s:
      PUBLIC 93.184.215.14, LAN 192.168.77.10, METADATA 169.254.169.254, CGNAT 100.64.0.10:
        an HTTP server on :8000 of each (the egress tests);
      API 93.184.215.20, OTHER 93.184.215.21: HTTPS on 443 (a certificate for api.test,
        other.test and attacker.test signed by the test's own CA), plain HTTP on 80 and an
        SSH-like banner on 22; ``/big?n=N`` answers N bytes with a content-length,
        ``/chunked?n=N`` N bytes chunked; every other HTTP request is appended to
        ``requests.jsonl`` (host, path, Authorization, body, chunked bodies decoded) so a
        test sees exactly what arrived;
      RESOLVER 10.200.0.53: dnsmasq (allowed.test -> PUBLIC; lan/meta/local/cgnat/meta6
        .allowed.test -> the private, link-local, loopback, CGNAT and fd00:ec2::254
        addresses: the rebinding records an attacker controls under an allowlisted
        wildcard; api.test -> API; other.test, attacker.test -> OTHER).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
PUBLIC, LAN, METADATA, CGNAT = "93.184.215.14", "192.168.77.10", "169.254.169.254", "100.64.0.10"
API, OTHER, RESOLVER = "93.184.215.20", "93.184.215.21", "10.200.0.53"
RECORDS = {"allowed.test": PUBLIC, "lan.allowed.test": LAN, "meta.allowed.test": METADATA,
           "local.allowed.test": "127.0.0.1", "cgnat.allowed.test": CGNAT,
           "meta6.allowed.test": "fd00:ec2::254",
           "api.test": API, "other.test": OTHER, "attacker.test": OTHER}
#: The names the APIs' certificate is for.
TLS_NAMES = ["api.test", "other.test", "attacker.test"]

SERVER = r'''
import json, os, socket, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = sys.argv[1]
CERT, KEY = sys.argv[2], sys.argv[3]
ADDRS = sys.argv[4:]
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as real API servers do (else 40 ms delayed-ACK stalls)
    def log_message(self, *a): pass
    def _serve(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        rec = {"host": self.headers.get("host"), "path": self.path, "method": self.command,
               "auth": self.headers.get("authorization"), "body": body.decode("utf-8", "replace"),
               "addr": self.server.server_address[0],
               "tls": isinstance(self.connection, ssl.SSLSocket)}
        if not self.path.startswith(("/big", "/chunked")):
            with lock, open(LOG, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
        if self.path.startswith("/big"):
            size = int(self.path.split("=", 1)[1]) if "=" in self.path else 10_000_000
            self.send_response(200)
            self.send_header("content-length", str(size))
            self.end_headers()
            left, i = size, 0
            while left > 0:  # each 64 KiB differs: a relay that reorders or drops shows
                self.wfile.write(((b"%07d\n" % i) * 8192)[:left])
                left -= 65536
                i += 1
            return
        if self.path.startswith("/chunked"):  # no content-length: the size shows as it comes
            left = int(self.path.split("=", 1)[1])
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            while left > 0:
                part = b"c" * min(left, 65536)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                left -= len(part)
            self.wfile.write(b"0\r\n\r\n")
            return
        out = json.dumps({"you_sent": rec["auth"], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.send_header("x-echo", rec["auth"] or "")
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = _serve

def tls_server(addr):
    srv = ThreadingHTTPServer((addr, 443), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERT, KEY)
    ctx.set_alpn_protocols(["http/1.1"])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()

def banner(addr):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 22)); s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(b"SSH-2.0-OpenSSH_9.6\r\n"); c.close()

for a in ADDRS:
    threading.Thread(target=tls_server, args=(a,), daemon=True).start()
    threading.Thread(target=ThreadingHTTPServer((a, 80), H).serve_forever, daemon=True).start()
    threading.Thread(target=banner, args=(a,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


def make_ca(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """Write a CA and a leaf for ``names``; return (ca.pem, leaf.pem, leaf.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastion test API CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass(frozen=True)
class World:
    """The namespaces, the CA and the request log; :meth:`run` runs a scenario as bastion."""

    host: str
    world: str
    directory: Path

    @property
    def ca(self) -> Path:
        """The test CA that signed the APIs' certificate."""
        return self.directory / "ca.pem"

    @property
    def leaf(self) -> Path:
        """The APIs' certificate."""
        return self.directory / "leaf.pem"

    def requests(self) -> list[dict[str, Any]]:
        """Every request the APIs received so far."""
        log = self.directory / "requests.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def run(self, module: str, *args: str, timeout: float = 240) -> dict[str, Any]:
        """Run ``python -m MODULE ARGS... DIRECTORY`` as root in the host namespace.

        Returns the JSON of its last line of output.

        ``nsenter --net`` rather than ``ip netns exec``: the latter remounts /sys, and podman
        then finds no cgroup mount.
        """
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
               "SSL_CERT_FILE": str(self.ca)}
        proc = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.host}", "--", sys.executable, "-m", module,
             *args, str(self.directory)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-4000:]
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _in_world(world: str, *argv: str, stdout: int = subprocess.DEVNULL
              ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", world, *argv], stdout=stdout,
                            stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def make_world(directory: Path) -> Iterator[World]:
    """Create the namespaces, CA and servers; remove everything afterwards."""
    tag = uuid.uuid4().hex[:6]
    host, world = f"bsth-{tag}", f"bstw-{tag}"
    directory.chmod(0o755)
    _, leaf, key = make_ca(directory, TLS_NAMES)
    procs: list[subprocess.Popen[bytes]] = []
    _ip("netns", "add", host)
    _ip("netns", "add", world)
    try:
        _ip("-n", host, "link", "set", "lo", "up")
        _ip("-n", world, "link", "set", "lo", "up")
        _ip("-n", host, "link", "add", "w0", "type", "veth", "peer", "name", "w1", "netns", world)
        _ip("-n", host, "addr", "add", "10.200.0.1/24", "dev", "w0")
        _ip("-n", world, "addr", "add", "10.200.0.2/24", "dev", "w1")
        for addr in (PUBLIC, LAN, METADATA, CGNAT, API, OTHER, RESOLVER):
            _ip("-n", world, "addr", "add", f"{addr}/32", "dev", "w1")
        _ip("-n", host, "link", "set", "w0", "up")
        _ip("-n", world, "link", "set", "w1", "up")
        _ip("-n", host, "route", "add", "default", "via", "10.200.0.2")
        procs.append(_in_world(
            world, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
            f"--listen-address={RESOLVER}", "--bind-interfaces", "--pid-file=",
            *[f"--address=/{name}/{addr}" for name, addr in RECORDS.items()]))
        procs.append(_in_world(world, sys.executable, "-m", "http.server", "8000", "--bind",
                               "0.0.0.0"))
        server = _in_world(world, sys.executable, "-c", SERVER,
                           str(directory / "requests.jsonl"), str(leaf), str(key), API, OTHER,
                           stdout=subprocess.PIPE)
        procs.append(server)
        assert server.stdout is not None
        server.stdout.readline()  # "ready"
        time.sleep(0.5)  # dnsmasq and the plain HTTP servers bind
        yield World(host, world, directory)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        for ns in (host, world):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def scenario(mode: str) -> dict[str, Any]:
    """Make a world, run one ``_egress_scenario`` mode in it, tear it down; return its JSON."""
    with tempfile.TemporaryDirectory() as tmp, make_world(Path(tmp)) as world:
        return world.run("tests.security._egress_scenario", mode, RESOLVER, timeout=120)
