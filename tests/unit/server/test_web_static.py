"""The web UI's files: served without a token, under a strict CSP, with ETags; nothing else."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.server.app import create_app
from bastion.server.routes.web import WEB_CSP

WEB = resources.files("bastion.server").joinpath("web")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())  # no lifespan: the static routes need no app


def test_index_and_files_carry_the_strict_policy(client: TestClient) -> None:
    for path in ("/", "/web/app.js", "/web/app.css", "/web/chat.js", "/web/markdown.js",
                 "/web/api.js", "/web/pages/index.js", "/web/vendor/marked-18.2.1.esm.js"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-security-policy"] == WEB_CSP
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["x-content-type-options"] == "nosniff"
    policy = dict(p.strip().split(" ", 1) for p in WEB_CSP.split(";"))
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'" and policy["connect-src"] == "'self'"


def test_etag_revalidates_and_vendored_files_are_immutable(client: TestClient) -> None:
    first = client.get("/web/app.js")
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/web/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    vendor = client.get("/web/vendor/purify-3.4.18.min.js")
    assert "immutable" in vendor.headers["cache-control"]
    assert vendor.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("path", ["/web/../routes/web.py", "/web/%2e%2e/app.py", "/web/nope.js",
                                  "/web/vendor/", "/web/.hidden", "/web/chat.py"])
def test_only_ui_files_are_served(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code in (401, 404, 503), path  # outside /web/: the token gate answers
    assert "import " not in resp.text


def test_no_inline_script_or_style_and_no_html_sinks() -> None:
    index = WEB.joinpath("index.html").read_text()
    assert re.search(r"<script(?![^>]*\bsrc=)", index) is None
    assert "<style" not in index and " style=" not in index and " on" not in index.lower()
    own = [f for f in WEB.iterdir() if f.name.endswith(".js")]
    own += list(WEB.joinpath("pages").iterdir())
    for f in own:
        src = re.sub(r"/\*.*?\*/", "", f.read_text(), flags=re.S)
        src = "\n".join(line for line in src.splitlines() if not line.strip().startswith("//"))
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "localStorage", "sessionStorage", "document.cookie"):
            assert sink not in src, f"{f.name} uses {sink}"


def test_providers_tell_the_sign_in_page_whether_sso_is_on(make_api: Callable[..., Any]) -> None:
    api = make_api(auth=False)  # public: the sign-in page asks before anyone is signed in
    resp = api.client.get("/v1/auth/providers")
    assert resp.json() == {"api_key": True, "oidc": False, "oidc_login": None}
    api_config = api.app.config.api
    if "oidc" in type(api_config).model_fields:  # the single sign-on settings (#19)
        api_config.oidc = type(api_config.oidc).model_validate({
            "issuer": "https://idp.example", "client_id": "bastion",
            "client_secret": "secret://env/oidc"})
        resp = api.client.get("/v1/auth/providers")
        assert resp.json() == {"api_key": True, "oidc": True,
                               "oidc_login": "/v1/auth/oidc/login"}


def test_files_go_compressed_to_a_browser_that_accepts_gzip(client: TestClient) -> None:
    plain = client.get("/web/vendor/marked-18.2.1.esm.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    packed = client.get("/web/vendor/marked-18.2.1.esm.js",
                        headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert packed.headers["content-security-policy"] == WEB_CSP  # the same policy
    assert packed.headers["etag"] == plain.headers["etag"]
    assert int(packed.headers["content-length"]) < len(plain.content) // 3  # on the wire
    assert packed.content == plain.content  # decoded by the client: the same file
    refused = client.get("/web/app.js", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_versioned_urls_are_cached_for_good_and_name_one_module_each(client: TestClient) -> None:
    from bastion.server.routes.web import version

    v = version()
    index = client.get("/").text
    links = re.findall(r'(?:href|src)="(/web/[^"]+)"', index)
    assert "/web/app.js?v=" + v in links and all(link.endswith("?v=" + v) for link in links)
    assert client.get("/").headers["cache-control"] == "no-cache"  # the shell page: revalidated
    assert client.get("/web/app.js?v=" + v).headers["cache-control"] == \
        "public, max-age=31536000, immutable"
    for stale in ("/web/app.js", "/web/app.js?v=0123456789ab"):  # not this version's URL
        assert client.get(stale).headers["cache-control"] == "no-cache", stale
    own = [f"pages/{f.name}" for f in WEB.joinpath("pages").iterdir() if f.name.endswith(".js")]
    own += [f.name for f in WEB.iterdir() if f.name.endswith(".js")]
    for name in own:  # every relative import carries the version: one URL per module
        served = client.get(f"/web/{name}?v={v}").text
        specs = re.findall(r"""(?:from|import)\s*\(?\s*["'](\.{1,2}/[^"']+)["']""", served)
        assert all(s.endswith(".js?v=" + v) for s in specs), (name, specs)
    assert re.findall(r'from "(\./api\.js[^"]*)"', client.get("/web/app.js").text) == \
        ["./api.js?v=" + v]
