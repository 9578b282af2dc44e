"""Egress allowlist -> nftables ruleset and dnsmasq flags; log parsers."""

from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.security.egress.rules import (
    EgressRule,
    dnsmasq_args,
    nft_ruleset,
    parse_query,
    parse_trace,
)


def test_rule_normalises_and_matches() -> None:
    rule = EgressRule.create(["*.Example.org.", "api.test"], ["10.1.2.3", "10.9.0.0/16"], [443])
    assert rule.domains == ("example.org", "api.test")
    assert rule.cidrs == ("10.1.2.3/32", "10.9.0.0/16")
    assert rule.allows_name("example.org") and rule.allows_name("a.b.example.org.")
    assert rule.allows_name("api.test") and not rule.allows_name("evilexample.org")
    assert not rule.allows_name("other.test")


@pytest.mark.parametrize("kwargs", [{"domains": ["bad domain"]}, {"cidrs": ["nope"]},
                                    {"ports": [0]}, {"ports": []}])
def test_rule_validation(kwargs: dict[str, list[object]]) -> None:
    with pytest.raises(ConfigError):
        EgressRule.create(**kwargs)  # type: ignore[arg-type]


def test_ruleset_is_default_drop_with_allowlists() -> None:
    rule = EgressRule.create(["allowed.test"], ["10.9.0.0/16", "2001:db8::/32"], [8000, 443])
    text = nft_ruleset(rule, "10.214.0.53")
    assert "policy drop;" in text
    assert "meta skuid 65534 ip daddr 10.214.0.53 udp dport 53 accept" in text
    assert "ip daddr @allow4 tcp dport { 8000, 443 } accept" in text
    assert "ip daddr { 10.9.0.0/16 } tcp dport { 8000, 443 } accept" in text
    assert "ip6 daddr { 2001:db8::/32 } tcp dport { 8000, 443 } accept" in text
    assert text.rstrip().endswith("}") and "counter reject" in text


def test_dnsmasq_answers_only_listed_names() -> None:
    args = dnsmasq_args(EgressRule.create(["allowed.test"], [], [8000]), "10.214.0.53",
                        log_file="/l", pid_file="/p")
    assert "--no-resolv" in args and "--listen-address=127.0.0.1" in args
    assert "--server=/allowed.test/10.214.0.53" in args
    assert ("--nftset=/allowed.test/4#inet#bastion_egress#allow4,6#inet#bastion_egress#allow6"
            in args)
    assert not [a for a in args if a.startswith("--server=") and "allowed.test" not in a]


def test_parsers() -> None:
    line = ('trace id 9c3f1c24 inet bastion_egress out packet: oif "bse1" ip saddr 10.213.9.2 '
            'ip daddr 10.214.0.11 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 1 ip protocol tcp '
            'ip length 60 tcp sport 42926 tcp dport 8001 tcp flags == syn')
    hit = parse_trace(line)
    assert hit is not None and (hit.daddr, hit.dport, hit.protocol) == ("10.214.0.11", 8001, "tcp")
    assert parse_trace("trace id 9c inet x out rule meta nftrace set 1 reject") is None
    q = "Nov 25 18:50:34 dnsmasq[3939]: query[AAAA] other.test from 127.0.0.1"
    assert parse_query(q) == ("other.test", "AAAA")
    assert parse_query("dnsmasq[1]: reply allowed.test is 10.0.0.1") is None
