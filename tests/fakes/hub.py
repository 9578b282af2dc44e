"""A local Hugging Face Hub: the endpoints the real ``huggingface_hub`` client calls for a pull.

* ``GET /api/models/{repo}[/revision/{rev}]`` (``?blobs=true``): model info with ``sha`` and
  ``siblings`` carrying LFS ``sha256``/``size``, ``cardData.license``.
* ``HEAD|GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit``, ``X-Linked-Etag`` (the LFS
  sha256), ``ETag``, ``Content-Length``, ``Accept-Ranges``; ``Range: bytes=N-`` gives a 206.

Serves real files from disk. Knobs: ``gated`` repos answer 401 without an
``Authorization: Bearer <token>`` header; ``corrupt`` flips one byte in what ``resolve``
sends (the metadata keeps the true hash); ``rate`` caps the bytes per second of a download.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Repo:
    """One repo: file name -> path on disk."""

    files: dict[str, Path]
    license: str = "apache-2.0"
    gated_token: str | None = None  # a token the repo wants; None = public
    sha: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, path in self.files.items():
            with path.open("rb") as f:
                self.sha[name] = hashlib.file_digest(f, "sha256").hexdigest()


class FakeHub:
    """Run the fake hub on 127.0.0.1 in a thread (use as a context manager)."""

    def __init__(self, repos: dict[str, Repo]) -> None:
        self.repos = repos
        self.corrupt = False
        self.rate: float | None = None  # bytes per second, None = as fast as possible
        self.ignore_range = False  # answer 200 with the whole file, as some CDNs do
        self.cut_after: int | None = None  # drop the next body's connection after this many bytes
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub._handle(self, body=True)

            def do_HEAD(self) -> None:
                hub._handle(self, body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to put in ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- handlers -----------------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
              headers: dict[str, str] | None = None, send_body: bool = True) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if send_body and body:
            h.wfile.write(body)

    def _authorised(self, h: BaseHTTPRequestHandler, repo: Repo) -> bool:
        if repo.gated_token is None:
            return True
        return h.headers.get("Authorization") == f"Bearer {repo.gated_token}"

    def _handle(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = h.path.split("?", 1)[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
        if m:
            return self._info(h, m.group(1), body)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(h, m.group(1), m.group(3), body)
        self._send(h, 404, b'{"error": "not found"}', send_body=body)

    def _repo(self, h: BaseHTTPRequestHandler, name: str, body: bool) -> Repo | None:
        repo = self.repos.get(name)
        if repo is None:
            self._send(h, 404, b'{"error": "Repository not found"}',
                       {"X-Error-Code": "RepoNotFound"}, send_body=body)
            return None
        if not self._authorised(h, repo):
            self._send(h, 401, b'{"error": "Access to this model is restricted"}',
                       {"X-Error-Code": "GatedRepo",
                        "X-Error-Message": "Access to this model is restricted"}, send_body=body)
            return None
        return repo

    def _info(self, h: BaseHTTPRequestHandler, name: str, body: bool) -> None:
        repo = self._repo(h, name, body)
        if repo is None:
            return
        siblings = [{"rfilename": "README.md", "size": 10, "blobId": "0" * 40}]
        for fname, p in repo.files.items():
            size = p.stat().st_size
            siblings.append({"rfilename": fname, "size": size, "blobId": repo.sha[fname][:40],
                             "lfs": {"sha256": repo.sha[fname], "size": size,
                                     "pointerSize": 134}})
        data = {"id": name, "modelId": name, "sha": COMMIT, "private": False,
                "gated": repo.gated_token is not None, "siblings": siblings,
                "cardData": {"license": repo.license}, "tags": ["gguf"]}
        self._send(h, 200, json.dumps(data).encode(), {"Content-Type": "application/json"},
                   send_body=body)

    def _resolve(self, h: BaseHTTPRequestHandler, name: str, fname: str, body: bool) -> None:
        repo = self._repo(h, name, body)
        if repo is None:
            return
        p = repo.files.get(fname)
        if p is None:
            self._send(h, 404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"},
                       send_body=body)
            return
        size = p.stat().st_size
        start = 0
        status = 200
        rng = h.headers.get("Range")
        if rng and not self.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            if m:
                start, status = int(m.group(1)), 206
        headers = {"X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{repo.sha[fname]}"',
                   "ETag": f'"{repo.sha[fname]}"', "X-Linked-Size": str(size),
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(size - start))
        h.end_headers()
        if not body:
            return
        flip = size // 2 if self.corrupt else -1
        cut, self.cut_after = self.cut_after, None
        chunk = 256 * 1024
        t0, sent = time.monotonic(), 0
        try:
            with p.open("rb") as f:
                f.seek(start)
                pos = start
                while data := f.read(chunk if cut is None else min(chunk, cut - sent)):
                    if pos <= flip < pos + len(data):
                        buf = bytearray(data)
                        buf[flip - pos] ^= 0xFF
                        data = bytes(buf)
                    h.wfile.write(data)
                    pos += len(data)
                    sent += len(data)
                    if cut is not None and sent >= cut:  # a dropped connection mid-body
                        h.wfile.flush()
                        h.close_connection = True
                        h.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if self.rate:
                        ahead = sent / self.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass
