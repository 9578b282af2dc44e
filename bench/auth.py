"""Per-request cost of users, scoped keys and quotas vs the single api.token, in one run.

    python bench/auth.py [--n 5000]

1. The check alone, alternating call by call on the same machine state:
   - baseline: the single-token path as it was (``hmac.compare_digest`` of the presented
     token against ``api.token``);
   - keys: ``bastion.server.deps.authenticate`` with a user's ``bst_`` key: one indexed
     SQLite read of the key (HMAC-SHA-256 + constant-time compare), the route's scope from
     ``server/scopes.py``, and a ``requests`` quota charged in the SQLite ``limits`` storage.
   - cookie: the same ``authenticate`` with the browser's ``bastion_session`` cookie (one
     indexed read of the session joined with its user and key, the route's scope, the
     quota); ``POST /v1/auth/login`` made it from the quota'd key.
2. A whole ``GET /v1/models`` through the ASGI app (httpx ASGITransport, no sockets), with
   the api.token (the admin's key, no quota) vs the user keys and the cookie, rotating.
Prints p50/p99 of each and the added ms at p50. Target (issue 19): <= 0.2 ms p50 added.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench._stats import line  # noqa: E402

TOKEN = "bench-admin-token-0123456789abcdefghijkl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    os.environ["BASTION_HOME"] = str(home)
    from pydantic import SecretStr
    from starlette.requests import HTTPConnection

    from bastion.app import build_app
    from bastion.config.model import ApiConfig, Config, MemoryConfig
    from bastion.security.identity import Quota
    from bastion.security.keystore import open_store
    from bastion.server.app import create_app
    from bastion.server.deps import PRINCIPAL_KEY, authenticate
    from bastion.testing import ScriptedModel

    store = open_store(home)
    store.add_user("alice")
    key, _ = store.create_key("alice", scopes=["chat"],
                              quota=Quota(requests=f"{10 * args.n}/minute"))
    plain, _ = store.create_key("alice", scopes=["chat"])
    store.close()
    app = build_app(Config(api=ApiConfig(token=SecretStr(TOKEN)),
                           memory=MemoryConfig(enabled=False)), model=ScriptedModel())
    api = create_app(app)

    def conn(token: str) -> HTTPConnection:
        return HTTPConnection({"type": "http", "method": "GET", "path": "/v1/models",
                               "headers": [(b"authorization", f"Bearer {token}".encode())],
                               "query_string": b"", "app": api})

    def cookie_conn(session: str) -> HTTPConnection:
        return HTTPConnection({"type": "http", "method": "GET", "path": "/v1/models",
                               "headers": [(b"cookie", f"bastion_session={session}".encode())],
                               "query_string": b"", "app": api})

    expected = TOKEN.encode()
    authenticate(conn(key))  # opens the store, makes the admin key
    import httpx

    async def login() -> str:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            r = await client.post("/v1/auth/login", json={"api_key": key})
            assert r.status_code == 200, r.text
            return str(r.cookies["bastion_session"])

    session = asyncio.run(login())
    base: list[float] = []
    keyed: list[float] = []
    cookied: list[float] = []
    for _ in range(args.n):
        c = conn(TOKEN)
        t = time.perf_counter()
        header = c.headers.get("authorization") or ""
        ok = hmac.compare_digest(header.partition(" ")[2].encode(), expected)
        base.append((time.perf_counter() - t) * 1000)
        assert ok
        c = conn(key)
        t = time.perf_counter()
        who = authenticate(c)
        keyed.append((time.perf_counter() - t) * 1000)
        assert who.user == "alice" and c.scope[PRINCIPAL_KEY] is who
        c = cookie_conn(session)
        t = time.perf_counter()
        who = authenticate(c)
        cookied.append((time.perf_counter() - t) * 1000)
        assert who.user == "alice"
    print("1. the check alone (alternating)")
    print(line("baseline: single api.token compare", base, width=44, digits=4))
    print(line("keys: key + scope + requests quota", keyed, width=44, digits=4))
    added = statistics.median(keyed) - statistics.median(base)
    print(f"   added at p50: {added:.4f} ms   (target <= 0.2 ms)")
    print(line("cookie: session + scope + requests quota", cookied, width=44, digits=4))
    added = statistics.median(cookied) - statistics.median(base)
    print(f"   added at p50: {added:.4f} ms   ratio to keys "
          f"{statistics.median(cookied) / statistics.median(keyed):.3f}")

    async def whole() -> dict[str, list[float]]:
        transport = httpx.ASGITransport(app=api)
        out: dict[str, list[float]] = {TOKEN: [], plain: [], key: [], session: []}
        order = [TOKEN, plain, key, session]
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for i in range(min(args.n, 2000)):
                for token in order[i % 4:] + order[:i % 4]:  # each goes first as often
                    headers = ({"Cookie": f"bastion_session={token}"} if token == session
                               else {"Authorization": f"Bearer {token}"})
                    t = time.perf_counter()
                    r = await client.get("/v1/models", headers=headers)
                    out[token].append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, r.text
        return out

    got = asyncio.run(whole())
    print("2. GET /v1/models through the ASGI app (rotating order)")
    base_p50 = statistics.median(got[TOKEN])
    for label, token in (("api.token (admin key, no quota)", TOKEN),
                         ("user key, scope chat", plain),
                         ("user key, scope chat + requests quota", key),
                         ("cookie of that key (browser sign-in)", session)):
        print(line(label, got[token], width=44, digits=4))
        if token != TOKEN:
            p50 = statistics.median(got[token])
            print(f"   added at p50: {p50 - base_p50:.4f} ms   ratio {p50 / base_p50:.3f}")
    app.audit.close()


if __name__ == "__main__":
    main()
