"""Run inside a network namespace: a legitimate node and a rogue one, each a tiny HTTP server
that records the Authorization header of every request it gets. Usage:
``_mdns_announcers.py LEGIT_IP ROGUE_IP PORT LOG FLAG``.

``gpu1`` is announced at once with bastion's own Announcer (what ``bastion node serve``
does). When the file FLAG appears, the rogue announces, with plain zeroconf, an impostor
``gpu1`` (another mDNS instance, its own address) and an unknown node ``rogue1``."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zeroconf as zc
from zeroconf.asyncio import AsyncZeroconf

from bastion.cluster.discovery import SERVICE_TYPE, Announcement, Announcer


def serve(ip: str, port: int, who: str, log: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            with log.open("a") as fh:
                fh.write(json.dumps({"server": who, "path": self.path,
                                     "auth": self.headers.get("Authorization")}) + "\n")
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    httpd = ThreadingHTTPServer((ip, port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()


async def rogue_announce(azc: AsyncZeroconf, instance: str, name: str, ip: str,
                         port: int) -> None:
    props = {"v": "1", "name": name, "engine": "llama_cpp", "tier": "small", "models": "m",
             "max_context": "2048", "path": "/v1"}
    info = zc.ServiceInfo(SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}",
                          addresses=[socket.inet_aton(ip)], port=port, properties=props,
                          server=f"{instance}.local.", host_ttl=30, other_ttl=30)
    await azc.async_register_service(info)


async def main(legit: str, rogue: str, port: int, log: Path, flag: Path) -> None:
    serve(legit, port, "legit", log)
    serve(rogue, port, "rogue", log)
    node = Announcer(Announcement(name="gpu1", port=port, addresses=(legit,), models=("m",)))
    await node.start()
    print("legit announced", flush=True)
    while not flag.exists():
        await asyncio.sleep(0.1)
    azc = AsyncZeroconf(interfaces=[rogue])
    await rogue_announce(azc, "evil-gpu1", "gpu1", rogue, port)
    await rogue_announce(azc, "rogue1", "rogue1", rogue, port)
    print("rogue announced", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]),
                     Path(sys.argv[5])))
