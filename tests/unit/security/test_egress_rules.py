"""Egress allowlist -> nftables ruleset and dnsmasq flags; log parsers."""

from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.security.egress.rules import (
    EgressRule,
    dnsmasq_args,
    nft_ruleset,
    parse_query,
    parse_rebind,
    parse_trace,
    parse_trace_rule,
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


def test_rebinding_filters_in_dnsmasq_and_the_ruleset() -> None:
    public = EgressRule.create(["allowed.test"], [], [443])
    args = dnsmasq_args(public, "10.214.0.53")
    assert "--stop-dns-rebind" in args and "--log-facility=-" in args
    assert not [a for a in args if a.startswith("--rebind-")]  # localhost rebind not ok
    assert "--pid-file=" in args  # no pid file another uid could rewrite
    lan = EgressRule.create(["allowed.test"], ["192.168.1.5"], [443])
    assert lan.lan_cidrs == ("192.168.1.5/32",)
    assert "--rebind-domain-ok=/allowed.test/" in dnsmasq_args(lan, "10.214.0.53")
    text = nft_ruleset(lan, "10.214.0.53")
    listed = text.index("ip daddr { 192.168.1.5/32 }")
    refuse = text.index('reject comment "non-public"')
    assert listed < refuse < text.index("ip daddr @allow4")
    assert "169.254.0.0/16" in text and "100.64.0.0/10" in text and "fc00::/7" in text


def test_trace_rule_and_rebind_lines() -> None:
    rule = ('trace id 9d141bf8 inet bastion_egress out rule ip daddr { 10.0.0.0/8 } meta nftrace '
            'set 1 counter packets 0 bytes 0 reject with icmp port-unreachable comment '
            '"non-public" (verdict drop)')
    assert parse_trace_rule(rule) == ("9d141bf8", "non-public")
    packet = ("trace id 9d141bf8 inet bastion_egress out packet: oif \"eg0\" ip saddr 10.0.0.2 "
              "ip daddr 169.254.169.254 ip protocol tcp tcp dport 80")
    hit = parse_trace(packet)
    assert hit is not None and hit.trace_id == "9d141bf8"
    assert parse_rebind("dnsmasq[7]: possible DNS-rebind attack detected: meta.x.test") == (
        "meta.x.test")
