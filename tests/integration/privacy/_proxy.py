"""A recording HTTP proxy: forwards every request to a real server, keeps both bodies."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@dataclass
class Exchange:
    method: str
    path: str
    request: str
    response: str
    seconds: float = 0.0


@dataclass
class RecordingProxy:
    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def sent(self) -> str:
        """Everything the remote was sent (all request bodies)."""
        return "\n".join(e.request for e in self.exchanges)

    def answered(self) -> str:
        """Everything the remote answered (all response bodies)."""
        return "\n".join(e.response for e in self.exchanges)

    def start(self) -> RecordingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "authorization", "accept")}
                t0 = time.monotonic()
                with httpx.Client(timeout=120) as client:
                    resp = client.request(self.command, proxy.upstream + self.path,
                                          content=body, headers=headers)
                data = resp.content
                proxy.exchanges.append(Exchange(self.command, self.path,
                                                body.decode("utf-8", "replace"),
                                                data.decode("utf-8", "replace"),
                                                time.monotonic() - t0))
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("content-type", "text/plain"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _forward  # noqa: N815
            do_POST = _forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
