"""#18 item 5: protocol filtering and inspection on sandbox egress, each written as the attack.

From inside a real bubblewrap sandbox whose egress allows ``api.test`` and ``other.test`` on
443 (through bastion's proxy, :mod:`bastion.security.egress.credproxy`): raw TCP and SSH to an
allowed host and port, plain HTTP on 443, an allowed SNI with another Host header (domain
fronting), an SNI that is not the tunnel's host, DNS TXT/NULL queries, long and random labels
under an allowed domain (DNS tunnelling), asking dnsmasq directly, a method/path outside the
destination's rule, a held secret or a card number posted to an allowed host no secret is
bound to, an oversized body. Every one is refused and audited with the rule (never the
payload), and the legitimate request next to each still works.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from bastion.security.egress.netns import problem
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from tests.security._world import make_world

CARD = "4111 1111 1111 1111"  # what _credproxy_scenario.py posts to an unbound host

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(problem() is not None, reason=str(problem())),
    pytest.mark.skipif(BubblewrapSandbox.available() is not None,
                       reason=str(BubblewrapSandbox.available())),
]
pytest.importorskip("mitmproxy.proxy.server", reason="pip install 'bastion[egress-proxy]'")
pytest.importorskip("presidio_analyzer", reason="pip install 'bastion[privacy]'")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with make_world(tmp_path_factory.mktemp("dpi")) as world:
        out = world.run("tests.security._credproxy_scenario", "dpi")
        out["requests"] = world.requests()
    text = out["text"]
    assert text.startswith("exit_code: 0"), text
    out["seen"] = json.loads(text.split("stdout:\n", 1)[1].strip().splitlines()[-1])
    return out


def refused(out: dict[str, Any], kind: str, rule: str) -> list[dict[str, Any]]:
    return [a["detail"] for a in out["audit"]
            if a["kind"] == kind and a["decision"] == "denied" and a["detail"]["rule"] == rule]


def test_raw_tcp_and_ssh_to_an_allowed_host_and_port_are_refused(
        outcome: dict[str, Any]) -> None:
    seen = outcome["seen"]
    assert seen["raw_tcp_direct_22"] == "ConnectionRefusedError"  # nftables: proxy only
    assert seen["raw_tls_port_direct"] == "ConnectionRefusedError"
    assert seen["ssh_in_tunnel"] in ("open:b''", "ConnectionResetError")  # closed, no banner
    blocked = {(d["daddr"], d["dport"]) for d in refused(outcome, "egress_blocked",
                                                          "not-allowlisted")}
    assert {("93.184.215.20", 22), ("93.184.215.20", 443)} <= blocked
    assert any(d["protocol"] == "raw-tcp" for d in refused(outcome, "egress_refused",
                                                           "protocol-not-allowed"))
    assert not [r for r in outcome["requests"] if r["path"].startswith("SSH")]


def test_plain_http_on_443_is_refused(outcome: dict[str, Any]) -> None:
    seen = outcome["seen"]
    assert seen["plain_http_443_proxy"] == "403" and seen["plain_http_443_tunnel"] == "open:b''"
    assert len(refused(outcome, "egress_refused", "plain-http-on-tls-port")) == 2
    assert not [r for r in outcome["requests"] if not r["tls"]]


def test_allowed_sni_with_another_host_header_or_tunnel_is_refused(
        outcome: dict[str, Any]) -> None:
    seen = outcome["seen"]
    assert seen["host_mismatch"] == "403" and seen["sni_mismatch"] != "open"
    assert refused(outcome, "egress_refused", "host-header-mismatch")
    assert [d["sni"] for d in refused(outcome, "egress_refused",
                                      "sni-not-allowlisted")] == ["other.test"]
    assert not [r for r in outcome["requests"] if r["host"] == "evil.test"]


def test_dns_tunnelling_is_refused_and_plain_lookups_work(outcome: dict[str, Any]) -> None:
    seen = outcome["seen"]
    for attack in ("dns_txt", "dns_null", "dns_random_label", "dns_long_label"):
        assert seen[attack] == "rcode=5 answers=0", (attack, seen[attack])  # REFUSED
    assert seen["dns_bypass_to_dnsmasq"] in ("PermissionError", "ConnectionRefusedError")
    assert seen["dns_legit"] == "rcode=0 answers=1"
    rules = {d["rule"] for a in outcome["audit"] if a["kind"] == "egress_dns"
             for d in [a["detail"]] if a["decision"] == "denied"}
    assert {"dns-type", "dns-high-entropy", "dns-oversized"} <= rules
    assert refused(outcome, "egress_blocked", "dns-bypass")


def test_method_and_path_rules_per_destination(outcome: dict[str, Any]) -> None:
    seen = outcome["seen"]
    assert (seen["method_delete"], seen["path_outside"], seen["method_get"]) == (
        "403", "403", "200")
    hit = {(d["method"]) for d in refused(outcome, "egress_refused", "method-path-rule")}
    assert hit == {"DELETE", "GET"}
    assert [(r["method"], r["path"]) for r in outcome["requests"]
            if r["host"] == "api.test" and r["path"] != "/echo"] == [("GET", "/repos/x")]


def test_held_secret_or_card_number_to_an_unbound_host_is_refused(
        outcome: dict[str, Any]) -> None:
    seen, plain = outcome["seen"], outcome["plain"]
    assert (seen["post_held_secret"], seen["query_held_secret"], seen["post_card"]) == (
        "403", "403", "403")
    assert seen["post_benign"] == "200"
    bodies = json.dumps([r for r in outcome["requests"] if r["host"] == "other.test"])
    assert plain not in bodies and "4111" not in bodies and "hello world" in bodies
    assert len(refused(outcome, "egress_refused", "secret-to-unbound-host")) == 2
    assert [d["found"] for d in refused(outcome, "egress_refused",
                                        "pii-to-unbound-host")] == [["CREDIT_CARD"]]
    # the audit names the rule, never the payload
    # (the whole number: a random call id may contain "4111")
    audit = json.dumps(outcome["audit"])
    assert plain not in audit and CARD not in audit and CARD.replace(" ", "") not in audit


def test_size_cap_and_the_legitimate_swap_still_works(outcome: dict[str, Any]) -> None:
    seen = outcome["seen"]
    assert seen["post_too_big"] in ("413", "000")
    assert [d["limit"] for d in refused(outcome, "egress_refused", "size-cap")
            if d.get("direction") != "response"][:1] == [100_000]
    assert not [r for r in outcome["requests"] if "z" * 1000 in r["body"]]  # never arrived
    assert seen["legit_swap"] == "200"
    api = [r for r in outcome["requests"] if r["path"] == "/echo"]
    assert [r["auth"] for r in api] == [f"Bearer {outcome['token']}"]


def test_placeholder_to_an_unbound_host_waits_for_a_human_who_denies_it(
        outcome: dict[str, Any]) -> None:
    """``placeholder_elsewhere: ask``: the request is held and put to the approval flow."""
    assert outcome["seen"]["placeholder_elsewhere"] == "403"
    assert not [r for r in outcome["requests"] if r["path"] == "/leak"]
    asked = [a for a in reversed(outcome["audit"]) if a["kind"].startswith("approval.")
             and (a["arguments"] or {}).get("destination")]  # oldest first
    assert [(a["kind"], a["decision"], a["tool"]) for a in asked] == [
        ("approval.requested", None, "shell"), ("approval.decision", "denied", "shell")], asked
    assert asked[0]["arguments"]["destination"] == "other.test:443"
    assert asked[0]["arguments"]["variable"] == "GH_TOKEN"
    assert asked[0]["detail"]["reasons"][0] == "placeholder-to-unbound-host"
    # the approval names the session and the tool call whose sandbox sent it
    assert (asked[0]["session_id"], asked[0]["detail"]["call_id"]) == ("d1", "call-dpi")
    assert [(a["tool"], a["session_id"], a["call_id"]) for a in outcome["asked"]] == [
        ("shell", "d1", "call-dpi")]
    leaks = [a for a in outcome["audit"] if a["kind"] == "secret_placeholder_leak"]
    assert [(a["decision"], a["detail"]["destination"]) for a in leaks] == [
        ("denied", "other.test:443")]
    assert refused(outcome, "egress_refused", "placeholder-to-unbound-host")


def test_chunked_request_body_over_the_cap_is_inspected_and_refused(
        outcome: dict[str, Any]) -> None:
    """No content-length: the body must not be streamed on uninspected once it is large."""
    plain = outcome["plain"]
    assert outcome["seen"]["chunked_post_over_cap"] in ("413", "000")
    assert not [r for r in outcome["requests"] if r["path"] == "/upload"]  # never arrived
    assert plain not in json.dumps(outcome["requests"])
    caps = [d for d in refused(outcome, "egress_refused", "size-cap")
            if d.get("direction") != "response"]
    assert [d["limit"] for d in caps] == [100_000, 100_000]  # content-length, then chunked
    assert plain not in json.dumps(outcome["audit"])


def test_chunked_response_over_the_cap_is_cut_at_the_cap(outcome: dict[str, Any]) -> None:
    """No content-length: the cap holds on the bytes relayed, not on a header."""
    code, status, got = outcome["seen"]["chunked_response_over_cap"].split()
    assert code != "0" and status == "200" and int(got) <= 2_000_000, (code, status, got)
    cut = [d for d in refused(outcome, "egress_refused", "size-cap")
           if d.get("direction") == "response"]
    assert [(d["host"], d["limit"]) for d in cut] == [("other.test", 2_000_000)], cut
    assert cut[0]["relayed"] <= 2_000_000
    assert outcome["seen"]["chunked_response_under_cap"] == "0 200 300000"


def test_a_large_download_arrives_whole_and_in_order(outcome: dict[str, Any]) -> None:
    """Bodies of 1 MiB or more are relayed below mitmproxy's layers: nothing lost or moved."""
    body = b"".join((b"%07d\n" % i) * 8192 for i in range(30))[:1_900_000]  # _world's /big
    assert outcome["seen"]["big_download"] == hashlib.sha256(body).hexdigest()
