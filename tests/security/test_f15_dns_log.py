"""F15: another local user must not be able to forge ``egress_dns`` audit records.

bastion used to read dnsmasq's log from a world-writable ``dns.log``. The attack: users
65534 (the uid dnsmasq itself runs as) and 1000 append forged ``query[A]`` lines to every
file in the egress namespace's state directory and to the standard streams of every process
in the namespace; the sandbox sends a DNS query whose name carries a newline and a forged
log line. Real dnsmasq and nftables in namespaces made here (tests/security/_world.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from bastion.security.egress.netns import problem
from tests.security._world import scenario

pytestmark = [pytest.mark.needs_root,
              pytest.mark.skipif(problem() is not None, reason=str(problem()))]


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    return scenario("forge")


def test_other_users_cannot_forge_dns_audit_records(outcome: dict[str, Any]) -> None:
    names = [e["detail"]["name"] for e in outcome["audit"] if e["kind"] == "egress_dns"]
    assert "allowed.test" in names  # the real query was audited: the reader works
    forged = [n for n in names if "forged" in n]
    assert not forged, f"forged audit records: {forged} (written via {outcome['took']})"
    assert outcome["took"] == {"65534": [], "1000": []}, outcome["took"]
