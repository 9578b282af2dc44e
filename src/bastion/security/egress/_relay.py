"""The rest of a large response body, relayed below mitmproxy's layers (the proxy's fast path).

Once the response headers passed inspection and the first bytes of the body went out through
mitmproxy, :class:`BodyRelay` takes over the server connection's transport (as its asyncio
protocol, the :class:`asyncio.BufferedProtocol` kind) until exactly the announced bytes went
on: each read of the server socket lands in one reused buffer, is fed to the server side's
TLS object, decrypted record by record into a second buffer and encrypted in one call towards
the client, whose ciphertext is read into a third buffer and sent to the client's socket
(through its transport, as a copy, only what the socket did not take). The TLS objects are
mitmproxy's own (pyOpenSSL, memory BIOs), used in order; the calls go straight to OpenSSL
through pyOpenSSL's binding, so a megabyte costs a handful of Python calls and no per-read
allocations, where the layer stack (and pyOpenSSL's per-call buffers, exceptions and copies)
cost ~3 ms per MB (``bench/egress_proxy.py``).

No coroutine wakes up per read: the transport calls :meth:`BodyRelay.buffer_updated`. When the
client's transport holds more than its high-water mark, the server's reads pause until it
drained (the server's TCP window then slows the server down).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from typing import Any

CHUNK = 1 << 18  # one read of the server socket (asyncio's own largest)
PLAIN = 1 << 18  # plaintext decrypted before one encryption towards the client
_RECORD = 1 << 14  # TLS's largest record payload


_Buffers = tuple[bytearray, bytearray, bytearray, Any, Any, Any]
_POOL = threading.local()  # per proxy thread (one sandbox's proxy): its relays' buffers


def _take_buffers(ffi: Any) -> _Buffers:
    """Return a set of relay buffers: a freed one of this thread, else new ones.

    Fresh buffers of this size are fresh mappings (zero pages, faulted in on first use):
    ~0.8 ms per relay that a reused set does not pay.
    """
    free: list[_Buffers] = _POOL.__dict__.setdefault("free", [])
    if free:
        return free.pop()
    raw = bytearray(CHUNK), bytearray(PLAIN), bytearray(PLAIN + (PLAIN // _RECORD + 1) * 256)
    return (*raw, *(ffi.from_buffer(b) for b in raw))


def _give_back(buffers: _Buffers) -> None:
    free: list[_Buffers] = _POOL.__dict__.setdefault("free", [])
    if len(free) < 2:
        free.append(buffers)


class BodyRelay(asyncio.BufferedProtocol):
    """Relay ``left`` bytes of a response body from the server's TLS to the client's.

    Args:
        left: The body's bytes still to come (checked against the cap at the headers).
        server_tls: mitmproxy's pyOpenSSL connection towards the server.
        client_tls: mitmproxy's pyOpenSSL connection towards the sandbox.
        server_writer: The server connection's stream writer (its transport is taken over).
        client_writer: The client connection's stream writer.
        activity: Called on every read (mitmproxy's inactivity watchdog).

    """

    def __init__(self, left: int, server_tls: Any, client_tls: Any, server_writer: Any,
                 client_writer: Any, activity: Any) -> None:
        from OpenSSL.SSL import _ffi, _lib  # type: ignore[attr-defined]

        self.left = left
        self._lib, self._ffi = _lib, _ffi
        self._srv, self._srv_in, self._srv_out = (server_tls._ssl, server_tls._into_ssl,
                                                  server_tls._from_ssl)
        self._cli, self._cli_out = client_tls._ssl, client_tls._from_ssl
        self._server, self._client = server_writer.transport, client_writer.transport
        self._client_writer = client_writer
        self._activity = activity
        self._buffers = _take_buffers(_ffi)
        self._in, self._plain, self._out, self._in_p, self._plain_p, self._out_p = self._buffers
        self._out_v = memoryview(self._out)
        self._want_read = _lib.SSL_ERROR_WANT_READ
        self._original: Any = None
        self._done: asyncio.Future[None] | None = None
        self._draining: asyncio.Future[None] | None = None
        self._sock: socket.socket | None = None
        self.pauses = 0  # times the server's reads waited for the client

    @staticmethod
    def usable(server_tls: Any, client_tls: Any) -> bool:
        """Return whether both TLS objects expose what the relay needs (pyOpenSSL's)."""
        return all(hasattr(t, a) for t in (server_tls, client_tls)
                   for a in ("_ssl", "_into_ssl", "_from_ssl"))

    async def run(self, reader: asyncio.StreamReader) -> None:
        """Relay until the body is complete or either side fails or closes.

        ``reader`` is the server connection's stream reader: what it buffered already comes
        first; meanwhile the transport delivers to this relay, afterwards to it again.
        """
        server = self._server
        if self.left <= 0 or server.is_closing() or self._client.is_closing():
            return
        self._done = asyncio.get_running_loop().create_future()
        self._original = server.get_protocol()
        raw = self._client.get_extra_info("socket")
        if raw is not None:  # a duplicate descriptor of the client's socket (non-blocking)
            self._sock = socket.socket(fileno=os.dup(raw.fileno()))
            self._sock.setblocking(False)
        buffered = reader._buffer  # type: ignore[attr-defined]
        eof = reader._eof or reader.exception() is not None  # type: ignore[attr-defined]
        server.set_protocol(self)
        try:
            if buffered:
                data = bytes(buffered)
                buffered.clear()
                self._feed(self._ffi.from_buffer(data), len(data))
            if eof:
                self._finish()
            if not self._done.done():
                reader._paused = False  # type: ignore[attr-defined]  # reads resume here
                server.resume_reading()
            await self._done
        finally:
            self._finish()
            if self._draining is not None:
                self._draining.cancel()

    # ---- asyncio.BufferedProtocol ---------------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        """Return the buffer the next read of the server socket fills."""
        return memoryview(self._in)

    def buffer_updated(self, nbytes: int) -> None:
        """Relay what one read of the server socket brought."""
        self._feed(self._in_p, nbytes)

    def eof_received(self) -> bool | None:
        """The server closed: the body ends here (short if bytes are missing)."""
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Hand the loss to the connection's own protocol too (mitmproxy's reader/writer)."""
        self._finish()
        self._original.connection_lost(exc)

    def pause_writing(self) -> None:
        """Forward to the connection's own protocol (writes to the server: TLS upkeep)."""
        self._original.pause_writing()

    def resume_writing(self) -> None:
        """Forward to the connection's own protocol."""
        self._original.resume_writing()

    # ---- the relay ----------------------------------------------------------------------
    def _feed(self, data: Any, nbytes: int) -> None:
        lib = self._lib
        if self._done is None or self._done.done():
            return
        self._activity()
        lib.BIO_write(self._srv_in, data, nbytes)
        srv, plain, want_read = self._srv, self._plain_p, self._want_read
        more = True
        while more:
            filled = 0
            while filled < PLAIN:
                n = lib.SSL_read(srv, plain + filled, PLAIN - filled)
                if n > 0:
                    filled += n
                    continue
                more = False
                if lib.SSL_get_error(srv, n) != want_read:  # close_notify, an alert
                    lib.ERR_clear_error()
                    self._upkeep()
                    self._send(filled)
                    self._finish()
                    return
                break
            if filled and not self._send(filled):
                return
        self._upkeep()
        if self._client.get_write_buffer_size() > self._client.get_write_buffer_limits()[1]:
            self._server.pause_reading()  # until the client took its share
            self.pauses += 1
            self._draining = asyncio.ensure_future(self._resume_after_drain())

    def _send(self, filled: int) -> bool:
        """Encrypt ``filled`` plaintext bytes (at most what is left) towards the client."""
        lib, cli, out = self._lib, self._cli, self._out_p
        n = min(filled, self.left)
        if n <= 0:
            return False
        done, plain = 0, self._plain_p
        while done < n:  # one record per call (pyOpenSSL enables partial writes)
            wrote = lib.SSL_write(cli, plain + done, n - done)
            if wrote <= 0:
                lib.ERR_clear_error()
                self._finish()
                return False
            done += wrote
        self.left -= n
        while (got := lib.BIO_read(self._cli_out, out, len(self._out))) > 0:
            self._to_client(self._out_v[:got])
        if self.left <= 0 or self._client.is_closing():
            self._finish()
        return self._done is not None and not self._done.done()

    def _to_client(self, data: memoryview) -> None:
        """Send ``data`` (a view of a reused buffer) to the client, in order.

        Straight to the socket while the client's transport holds nothing (the common
        case: no copy); what the socket does not take goes to the transport as a copy
        (asyncio 3.12+ keeps the views it is given, and the buffer is reused).
        """
        if self._sock is not None and not self._client.get_write_buffer_size():
            try:
                data = data[self._sock.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # the client went away
                self._finish()
                return
        if data:
            self._client.write(bytes(data))

    def _upkeep(self) -> None:
        """Send what the server side's TLS wrote itself (a key update's answer, an alert)."""
        while (got := self._lib.BIO_read(self._srv_out, self._out_p, len(self._out))) > 0:
            self._server.write(bytes(self._out_v[:got]))

    async def _resume_after_drain(self) -> None:
        try:
            await self._client_writer.drain()
        except (OSError, RuntimeError):
            self._finish()
            return
        if self._done is not None and not self._done.done():
            self._server.resume_reading()

    def _finish(self) -> None:
        if self._done is None or self._done.done():
            return
        self._done.set_result(None)
        _give_back(self._buffers)  # this thread's next relay reuses them
        if self._sock is not None:
            self._sock.close()  # the duplicate only; the connection stays the transport's
            self._sock = None
        with contextlib.suppress(Exception):
            self._server.pause_reading()
        self._server.set_protocol(self._original)
