"""#18: a tool's secret is bound to its API host; the sandbox (and the model) only ever hold a
placeholder, which bastion's egress proxy swaps for the real value on the wire to that host.

Written as the attack of the security review (``gate_probe.py``): the model, steered by a
prompt injection, runs ``echo $GH_TOKEN | rev`` and sends what it read to an attacker with
``web_fetch``; and the sandboxed code sends the token to another allowed host itself.

Real components: the app from a default config, a real bubblewrap sandbox in bastion's egress
namespace, nftables, dnsmasq, mitmproxy's proxy core, and real HTTPS servers (the test's own
CA) in namespaces the test creates (:mod:`tests.security._world`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.security.egress.netns import problem
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from tests.security._world import make_world

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(problem() is not None, reason=str(problem())),
    pytest.mark.skipif(BubblewrapSandbox.available() is not None,
                       reason=str(BubblewrapSandbox.available())),
]
pytest.importorskip("mitmproxy.proxy.server", reason="pip install 'bastion[egress-proxy]'")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with make_world(tmp_path_factory.mktemp("credproxy")) as world:
        out = world.run("tests.security._credproxy_scenario", "swap")
        out["requests"] = world.requests()
    return out


def test_the_api_receives_the_real_token_in_the_configured_header(
        outcome: dict[str, Any]) -> None:
    token = outcome["token"]
    api = [r for r in outcome["requests"] if r["host"] == "api.test"]
    assert {r["path"] for r in api} == {"/echo", "/py"}, api
    # curl sent "Bearer <placeholder>", urllib sent "token <placeholder>": both leave as
    # the configured format "Bearer {}" with the value
    assert all(r["auth"] == f"Bearer {token}" and r["tls"] for r in api), api


def test_a_second_allowed_host_gets_only_the_placeholder_and_it_is_audited(
        outcome: dict[str, Any]) -> None:
    other = [r for r in outcome["requests"] if r["host"] == "other.test"]
    assert len(other) == 1 and other[0]["auth"].startswith("Bearer bst_ph_"), other
    assert outcome["token"] not in json.dumps(other)
    leaks = [a["detail"] for a in outcome["audit"] if a["kind"] == "secret_placeholder_leak"]
    assert any(d["destination"] == "other.test:443" and d["bound_to"] == ["api.test:443"]
               and d["variable"] == "GH_TOKEN" for d in leaks), leaks
    # the default (placeholder_elsewhere: ask): it went out only after a human approved it
    asked = [(a["kind"], a["decision"], a["arguments"].get("destination"))
             for a in reversed(outcome["audit"]) if a["kind"].startswith("approval.")
             and (a["arguments"] or {}).get("destination")]
    assert asked == [("approval.requested", None, "other.test:443"),
                     ("approval.decision", "approved", "other.test:443")], asked


def test_each_swap_is_audited_without_the_value(outcome: dict[str, Any]) -> None:
    swaps = [a for a in outcome["audit"] if a["kind"] == "secret_swap"]
    assert {s["detail"]["path"] for s in swaps} >= {"/echo", "/py"}, swaps
    for s in swaps:
        assert s["tool"] == "shell" and s["detail"]["destination"] == "api.test:443"
        assert s["detail"]["ref"] == "secret://env/gh" and s["detail"]["variable"] == "GH_TOKEN"


def test_sandbox_env_files_output_model_and_audit_hold_no_usable_token(
        outcome: dict[str, Any]) -> None:
    token = outcome["token"]
    env = outcome["workspace"]["env.txt"]
    assert "GH_TOKEN=bst_ph_" in env and token not in env  # what the sandbox was given
    places = {"tool output": outcome["swap"]["text"], "model": outcome["model_saw"],
              "audit records": outcome["audit"], "bastion's files": outcome["audit_file"],
              "workspace": outcome["workspace"], "world": outcome["requests"]}
    for where, seen in places.items():
        text = json.dumps(seen)
        for form in (token, token[::-1]):
            if where == "world" and form == token:
                continue  # the real API legitimately received it
            assert form not in text, f"{where} holds the token ({form[:8]}...)"
    # the API echoed the Authorization header back: the sandbox got the placeholder instead
    assert '"you_sent": "Bearer' in outcome["swap"]["text"]


def test_review_exfiltration_chain_yields_nothing_usable(outcome: dict[str, Any]) -> None:
    token = outcome["token"]
    fetches = [a for a in outcome["audit"]
               if a["kind"] == "tool_call" and a["tool"] == "web_fetch"]
    assert fetches, outcome["chain_events"]
    url = json.dumps([f["arguments"] for f in fetches])
    assert "q=" in url and token[::-1] not in url and token not in url
    shell = [a for a in outcome["audit"] if a["kind"] == "tool_call" and a["tool"] == "shell"
             and "rev" in json.dumps(a["arguments"])]
    assert shell and token[::-1] not in json.dumps(shell)


def test_certificate_pinning_still_applies_behind_the_proxy(outcome: dict[str, Any]) -> None:
    assert outcome["pinned"]["text"].rstrip().endswith("502"), outcome["pinned"]
    assert not [r for r in outcome["requests"] if r["path"] == "/pinned"]
    refused = [a["detail"] for a in outcome["audit"] if a["kind"] == "egress_refused"]
    assert any(d["rule"] == "tls-verify-or-pin" and d["host"] == "api.test" for d in refused)


@pytest.fixture(scope="module")
def other_backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from bastion.security.sandbox.base import SandboxSpec
    from bastion.security.sandbox.factory import build_sandbox

    ws = tmp_path_factory.mktemp("probe")
    usable, skipped = [], {}
    for backend in ("gvisor", "podman"):
        box, why = build_sandbox(backend, SandboxSpec(ws))
        if box is None:
            skipped[backend] = why
        else:
            usable.append(backend)
    if not usable:
        return {"skipped": skipped}
    with make_world(tmp_path_factory.mktemp("backends")) as world:
        out = world.run("tests.security._credproxy_scenario", "basic:" + ",".join(usable) + ",")
        out["requests"] = world.requests()
    out["skipped"] = skipped
    return out


@pytest.mark.parametrize("backend", ["gvisor", "podman"])
def test_other_backends_hold_only_the_placeholder_and_the_api_gets_the_token(
        backend: str, other_backends: dict[str, Any]) -> None:
    if backend in other_backends["skipped"]:
        pytest.skip(f"{backend}: {other_backends['skipped'][backend]}")
    out = other_backends[backend]
    token = out["token"]
    seen = [r for r in other_backends["requests"] if token in json.dumps(r) or
            r["host"] == "other.test"]
    api = [r["auth"] for r in seen if r["host"] == "api.test"]
    assert api == [f"Bearer {token}", f"Bearer {token}"], seen
    assert token not in json.dumps([r for r in other_backends["requests"]
                                    if r["host"] == "other.test"])
    assert "GH_TOKEN=bst_ph_" in out["workspace"]["env.txt"]
    for where in ("swap", "workspace", "audit", "audit_file", "model_saw"):
        assert token not in json.dumps(out[where]), where
    leaks = [a for a in out["audit"] if a["kind"] == "secret_placeholder_leak"]
    assert {a["detail"]["destination"] for a in leaks} == {"other.test:443"}, leaks


def test_sandboxed_stdio_mcp_server_authenticates_through_the_swap(tmp_path: Path) -> None:
    (tmp_path / "world").mkdir()
    with make_world(tmp_path / "world") as world:
        out = world.run("tests.security._credproxy_scenario", "mcp")
        seen = world.requests()
    token = out["token"]
    assert [(r["host"], r["path"], r["auth"]) for r in seen] == [
        ("api.test", "/user", f"Bearer {token}")], seen  # "Bearer <placeholder>" swapped in place
    text = out["call"]["text"]
    assert out["call"]["decision"] == "allowed" and "env=bst_ph_" in text, text
    assert token not in json.dumps(out["call"]) and token not in json.dumps(out["audit"])
    swaps = [a["detail"] for a in out["audit"] if a["kind"] == "secret_swap"]
    assert swaps and swaps[0]["variable"] == "GITHUB_TOKEN", swaps
    assert {a["tool"] for a in out["audit"] if a["kind"] == "secret_swap"} == {"mcp:gh"}
    # its placeholder sent elsewhere: the approval names the MCP tool call and its session
    assert [(a["tool"], a["session_id"], a["call_id"], a["arguments"]["sandbox"])
            for a in out["asked"]] == [("gh__leak", "m2", "call-leak", "mcp:gh")], out["asked"]
    assert "403" in out["leak"]["text"] and not [r for r in seen if r["path"] == "/leak"]
