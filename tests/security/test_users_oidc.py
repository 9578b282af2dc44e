"""OpenID Connect single sign-on against a real provider (issue #19).

The provider is the npm package ``oidc-provider`` (``tests/fixtures/oidc_provider.mjs``,
installed by scripts/test-assets.sh into .venv/oidc-node, 8.8.1) on loopback, with its own login
and consent pages (devInteractions); bastion is a live ``python -m bastion serve`` whose
client secret is a ``secret://env/...`` reference. The happy path runs in real Chromium:
login -> the provider's form -> consent -> back -> ``/v1/auth/me`` shows the mapped user and
the roles of the ``bastion_roles`` claim. The attacks drive the same provider with httpx
(quicker, and the callback URL can be held back): a wrong state, a replayed callback, a
replayed code under a fresh state, an ID token for another audience, a tampered signature,
a user outside the allowed domain; and no token, code or client secret in the logs, audit
or answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest
import yaml

from bastion.security.keystore import open_store
from tests.integration.server.test_live_server import _env, _wait_for_line, serving

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(os.environ.get("BASTION_TEST_OIDC_NODE", ROOT / ".venv" / "oidc-node"))
PROVIDER = ROOT / "tests" / "fixtures" / "oidc_provider.mjs"
TOKEN = "oidc-live-admin-token-0123456789abcdef"
SECRET = "oidc-client-secret-" + secrets.token_hex(16)
CALLBACK = "/v1/auth/oidc/callback"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    base: str
    issuer: str
    home: Path
    provider_log: Path
    seen: list[str] = field(default_factory=list)  # codes and tokens that must not leak


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not (NODE_DIR / "node_modules" / "oidc-provider").exists() or not shutil.which("node"):
        pytest.skip("oidc-provider missing: run scripts/test-assets.sh")
    home = tmp_path_factory.mktemp("oidc-home")
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    (home / "bastion.yaml").write_text(yaml.safe_dump({
        "model": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "none"},
        "api": {"token": TOKEN, "oidc": {
            "issuer": issuer, "client_id": "bastion",
            "client_secret": "secret://env/oidc_client_secret",
            "scopes": ["openid", "email", "profile", "bastion"],
            "match": "email", "allowed_domains": ["example.org"], "auto_provision": True,
            "roles_claim": "bastion_roles"}},
        "memory": {"enabled": True, "semantic": False},
        "intelligence": {"enabled": False},
    }))
    os.environ["BASTION_SECRET_OIDC_CLIENT_SECRET"] = SECRET
    log = home / "provider.log"
    try:
        with serving(home) as base:
            env = {**os.environ, "OIDC_NODE_DIR": str(NODE_DIR), "PORT": str(port),
                   "REDIRECT_URI": base + CALLBACK, "CLIENT_SECRET": SECRET}
            with log.open("w") as out:
                node = subprocess.Popen(["node", str(PROVIDER)], env=env, stdout=out,
                                        stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"{issuer}/.well-known/openid-configuration").is_success:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                else:
                    raise AssertionError(f"oidc-provider did not start: {log.read_text()}")
                yield World(base, issuer, home, log)
            finally:
                node.terminate()
                try:
                    node.wait(10)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
    finally:
        os.environ.pop("BASTION_SECRET_OIDC_CLIENT_SECRET", None)


def _form(html: str) -> tuple[str, dict[str, str]]:
    """Return the action and hidden fields of the provider's (devInteractions) form."""
    action = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert action, html[:500]
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"',
                             html))
    return action.group(1), fields


def _provider_walk(client: httpx.Client, url: str, who: str) -> str:
    """Follow a sign-in at the provider as ``who``; return the callback URL it redirects to."""
    for _ in range(20):
        r = client.get(url) if not url.startswith("POST ") else None
        assert r is not None
        if r.is_redirect:
            url = urljoin(str(r.url), r.headers["location"])
            if CALLBACK in url:
                return url
            continue
        action, fields = _form(r.text)
        if 'name="login"' in r.text:
            fields.update({"login": who, "password": "any"})
        r = client.post(urljoin(str(r.url), action), data=fields)
        assert r.is_redirect, r.text[:500]
        url = urljoin(str(r.url), r.headers["location"])
        if CALLBACK in url:
            return url
    raise AssertionError("the provider did not redirect back")


def _start(world: World, client: httpx.Client) -> str:
    """Start a sign-in at bastion; return the provider URL (the state cookie is in client)."""
    r = client.get(f"{world.base}/v1/auth/oidc/login")
    assert r.status_code == 302, r.text
    return r.headers["location"]


def _signed_in_callback(world: World, who: str = "alice") -> tuple[httpx.Client, str]:
    client = httpx.Client(timeout=30)
    return client, _provider_walk(client, _start(world, client), who)


def _audit(world: World) -> str:
    with httpx.Client(base_url=world.base, headers={"Authorization": f"Bearer {TOKEN}"}) as a:
        return a.get("/v1/audit/export").text


def test_sign_in_in_real_chromium_maps_the_user_and_roles(world: World) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{world.base}/v1/auth/oidc/login")
            assert page.url.startswith(world.issuer)  # the provider's own login form
            page.fill("input[name=login]", "alice")
            page.fill("input[name=password]", "whatever")
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/interaction/.*"))
            page.click("button[type=submit]")  # consent
            page.wait_for_url(f"{world.base}/")
            cookies = {c["name"]: c for c in page.context.cookies()}
            session = cookies["bastion_session"]
            assert session["httpOnly"] and session["sameSite"] == "Strict"
            page.goto(f"{world.base}/v1/auth/me")
            me = json.loads(page.inner_text("body"))
        finally:
            browser.close()
    assert me["user"] == "alice@example.org" and me["via"] == "oidc"
    assert me["roles"] == ["approver", "user"]
    assert set(me["scopes"]) == {"approvals", "chat", "knowledge:write", "sessions:read",
                                 "sessions:write"}
    assert me["key_id"].startswith("oidc:")


def test_a_callback_with_a_wrong_state_is_refused(world: World) -> None:
    client, url = _signed_in_callback(world)
    query = parse_qs(urlparse(url).query)
    world.seen.append(query["code"][0])
    forged = url.replace(query["state"][0], "forged-" + "A" * 40)
    r = client.get(forged)
    assert r.status_code == 401 and "set-cookie" not in {k.lower() for k in r.headers}
    err = r.json()["error"]
    assert err["code"] == "oidc_state" and "\n" not in err["message"]
    # nor is a real state accepted from another browser (no state cookie)
    r = httpx.get(url)
    assert r.status_code == 401 and r.json()["error"]["code"] == "oidc_state"


def test_a_replayed_callback_or_code_is_refused(world: World) -> None:
    client, url = _signed_in_callback(world)
    world.seen.append(parse_qs(urlparse(url).query)["code"][0])
    first = client.get(url)
    assert first.status_code == 303 and "bastion_session" in first.cookies
    again = client.get(url)  # the same callback once more
    assert again.status_code == 401 and again.json()["error"]["code"] == "oidc_state"
    # the old code under a fresh state of this browser: the provider refuses the code
    fresh = parse_qs(urlparse(_start(world, client)).query)["state"][0]
    code = parse_qs(urlparse(url).query)["code"][0]
    r = client.get(f"{world.base}{CALLBACK}", params={"state": fresh, "code": code})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "oidc_refused"
    assert "invalid_grant" in r.json()["error"]["message"]


def test_a_user_outside_the_allowed_domain_is_refused(world: World) -> None:
    client, url = _signed_in_callback(world, who="mallory")  # roles claim: admin
    r = client.get(url)
    assert r.status_code == 403 and "bastion_session" not in r.cookies
    assert r.json()["error"]["code"] == "oidc_user"
    assert "mallory@evil.example is not in an allowed domain" in r.json()["error"]["message"]


def _token_for(world: World, client_id: str, secret: str) -> tuple[dict[str, str], str]:
    """Run the code flow for ``client_id`` by hand; return its token response and nonce."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    nonce = secrets.token_urlsafe(16)
    client = httpx.Client(timeout=30)
    url = httpx.URL(f"{world.issuer}/auth", params={
        "client_id": client_id, "response_type": "code", "scope": "openid email bastion",
        "redirect_uri": world.base + CALLBACK, "state": "s" * 20, "nonce": nonce,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    back = _provider_walk(client, str(url), "alice")
    code = parse_qs(urlparse(back).query)["code"][0]
    r = httpx.post(f"{world.issuer}/token", auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": world.base + CALLBACK})
    assert r.status_code == 200, r.text
    return r.json(), nonce


def test_id_tokens_for_another_audience_or_with_a_bad_signature_are_refused(
        world: World) -> None:
    """authlib's verification, as the callback runs it, on real tokens of the provider."""
    from bastion.config.model import OidcConfig
    from bastion.server.auth_oidc import OidcSignIn
    from bastion.server.errors import ApiError

    config = OidcConfig(issuer=world.issuer, client_id="bastion",
                        client_secret="secret://env/x", scopes=["openid", "email", "bastion"])
    store = open_store(world.home)
    signin = OidcSignIn(config, SECRET, store)
    good, nonce = _token_for(world, "bastion", SECRET)
    claims = asyncio.run(signin.verify(good, nonce))
    assert claims["email"] == "alice@example.org" and claims["aud"] == "bastion"

    other, other_nonce = _token_for(world, "other-app", "other-app-secret-0123456789abcdef")
    head, body, sig = good["id_token"].split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    cases = {
        "aud": (other, other_nonce),
        "signature": ({**good, "id_token": f"{head}.{body}.{flipped}"}, nonce),
        "nonce": (good, "another-nonce"),
    }
    for name, (token, n) in cases.items():
        with pytest.raises(ApiError) as caught:
            asyncio.run(signin.verify(token, n))
        err = caught.value
        assert err.status == 401 and err.code == "oidc_id_token", (name, err.message)
        assert "\n" not in err.message and token["id_token"] not in err.message
        world.seen += [token["id_token"], token["access_token"]]
    store.close()


def test_a_sign_in_survives_a_restart_between_login_and_callback(world: World) -> None:
    """The login was served by one process, the callback by a fresh one on the same home (as
    after a restart): the sign-in under way is in users.db, so it completes there, once."""
    client, url = _signed_in_callback(world)
    world.seen.append(parse_qs(urlparse(url).query)["code"][0])
    out = world.home / "restarted.out"
    with out.open("w") as o:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                env=_env(world.home), stdout=o, stderr=subprocess.STDOUT,
                                cwd=world.home)
    try:
        port = _wait_for_line(out, proc, r"http://127\.0\.0\.1:(\d+)", time.monotonic() + 120)
        fresh = url.replace(world.base, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                r = client.get(fresh)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.2)
        assert r.status_code == 303 and "bastion_session" in r.cookies, r.text
        again = client.get(url)  # the first process: taken already, by the other one
        assert again.status_code == 401 and again.json()["error"]["code"] == "oidc_state"
    finally:
        proc.terminate()
        proc.wait(20)


def test_no_code_token_or_client_secret_in_logs_audit_or_answers(world: World) -> None:
    client, url = _signed_in_callback(world)
    code = parse_qs(urlparse(url).query)["code"][0]
    r = client.get(url)
    assert r.status_code == 303
    with httpx.Client(base_url=world.base, cookies={"bastion_session":
                                                    r.cookies["bastion_session"]}) as b:
        assert b.get("/v1/auth/me").json()["user"] == "alice@example.org"
    audit = _audit(world)
    assert '"via": "oidc"' in audit or '"via":"oidc"' in audit
    logs = (world.home / "serve.out").read_text() + (world.home / "serve.err").read_text()
    for text in (audit, logs, r.text):
        assert SECRET not in text and code not in text
        for seen in world.seen:
            assert seen not in text
