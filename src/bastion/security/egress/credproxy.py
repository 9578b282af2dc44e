"""The credential-swapping, inspecting HTTP(S) proxy on a sandbox's egress path.

Why mitmproxy's proxy core (``mitmproxy.proxy``: the sans-IO HTTP/1, HTTP/2, CONNECT and TLS
layers, ``mitmproxy.certs`` for the per-sandbox CA and leaf certificates): intercepting TLS
correctly (ALPN, HTTP/2 framing, half-closes, chunked bodies, SNI, streaming large bodies) is
exactly the kind of code that must not be hand-written in a security product. bastion only
supplies the policy hooks: which layer comes next (protocol filtering), the TLS contexts
(per-sandbox CA towards the sandbox; full verification plus ``crypto.tls_pins`` towards the
server) and the request/response hooks (swap, inspection, audit). mitmproxy's addon framework
is not used (its addons package pulls in passlib, which fails against bcrypt 5).

Topology: the proxy listens on 127.0.0.1 *inside* the sandbox's network namespace (the
socket is created there; :mod:`._nsjoin`), the sandbox's nftables admit nothing but loopback,
and its environment names the proxy (``HTTPS_PROXY``...) and trusts only the per-sandbox CA
(also bind-mounted over the system bundle). The proxy resolves names through the sandbox's
own resolver (dnsmasq: allowlist, rebinding filter, audit) and connects onward from bastion's
namespace (or the operator's uplink namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import ipaddress
import os
import random
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bastion._extras import require
from bastion.addresses import address_problem
from bastion.errors import MissingExtraError, SandboxError
from bastion.security.egress import _nsjoin
from bastion.security.egress._relay import BodyRelay
from bastion.security.egress.rules import EgressRule
from bastion.security.scanner import shannon_entropy
from bastion.security.secrets.bound import PREFIX, Issued, PlaceholderBook

FEATURE = "credential-blind tools and egress inspection (security.egress proxy)"
# Rule names of refusals (the audit's ``rule``; never the payload)
R_PROTOCOL = "protocol-not-allowed"
R_SNI = "sni-not-allowlisted"
R_HOST = "host-header-mismatch"
R_DEST = "destination-not-allowlisted"
R_PORT = "port-not-allowed"
R_PLAIN443 = "plain-http-on-tls-port"
R_METHOD = "method-path-rule"
R_SIZE = "size-cap"
R_SECRET = "secret-to-unbound-host"
R_PII = "pii-to-unbound-host"
R_RESOLVE = "name-not-resolved"
R_PIN = "tls-verify-or-pin"
R_LEAK = "placeholder-to-unbound-host"
R_DNS_TYPE = "dns-type"  # only A and AAAA are answered (TXT, NULL, ANY... carry data)
R_DNS_SIZE = "dns-oversized"
R_DNS_ENTROPY = "dns-high-entropy"
R_DNS_NAME = "not-allowlisted"
MARK = 0xB57  # SO_MARK of the proxy's sockets to dnsmasq; sandboxed code cannot set marks
DNS_FRONT = "127.0.0.53"  # the sandbox's resolver when proxied: bastion's DNS filter
MAX_LABEL, MAX_NAME, ENTROPY_LABEL, ENTROPY_BITS = 40, 120, 20, 3.5
Inspector = Callable[[str], Sequence[str]]  # text -> the PII classes found in it


@dataclass(frozen=True, slots=True)
class HttpRule:
    """Methods and path globs allowed towards one host (glob); others are refused."""

    host: str
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    def covers(self, host: str) -> bool:
        """Return whether the rule is about ``host``."""
        return fnmatch.fnmatchcase(host, self.host)

    def allows(self, method: str, path: str) -> bool:
        """Return whether ``method path`` passes the rule."""
        path = path.split("?", 1)[0]
        return ((not self.methods or method.upper() in self.methods)
                and (not self.paths or any(fnmatch.fnmatchcase(path, p) for p in self.paths)))


@dataclass(frozen=True, slots=True)
class ProxyPolicy:
    """What the proxy lets through for one subject (a tool or an MCP server)."""

    rule: EgressRule
    http_ports: tuple[int, ...] = ()  # plain HTTP is allowed on these ports only (never 443)
    http2: bool = True
    rules: tuple[HttpRule, ...] = ()
    max_request_bytes: int = 1_000_000
    max_response_bytes: int = 100_000_000
    scan_outbound: bool = True
    # a placeholder to a host its secret is not bound to: ask a human (the approval flow),
    # refuse, or only alert
    leaks: Literal["ask", "block", "alert"] = "ask"

    def port_allowed(self, port: int, tls: bool) -> bool:
        """Return whether a connection to ``port`` may carry TLS (``tls``) or plain HTTP."""
        return port in self.rule.ports if tls else (port in self.http_ports and port != 443)


INSTALL = "pip install 'bastion[egress-proxy]' && pip install --no-deps mitmproxy==11.0.2"


def _load() -> Any:
    try:
        return require("mitmproxy.proxy.server", extra="egress-proxy", feature=FEATURE)
    except MissingExtraError as exc:
        exc.fix = INSTALL  # mitmproxy's own pins clash with bastion's cryptography (pyproject)
        raise


def _spki_pin(der: bytes) -> str:
    from bastion.crypto.pinning import pin_for_der

    return pin_for_der(der)


@dataclass
class CredentialProxy:
    """One proxy for one sandbox namespace; its own thread, event loop and CA.

    Args:
        subject: The tool or MCP server (audit records' ``tool``).
        policy: Protocol, destination, method/path and size rules.
        book: The live placeholders (only those of ``subject`` are swapped).
        audit: Where swaps, refusals and placeholder leaks are recorded.
        sandbox_netns: The namespace file the proxy listens in.
        upstream_netns: Namespace to connect onward from (None: bastion's own).
        inspect: Finds PII classes in outbound text (None: no PII check).
        scanner: Finds secrets in outbound text (the redactor's scanner: held values too).
        approver: Decides held requests (``leaks: ask``): the gateway's approval manager;
            None: such a request is refused.
        approval_timeout_s: How long a held request waits for a decision (then: refused).

    """

    subject: str
    policy: ProxyPolicy
    book: PlaceholderBook
    audit: Any = None
    sandbox_netns: str = ""
    upstream_netns: str | None = None
    inspect: Inspector | None = None
    scanner: Any = None
    approver: Any = None
    approval_timeout_s: float = 120.0
    port: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0  # upstream connections opened (keep-alive reuse shows here)

    def __post_init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bastion-ca-"))  # 0700: holds the CA key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._dns: socket.socket | None = None
        self._dns_lock: asyncio.Lock | None = None
        self._dns_cache: dict[str, tuple[float, list[str]]] = {}
        self._certstore: Any = None
        self._calls: dict[object, Any] = {}  # the tool calls whose sandbox runs now (CallRef)
        self._calls_lock = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        """The per-sandbox CA certificate (public part) the sandbox trusts."""
        return self._dir / "ca.pem"

    @property
    def thread_id(self) -> int:
        """The identifier of the proxy's thread (0 before :meth:`start`)."""
        return (self._thread.ident or 0) if self._thread is not None else 0

    def env(self) -> dict[str, str]:
        """Variables that point a sandbox's HTTP clients at the proxy and its CA."""
        url = f"http://127.0.0.1:{self.port}"
        bundle = "/etc/ssl/certs/ca-certificates.crt"  # the CA is mounted over it
        return {"HTTPS_PROXY": url, "https_proxy": url, "HTTP_PROXY": url, "http_proxy": url,
                "ALL_PROXY": url, "NO_PROXY": "", "SSL_CERT_FILE": bundle,
                "REQUESTS_CA_BUNDLE": bundle, "CURL_CA_BUNDLE": bundle,
                "NODE_EXTRA_CA_CERTS": bundle, "GIT_SSL_CAINFO": bundle}

    def start(self) -> CredentialProxy:
        """Make the CA, open the listening socket in the sandbox namespace, start serving."""
        _load()
        from mitmproxy import certs

        self._certstore = certs.CertStore.from_store(self._dir, "bastion-egress", 2048)
        shutil.copyfile(self._dir / "bastion-egress-ca-cert.pem", self.ca_file)
        self.ca_file.chmod(0o644)
        self._dir.chmod(0o711)  # the sandbox side reads ca.pem only; the key files are 0600
        for key in self._dir.glob("bastion-egress-ca*.p12"):
            key.unlink()
        listen = _nsjoin.inside(self.sandbox_netns, _listener)
        self._dns = _nsjoin.inside(self.sandbox_netns, _resolver_socket)
        front = _nsjoin.inside(self.sandbox_netns, _front_socket)
        self.port = listen.getsockname()[1]
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                if self.upstream_netns:
                    _nsjoin.enter(self.upstream_netns)
                loop = _Loop(self)
                self._loop = loop
                self._dns_lock = asyncio.Lock()
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, sock=listen))
                loop.run_until_complete(loop.create_datagram_endpoint(
                    lambda: _DnsFront(self), sock=front))
            except BaseException as exc:
                failed.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"credproxy-{self.subject}",
                                        daemon=True)
        self._thread.start()
        ready.wait(30)
        if failed:
            raise SandboxError(f"egress proxy for {self.subject} did not start: {failed[0]}")
        return self

    def close(self) -> None:
        """Stop serving and delete the CA."""
        loop = self._loop
        if loop is not None and self._thread is not None:
            async def stop() -> None:
                if self._server is not None:
                    self._server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
                loop.call_soon_threadsafe(loop.stop)
            self._thread.join(5)
        if self._dns is not None:
            self._dns.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    @contextlib.contextmanager
    def serving(self, call: Any) -> Iterator[None]:
        """Attribute what the sandbox sends meanwhile to ``call`` (a :class:`CallRef`).

        One namespace (and proxy) serves every call of its tool, so a request cannot name
        its call; while calls run, the approval a request raises names them (one call:
        its session, call id and tool).
        """
        if call is None:
            yield
            return
        key = object()  # one call may run several commands at once
        with self._calls_lock:
            self._calls[key] = call
        try:
            yield
        finally:
            with self._calls_lock:
                self._calls.pop(key, None)

    def running(self) -> list[Any]:
        """Return the tool calls being served now (oldest first)."""
        with self._calls_lock:
            return list(dict.fromkeys(self._calls.values()))

    # ---- audit -------------------------------------------------------------------------
    def _record(self, kind: str, decision: str, detail: dict[str, Any]) -> None:
        event = {"kind": kind, "decision": decision, **detail}
        self.events.append(event)
        if self.audit is not None:
            with contextlib.suppress(Exception):
                self.audit.record(kind, actor="sandbox", tool=self.subject, decision=decision,
                                  detail=detail)

    def _refuse(self, rule: str, **detail: Any) -> None:
        self._record("egress_refused", "denied", {"rule": rule, **detail})

    # ---- one client connection ---------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = _load()
        from mitmproxy import options
        from mitmproxy.proxy import mode_specs

        opts = options.Options()
        # no stream_large_bodies: mitmproxy would stream a large chunked *request* on to the
        # server before the request hook (the swap, Host/method rules, the scanners) ran.
        # Every request body is buffered (mitmproxy's body_size_limit bounds the memory) and
        # _request refuses one over max_request_bytes; responses stream (_respheaders) with
        # max_response_bytes held on the bytes relayed (_Capped)
        limit = max(self.policy.max_request_bytes, self.policy.max_response_bytes)
        for name, typ, default in (
                ("connection_strategy", str, "lazy"), ("stream_large_bodies", str | None, None),
                ("body_size_limit", str | None, str(limit)),
                ("keep_host_header", bool, True), ("normalize_outbound_headers", bool, True),
                ("validate_inbound_headers", bool, True), ("proxyauth", str | None, None)):
            opts.add_option(name, typ, default, name)
        opts.http2 = self.policy.http2
        hooks = {"next_layer": self._next_layer, "tls_start_client": self._tls_client,
                 "tls_start_server": self._tls_server, "http_connect": self._connect,
                 "server_connect": self._server_connect, "requestheaders": self._reqheaders,
                 "request": self._request, "responseheaders": self._respheaders,
                 "response": self._response, "tls_failed_server": self._tls_failed,
                 "error": self._error}

        wires = _Wires()

        class Handler(server.SimpleConnectionHandler):  # type: ignore[misc,name-defined]
            async def handle_hook(self, hook: Any) -> None:
                if hook.name == "server_connected":  # its reader exists now, not yet read
                    io = self.transports.get(hook.args()[0].server)
                    if io is not None and isinstance(io.reader, asyncio.StreamReader):
                        io.reader = _BigReads(io.reader)
                fn = hooks.get(hook.name)
                if fn is not None:
                    out = fn(*hook.args())
                    if inspect.isawaitable(out):
                        await out
                if hook.name in ("tls_start_client", "tls_start_server"):
                    start = hook.args()[0]
                    wires.tls[start.conn.id] = start.ssl_conn

        handler = Handler(_BigReads(reader), writer, opts,
                          mode_specs.ProxyMode.parse("regular"), hooks)
        wires.handler = handler
        hooks["responseheaders"] = lambda flow: self._respheaders(flow, wires)
        await handler.handle_client()

    # ---- protocol filtering (which layer comes next) ------------------------------------
    def _next_layer(self, nl: Any) -> None:
        from mitmproxy.net.tls import starts_like_tls_record
        from mitmproxy.proxy import layers
        from mitmproxy.proxy.layers import modes
        from mitmproxy.proxy.layers.http import HTTPMode

        if nl.layer is not None:
            return
        ctx = nl.context
        if not ctx.layers:  # the connection's first layer: an explicit HTTP proxy
            nl.layer = modes.HttpProxy(ctx)
            return
        data = nl.data_client()
        if len(ctx.layers) == 1 and isinstance(ctx.layers[0], modes.HttpProxy):
            if starts_like_tls_record(data):  # TLS to the proxy itself: not a proxy request
                nl.layer = _refusal(ctx, self, R_PROTOCOL, "tls-to-proxy")
            else:
                nl.layer = layers.HttpLayer(ctx, HTTPMode.regular)
            return
        host, port = ctx.server.address or ("", 0)
        if ctx.client.tls:  # inside intercepted TLS: only HTTP may follow
            if ctx.client.alpn in (b"h2", b"http/1.1") or _looks_http(data):
                nl.layer = layers.HttpLayer(ctx, HTTPMode.transparent)
            elif len(data) >= 16 or b"\n" in data:
                nl.layer = _refusal(ctx, self, R_PROTOCOL, "raw-in-tls", host=host, port=port)
            return
        if starts_like_tls_record(data):
            from mitmproxy.proxy.layers.tls import parse_client_hello

            try:
                hello = parse_client_hello(data)
            except ValueError:
                nl.layer = _refusal(ctx, self, R_PROTOCOL, "bad-clienthello", host=host,
                                    port=port)
                return
            if hello is None:
                return  # wait for the rest of the ClientHello
            sni = (hello.sni or "").lower().rstrip(".")
            if not sni or not self.policy.rule.allows_name(sni) or sni != host.lower():
                nl.layer = _refusal(ctx, self, R_SNI, "tls", host=host, port=port, sni=sni)
                return
            stls = layers.ServerTLSLayer(ctx)
            stls.child_layer = layers.ClientTLSLayer(ctx)
            nl.layer = stls
            return
        if _looks_http(data):
            if port == 443 or not self.policy.port_allowed(port, tls=False):
                nl.layer = _refusal(ctx, self, R_PLAIN443 if port == 443 else R_PROTOCOL,
                                    "http", host=host, port=port)
            else:
                nl.layer = layers.HttpLayer(ctx, HTTPMode.transparent)
            return
        if len(data) >= 8 or b"\n" in data:  # SSH banners, raw TCP: not HTTP, not TLS
            nl.layer = _refusal(ctx, self, R_PROTOCOL, "raw-tcp", host=host, port=port)

    def _connect(self, flow: Any) -> None:
        """``CONNECT host:port``: only allowlisted names on ports allowed for TLS."""
        host, port = flow.request.host.lower().rstrip("."), flow.request.port
        if not self._dest_allowed(host):
            self._deny(flow, R_DEST, host=host, port=port)
        elif port not in self.policy.rule.ports and port not in self.policy.http_ports:
            self._deny(flow, R_PORT, host=host, port=port)

    def _dest_allowed(self, host: str) -> bool:
        if not host[:1].isdigit() and not host.startswith(("[", ":")):  # a name, not an IP
            return self.policy.rule.allows_name(host)
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return self.policy.rule.allows_name(host)
        return any(addr in ipaddress.ip_network(c) for c in self.policy.rule.cidrs)

    def _deny(self, flow: Any, rule: str, status: int = 403, **detail: Any) -> None:
        from mitmproxy import http

        self._refuse(rule, **detail)
        flow.response = http.Response.make(
            status, f"bastion egress: refused ({rule})\n".encode(),
            {"content-type": "text/plain", "x-bastion-refused": rule})

    # ---- resolution and onward connection ---------------------------------------------
    def _server_connect(self, data: Any) -> None:
        self.connects += 1
        srv = data.server
        if srv.sni is None and srv.tls:
            srv.sni = str(srv.address[0]).lower().rstrip(".")

    async def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` through the sandbox's dnsmasq; keep allowed addresses only.

        The proxy's event loop uses this for every connection it opens (its
        ``getaddrinfo``), so the connection keeps its host name (and is reused by later
        requests) while it goes to an address the sandbox's own resolver handed out.
        """
        host = host.lower().rstrip(".")
        try:
            addrs = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            addrs = await self._resolve(host)
        ok = [a for a in addrs if address_problem(ipaddress.ip_address(a)) is None or any(
            ipaddress.ip_address(a) in ipaddress.ip_network(c) for c in self.policy.rule.cidrs)]
        if not ok:
            self._refuse(R_RESOLVE, host=host, port=port)
        return ok

    async def _resolve(self, name: str) -> list[str]:
        now = time.monotonic()
        hit = self._dns_cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        assert self._dns is not None and self._dns_lock is not None
        loop = asyncio.get_running_loop()
        async with self._dns_lock:
            qid = random.randrange(65536)
            await loop.sock_sendall(self._dns, _query(qid, name))
            try:
                while True:
                    reply = await asyncio.wait_for(loop.sock_recv(self._dns, 4096), 5)
                    if reply[:2] == struct.pack("!H", qid):
                        break
            except TimeoutError:
                return []
        addrs, ttl = _answers(reply)
        self._dns_cache[name] = (now + min(max(ttl, 1), 300), addrs)
        return addrs

    async def answer_dns(self, query: bytes) -> bytes | None:
        """Filter one query from the sandbox; forward it to dnsmasq or refuse it (audited)."""
        from mitmproxy import dns

        try:
            msg = dns.Message.unpack(query)
            q = msg.questions[0]
        except Exception:
            return None
        name = q.name.rstrip(".").lower()
        labels = name.split(".")
        rule = None
        if q.type not in (1, 28):
            rule = R_DNS_TYPE
        elif len(name) > MAX_NAME or any(len(x) > MAX_LABEL for x in labels):
            rule = R_DNS_SIZE
        elif any(_random_label(x) for x in labels):
            rule = R_DNS_ENTROPY
        elif not self.policy.rule.allows_name(name):
            rule = R_DNS_NAME
        if rule is not None:
            self._record("egress_dns", "denied", {"name": name[:80], "type": q.type,
                                                  "rule": rule})
            return msg.fail(5).packed  # REFUSED
        assert self._dns is not None and self._dns_lock is not None
        loop = asyncio.get_running_loop()
        async with self._dns_lock:
            await loop.sock_sendall(self._dns, query)
            try:
                while True:
                    reply = await asyncio.wait_for(loop.sock_recv(self._dns, 4096), 5)
                    if reply[:2] == query[:2]:
                        return reply
            except TimeoutError:
                return None

    # ---- TLS ---------------------------------------------------------------------------
    def _tls_client(self, tls_start: Any) -> None:
        """Towards the sandbox: a leaf certificate for the SNI, signed by the sandbox's CA."""
        from mitmproxy.net import tls as net_tls
        from OpenSSL import SSL, crypto

        conn = tls_start.conn
        sni = conn.sni or (tls_start.context.server.address or ("",))[0]
        entry = self._certstore.get_cert(sni, [sni], None)
        ctx = net_tls.create_client_proxy_context(
            method=net_tls.Method.TLS_SERVER_METHOD, min_version=net_tls.Version.TLS1_2,
            max_version=net_tls.Version.UNBOUNDED, cipher_list=None, ecdh_curve=None,
            chain_file=entry.chain_file, alpn_select_callback=self._alpn,
            request_client_cert=False, extra_chain_certs=(),
            dhparams=self._certstore.dhparams)
        ssl_conn = SSL.Connection(ctx)
        ssl_conn.use_certificate(entry.cert.to_pyopenssl())
        ssl_conn.use_privatekey(crypto.PKey.from_cryptography_key(entry.privatekey))
        ssl_conn.set_accept_state()
        tls_start.ssl_conn = ssl_conn

    def _alpn(self, conn: Any, offers: list[bytes]) -> Any:
        from OpenSSL import SSL

        for proto in ((b"h2", b"http/1.1") if self.policy.http2 else (b"http/1.1",)):
            if proto in offers:
                return proto
        return SSL.NO_OVERLAPPING_PROTOCOLS

    def _tls_server(self, tls_start: Any) -> None:
        """Towards the server: full verification (CA + hostname) and ``crypto.tls_pins``."""
        from mitmproxy.net import tls as net_tls
        from OpenSSL import SSL

        from bastion.crypto.pinning import pins_for

        server = tls_start.conn
        host = (server.sni or tls_start.context.client.sni or "").lower()
        port = server.address[1]
        ctx = net_tls.create_proxy_server_context(
            method=net_tls.Method.TLS_CLIENT_METHOD, min_version=net_tls.Version.TLS1_2,
            max_version=net_tls.Version.UNBOUNDED, cipher_list=None, ecdh_curve=None,
            verify=net_tls.Verify.VERIFY_PEER, ca_path=None,
            ca_pemfile=os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile,
            client_cert=None, legacy_server_connect=False)
        ssl_conn = SSL.Connection(ctx)
        param = SSL._lib.SSL_get0_param(ssl_conn._ssl)  # type: ignore[attr-defined]
        SSL._lib.X509_VERIFY_PARAM_set_hostflags(param, 0x4)  # type: ignore[attr-defined]
        name = host.encode("idna")
        ssl_conn.set_tlsext_host_name(name)
        ok = SSL._lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))  # type: ignore
        if ok != 1:
            raise SandboxError(f"cannot verify {host}")
        pins = pins_for(host, port)
        if pins is not None:
            def verify(_c: Any, cert: Any, _errno: int, depth: int, preverified: int) -> bool:
                if not preverified:
                    return False
                if depth == 0:
                    from OpenSSL import crypto

                    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
                    return _spki_pin(der) in pins
                return True

            ssl_conn.set_verify(SSL.VERIFY_PEER, verify)
        alpn = [p for p in (tls_start.context.client.alpn,) if p] or [b"http/1.1"]
        ssl_conn.set_alpn_protos(alpn)
        ssl_conn.set_connect_state()
        tls_start.ssl_conn = ssl_conn

    def _tls_failed(self, data: Any) -> None:
        srv = data.conn
        self._refuse(R_PIN, host=(srv.sni or ""), port=(srv.address or ("", 0))[1],
                     error=str(srv.error or "")[:200])

    # ---- inspection and the swap --------------------------------------------------------
    def _reqheaders(self, flow: Any) -> None:
        size = flow.request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.policy.max_request_bytes:
            self._deny(flow, R_SIZE, status=413, host=flow.request.pretty_host,
                       size=int(size), limit=self.policy.max_request_bytes)

    async def _request(self, flow: Any) -> None:
        req = flow.request
        if flow.response is not None:
            return
        host = req.host.lower().rstrip(".")
        port = req.port
        sni = flow.client_conn.sni
        header_host = (req.host_header or "").lower().rstrip(".")
        header_host = header_host.rsplit(":", 1)[0] if not header_host.startswith("[") \
            else header_host
        tls = req.scheme == "https"
        if not tls and (port == 443 or not self.policy.port_allowed(port, tls=False)):
            return self._deny(flow, R_PLAIN443 if port == 443 else R_PROTOCOL, host=host,
                              port=port)
        if not self._dest_allowed(host):
            return self._deny(flow, R_DEST, host=host, port=port)
        if tls and (header_host != (sni or "").lower() or host != (sni or "").lower()):
            return self._deny(flow, R_HOST, host=host, port=port, sni=sni)
        for rule in self.policy.rules:
            if rule.covers(host) and not rule.allows(req.method, req.path):
                return self._deny(flow, R_METHOD, host=host, port=port, method=req.method,
                                  applies_to=rule.host)
        body = req.get_content(strict=False) or b""
        if len(body) > self.policy.max_request_bytes:
            return self._deny(flow, R_SIZE, status=413, host=host, size=len(body),
                              limit=self.policy.max_request_bytes)
        mine = [i for i in self.book.live() if i.binding.tool == self.subject]
        swapped = self._swap(flow, host, port, mine)
        if self._inspect(flow, host, port, body, swapped):
            return
        leaked = self._leaks(flow, swapped)
        if leaked:
            allowed = self.policy.leaks == "alert" or await self._approve_leak(
                flow, host, port, leaked)
            for issued in leaked:
                b = issued.binding
                self._record("secret_placeholder_leak",
                             self.policy.leaks if self.policy.leaks == "alert" else
                             "approved" if allowed else "denied",
                             {"variable": b.env, "ref": b.ref, "owner": b.tool,
                              "destination": f"{host}:{port}", "bound_to": b.destinations,
                              "method": req.method})
            if not allowed:
                return self._deny(flow, R_LEAK, host=host, port=port)
        flow.metadata["bastion_swapped"] = [i.value for i in swapped]

    def _swap(self, flow: Any, host: str, port: int, mine: list[Issued]) -> list[Issued]:
        req, done = flow.request, []
        for issued in mine:
            b = issued.binding
            if not b.binds(host, port):
                continue
            hit = False
            current = req.headers.get(b.header, "") if b.header else ""
            if b.header and issued.placeholder in current:
                req.headers[b.header] = (current.replace(issued.placeholder, issued.value)
                                         if b.fmt is None else b.fmt.replace("{}", issued.value))
                hit = True
            if b.query:
                q = list(req.query.items(multi=True))
                if any(k == b.query and v == issued.placeholder for k, v in q):
                    req.query = [(k, issued.value if k == b.query and v == issued.placeholder
                                  else v) for k, v in q]
                    hit = True
            if hit:
                done.append(issued)
                self._record("secret_swap", "allowed",
                             {"variable": b.env, "ref": b.ref, "destination": f"{host}:{port}",
                              "where": (f"header {b.header}" if b.header else f"query {b.query}"),
                              "method": req.method, "path": req.path.split("?", 1)[0]})
        return done

    def _leaks(self, flow: Any, swapped: list[Issued]) -> list[Issued]:
        """Return the live placeholders in the request that were not swapped in it."""
        req = flow.request
        raw = "\n".join([req.path, *(f"{k}: {v}" for k, v in req.headers.items(multi=True)),
                         (req.get_text(strict=False) or "") if req.raw_content else ""])
        if PREFIX not in raw:
            return []
        return [i for i in self.book.live() if i.placeholder in raw and i not in swapped]

    async def _approve_leak(self, flow: Any, host: str, port: int,
                            leaked: list[Issued]) -> bool:
        """Hold the request and ask the approval flow whether it may leave (``leaks: ask``).

        What leaves on approval is the request as the sandbox sent it: the placeholder
        unchanged (worthless there), never the value. Refused without an approver, on a
        deny and on the approval's timeout; an approval never becomes a session rule.
        """
        if self.policy.leaks != "ask" or self.approver is None:
            return False
        from bastion.security.approval import ApprovalRequest
        from bastion.tools.base import Risk

        req = flow.request
        names = ", ".join(sorted({i.binding.env for i in leaked}))
        bound = sorted({d for i in leaked for d in i.binding.destinations})
        args: dict[str, Any] = {
            "egress": f"{req.method} {req.scheme}://{host}:{port}{req.path.split('?', 1)[0]}",
            "destination": f"{host}:{port}", "variable": names, "bound_to": bound}
        calls = self.running()
        sessions = {c.session_id for c in calls}
        if len(calls) > 1:  # calls of the tool at once: the request is one of theirs
            args["calls"] = [{"tool": c.tool, "call_id": c.call_id, "session_id": c.session_id}
                             for c in calls]
        tool = calls[0].tool if len(calls) == 1 else self.subject
        if tool != self.subject:
            args["sandbox"] = self.subject  # e.g. mcp:NAME for its tool NAME__x
        ask = ApprovalRequest(
            tool, args, Risk.HIGH,
            [R_LEAK, f"the placeholder of {names} (bound to {', '.join(bound)}) is sent to "
                     f"{host}:{port}; approving sends it unchanged, never the secret"],
            session_id=sessions.pop() if len(sessions) == 1 else None,
            call_id=calls[0].call_id if len(calls) == 1 else None,
            allow_session_rule=False)
        try:
            decision = await self.approver.decide(ask, timeout_s=self.approval_timeout_s)
        except Exception:  # an approver that fails refuses, as a timeout does
            return False
        return bool(decision.approved)

    def _inspect(self, flow: Any, host: str, port: int, body: bytes,
                 swapped: list[Issued]) -> bool:
        """Scan the query string and body: a secret or PII to an unbound host is refused."""
        if not self.policy.scan_outbound:
            return False
        req = flow.request
        text = "\n".join([req.path.partition("?")[2],
                          body.decode("utf-8", "replace") if body else ""])
        if not text.strip():
            return False
        bound_here = any(i.binding.binds(host, port) for i in self.book.live())
        if self.scanner is not None and not bound_here:
            found = self.scanner.scan(text)
            held = self.scanner.held_spans(text)
            if found or held:
                rules = sorted({f.rule for f in found} | ({"held-secret"} if held else set()))
                self._deny(flow, R_SECRET, host=host, port=port, found=rules)
                return True
        if self.inspect is not None:
            classes = sorted(set(self.inspect(text)))
            if classes:
                self._deny(flow, R_PII, host=host, port=port, found=classes)
                return True
        return False

    def _error(self, flow: Any) -> None:
        """Mitmproxy's own body_size_limit tripped (a body buffered past every cap)."""
        if flow.error is not None and "body_size_limit" in flow.error.msg:
            self._refuse(R_SIZE, host=flow.request.pretty_host,
                         limit=min(self.policy.max_request_bytes,
                                   self.policy.max_response_bytes),
                         direction="response" if flow.response is not None else "request")

    def _respheaders(self, flow: Any, wires: _Wires | None = None) -> None:
        size = flow.response.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.policy.max_response_bytes:
            self._refuse(R_SIZE, host=flow.request.pretty_host, size=int(size),
                         limit=self.policy.max_response_bytes, direction="response")
            flow.kill()
            return
        values = flow.metadata.get("bastion_swapped") or []
        if not values:
            # nothing to hide in it: pass it through as it comes, counting what is relayed
            # (a chunked or lying response has no size to check up front)
            if wires is None:
                flow.response.stream = True
                return
            capped = _Capped(self, flow, wires.cut)
            if (size is not None and size.isdigit() and int(size) >= FAST_MIN
                    and _body_size(flow) >= FAST_MIN and wires.can_relay(flow)):
                # a large body: relayed below mitmproxy's layers once it has started (its
                # per-read layer events, not the cryptography, bound a download); the
                # connection ends with it (the client is told), so mitmproxy's HTTP state
                # need not learn the bytes it did not see
                flow.response.headers["connection"] = "close"
                capped.relay = (wires, int(size))
            flow.response.stream = capped
            return
        # a server that echoes the secret back must not hand it to the sandbox
        flow.response.stream = False

    def _response(self, flow: Any) -> None:
        values = flow.metadata.get("bastion_swapped") or []
        if not values or flow.response is None or flow.response.stream:
            return
        if len(flow.response.raw_content or b"") > self.policy.max_response_bytes:
            self._refuse(R_SIZE, host=flow.request.pretty_host,
                         limit=self.policy.max_response_bytes, direction="response")
            flow.kill()
            return
        mine = {i.value: i.placeholder for i in self.book.live() if i.value in values}
        content = flow.response.get_content(strict=False) or b""
        echoed = False
        for value, placeholder in mine.items():
            if value.encode() in content:
                content = content.replace(value.encode(), placeholder.encode())
                echoed = True
            for k, v in list(flow.response.headers.items(multi=True)):
                if value in v:
                    flow.response.headers[k] = v.replace(value, placeholder)
        if echoed:  # re-encoded only when the body held the value (set_content is costly)
            flow.response.set_content(content)


class _Capped:
    """A streamed response body relayed chunk by chunk, held to ``max_response_bytes``.

    mitmproxy calls it with each chunk of a streamed body (``flow.response.stream``). Once
    the bytes relayed would pass the cap, nothing more is relayed: the refusal is audited
    (the rule, the host, how much had gone; never the payload) and both connections are
    dropped, so the sandbox sees a truncated body, never a complete-looking one.
    """

    def __init__(self, proxy: CredentialProxy, flow: Any, cut: Callable[..., None]) -> None:
        self.proxy, self.flow, self.cut = proxy, flow, cut
        self.relayed = 0
        self.over = False
        self.relay: tuple[_Wires, int] | None = None  # the fast path's wires, body size
        self.below: BodyRelay | None = None  # the fast path, once set up

    def __call__(self, data: bytes) -> bytes:
        """Return ``data`` to relay, or nothing once the cap is reached."""
        if self.over:
            return b""
        limit = self.proxy.policy.max_response_bytes
        if self.relayed + len(data) > limit:
            self.over = True
            self.proxy._refuse(R_SIZE, host=self.flow.request.pretty_host, limit=limit,
                               relayed=self.relayed, direction="response")
            self.cut(self.flow.client_conn, self.flow.server_conn)
            return b""
        self.relayed += len(data)
        if self.below is not None:  # went through mitmproxy after the relay was set up
            self.below.left -= len(data)
        if self.relay is not None and data:  # the headers went out: the rest goes below
            wires, size = self.relay
            self.relay = None
            if size - self.relayed >= READ_SIZE:
                self.below = wires.relay(self.flow, size - self.relayed)
        return data


FAST_MIN = 1 << 20  # response bodies of this size or more take the fast relay


def _body_size(flow: Any) -> int:
    from mitmproxy.net.http.http1 import expected_http_body_size

    try:
        size = expected_http_body_size(flow.request, flow.response)
    except ValueError:
        return -1
    return size if size is not None else -1


class _Wires:
    """One client connection's handler and TLS objects: what the fast relay needs."""

    def __init__(self) -> None:
        self.handler: Any = None
        self.tls: dict[str, Any] = {}  # connection id -> its pyOpenSSL connection

    def cut(self, *conns: Any) -> None:
        """Drop ``conns`` at once (RST), unsent data included."""
        for conn in conns:
            io = self.handler.transports.get(conn)
            if io is not None and io.writer is not None:
                io.writer.transport.abort()

    def can_relay(self, flow: Any) -> bool:
        """Return whether ``flow``'s body can go below mitmproxy: HTTP/1.1, TLS both ways."""
        client, srv = flow.client_conn, flow.server_conn
        io = self.handler.transports.get(srv)
        return (flow.request.http_version == flow.response.http_version == "HTTP/1.1"
                and client.id in self.tls and srv.id in self.tls
                and BodyRelay.usable(self.tls[srv.id], self.tls[client.id])
                and io is not None and isinstance(io.reader, _BigReads))

    def relay(self, flow: Any, left: int) -> BodyRelay | None:
        """Have the server connection's next read relay the ``left`` bytes of the body."""
        ios = self.handler.transports
        srv, client = ios.get(flow.server_conn), ios.get(flow.client_conn)
        if srv is None or client is None or srv.writer is None or client.writer is None:
            return None
        relay = srv.reader.relay = BodyRelay(left, self.tls[flow.server_conn.id],
                                     self.tls[flow.client_conn.id], srv.writer, client.writer,
                                     self.handler.timeout_watchdog.register_activity)
        return relay


READ_SIZE = 1 << 18  # bytes handed to mitmproxy's layers per read (its own: 64 KiB)


class _BigReads:
    """A stream reader whose reads take up to :data:`READ_SIZE` bytes at once.

    mitmproxy reads 64 KiB at a time and runs each read through its whole layer stack (TCP,
    TLS, HTTP/1 or 2, back down through TLS). Larger reads move the same bytes in fewer
    trips: with 256 KiB, asyncio's own largest ``recv``, the proxy carried 179-183 MB per
    CPU-second of its thread against 156-171 with 64 KiB reads (``bench/egress_proxy.py``,
    alternating runs); 1-4 MiB did not help further (the write side then copies the unsent
    rest of a big buffer on each send).
    The buffer limit is raised with it, so that the transport keeps reading ahead.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        reader._limit = READ_SIZE  # type: ignore[attr-defined]  # read ahead up to 2x this
        self.relay: BodyRelay | None = None

    async def read(self, n: int = -1) -> bytes:
        """Return what is buffered (at least one byte; up to :data:`READ_SIZE`).

        With a :class:`BodyRelay` set, first relay the rest of the body below mitmproxy, then
        say the server closed (the response told the client the connection ends with it).
        """
        relay, self.relay = self.relay, None
        if relay is not None:
            await relay.run(self._reader)
            return b""
        return await self._reader.read(max(n, READ_SIZE))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def _refusal(ctx: Any, proxy: CredentialProxy, rule: str, protocol: str, **detail: Any) -> Any:
    from mitmproxy.proxy import commands, layer

    proxy._refuse(rule, protocol=protocol, **detail)

    class Refused(layer.Layer):
        def _handle_event(self, event: Any) -> Any:
            yield commands.CloseConnection(self.context.client)

    return Refused(ctx)


def _looks_http(data: bytes) -> bool:
    if len(data) < 3 or not data[:3].isalpha():
        return False
    line = data.split(b"\n", 1)[0]
    return b" " in line and (b"HTTP/" in line or b"\n" not in data)


def _listener() -> socket.socket:
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so (with proto 0,
    # Nagle plus the client's delayed ACK cost ~40 ms per kept-alive request)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(256)
    s.setblocking(False)
    return s


def _resolver_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), MARK)
    s.connect(("127.0.0.1", 53))
    s.setblocking(False)
    return s


def _front_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((DNS_FRONT, 53))
    s.setblocking(False)
    return s


def _random_label(label: str) -> bool:
    """Return whether a DNS label looks like encoded data (hex, base32/64) and not a name."""
    if len(label) < ENTROPY_LABEL:
        return False
    if all(c in "0123456789abcdef" for c in label.lower()):
        return True  # hex-encoded bytes
    digits = sum(c.isdigit() for c in label) / len(label)
    bits = shannon_entropy(label)
    return bits >= ENTROPY_BITS or (bits >= 3.0 and digits >= 0.2)


class _Loop(asyncio.SelectorEventLoop):
    """The proxy's event loop: names resolve through the sandbox's resolver only."""

    def __init__(self, proxy: CredentialProxy) -> None:
        super().__init__()
        self.proxy = proxy

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> Any:
        """Return the allowed addresses of ``host`` (raise when there is none)."""
        addrs = await self.proxy.addresses(str(host), int(port))
        if not addrs:
            raise socket.gaierror(socket.EAI_NONAME, f"bastion egress: {host} is not allowed")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM,
                 socket.IPPROTO_TCP, "", (a, int(port))) for a in addrs]


class _DnsFront(asyncio.DatagramProtocol):
    """The sandbox's resolver: each query goes through :meth:`CredentialProxy.answer_dns`."""

    def __init__(self, proxy: CredentialProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        async def answer() -> None:
            reply = await self.proxy.answer_dns(data)
            if reply is not None and self.transport is not None:
                self.transport.sendto(reply, addr)

        task = asyncio.ensure_future(answer())
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Future[None]] = set()


def _query(qid: int, name: str) -> bytes:
    out = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna")
        out += bytes([len(raw)]) + raw
    return out + b"\x00" + struct.pack("!HH", 1, 1)


def _answers(msg: bytes) -> tuple[list[str], int]:
    from mitmproxy import dns

    try:
        parsed = dns.Message.unpack(msg)
    except Exception:
        return [], 0
    addrs = [str(a.ipv4_address) for a in parsed.answers if a.type == 1]
    ttl = min((a.ttl for a in parsed.answers if a.type == 1), default=0)
    return addrs, ttl


__all__ = ["CredentialProxy", "HttpRule", "ProxyPolicy"]
