"""F14: an allowlisted name that resolves to a private, loopback, link-local (cloud metadata)
or CGNAT address must not open the LAN to a sandbox, and the host must not forward sandbox
traffic there either; the legitimately allowed public host keeps working.

Real nftables, dnsmasq, bubblewrap and bastion's own uplink, in namespaces made here
(:mod:`tests.security._world`); nothing reaches the real host's network.
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.security.egress.netns import problem
from bastion.security.sandbox.bwrap import BubblewrapSandbox
from tests.security._world import CGNAT, LAN, METADATA, PUBLIC, scenario

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(problem() is not None, reason=str(problem())),
    pytest.mark.skipif(BubblewrapSandbox.available() is not None,
                       reason=str(BubblewrapSandbox.available())),
]


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    return scenario("rebind")


def test_rebinding_names_do_not_reach_the_lan_or_metadata(outcome: dict[str, Any]) -> None:
    seen = outcome["sandbox"]
    assert seen["allowed.test:8000"] == "200", seen  # the legitimate public host works
    for name in ("lan", "meta", "local", "cgnat"):
        assert seen[f"{name}.allowed.test:8000"] in ("gaierror", "ConnectionRefusedError"), seen
    assert seen["meta6.allowed.test:8000"] == "gaierror", seen  # fd00:ec2::254 not handed out
    for addr in (LAN, METADATA, CGNAT):
        assert seen[f"{addr}:8000"] == "ConnectionRefusedError", seen
    assert seen[f"{PUBLIC}:8001"] == "ConnectionRefusedError", seen  # port not listed


def test_host_forward_chain_drops_non_public_destinations(outcome: dict[str, Any]) -> None:
    # the sandbox namespace's own firewall flushed: the host's table is the only layer left
    seen = outcome["host_layer"]
    assert seen[f"{PUBLIC}:8000"] == "200", seen
    for addr in (LAN, METADATA, CGNAT):
        assert seen[f"{addr}:8000"] in ("TimeoutError", "timeout"), seen


def test_a_lan_service_listed_in_cidrs_is_reachable_and_nothing_else(
        outcome: dict[str, Any]) -> None:
    seen = outcome["lan_listed"]
    assert seen["lan.allowed.test:8000"] == "200", seen
    assert seen["allowed.test:8000"] == "200", seen
    assert seen["meta.allowed.test:8000"] == "ConnectionRefusedError", seen
    assert seen[f"{METADATA}:8000"] == "ConnectionRefusedError", seen


def test_refusals_are_audited_with_the_rule_that_refused_them(outcome: dict[str, Any]) -> None:
    blocked = {(e["detail"]["daddr"], e["detail"]["rule"]) for e in outcome["audit"]
               if e["kind"] == "egress_blocked"}
    assert {(LAN, "non-public"), (METADATA, "non-public"), (CGNAT, "non-public"),
            (PUBLIC, "not-allowlisted")} <= blocked
    dns = {(e["detail"]["name"], e["decision"], e["detail"]["rule"]) for e in outcome["audit"]
           if e["kind"] == "egress_dns"}
    for name in ("lan", "meta", "local", "meta6"):
        assert (f"{name}.allowed.test", "denied", "dns-rebind") in dns, dns
    assert ("allowed.test", "allowed", "allowlisted") in dns
    assert all(e["tool"] == "shell" for e in outcome["audit"])
