"""bastion's own egress uplink: subnet choice, upstream DNS, the host table, leftover names."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import SandboxError
from bastion.security.egress import uplink
from bastion.security.egress.rules import EgressRule, dnsmasq_args, nft_ruleset
from bastion.security.egress.uplink import (
    host_resolvers,
    host_ruleset,
    owner_pid,
    parse_resolvers,
    pick_subnet,
)


def test_auto_subnet_steps_around_host_routes() -> None:
    assert str(pick_subnet("auto", [])) == "10.213.0.0/16"
    taken = ["192.0.2.0/24", "10.213.250.0/24", "10.214.0.0/15", "0.0.0.0/0"]
    assert str(pick_subnet("auto", taken)) == "10.216.0.0/16"  # default routes do not count


def test_configured_subnet_that_collides_is_a_clear_error() -> None:
    with pytest.raises(SandboxError, match="overlaps the host's 10.50.1.0/24") as exc:
        pick_subnet("10.50.0.0/16", ["10.50.1.0/24"])
    assert exc.value.fix is not None and "egress_subnet" in exc.value.fix
    assert str(pick_subnet("10.50.0.0/16", ["10.51.0.0/16"])) == "10.50.0.0/16"
    with pytest.raises(SandboxError, match="every candidate"):
        pick_subnet("auto", ["10.0.0.0/8", "172.16.0.0/12"])


def test_resolv_conf_parsing_skips_loopback(tmp_path: Path) -> None:
    text = ("# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.255.255.53\n"
            "nameserver fe80::1%eth0\nsearch example\nnameserver bogus\n")
    assert parse_resolvers(text) == ["10.255.255.53"]
    only_local = tmp_path / "resolv.conf"
    only_local.write_text("nameserver 127.0.0.53\n")
    real = tmp_path / "systemd.conf"
    real.write_text("nameserver 192.0.2.53\n")
    assert host_resolvers((only_local, real)) == ["192.0.2.53"]
    with pytest.raises(SandboxError, match="only loopback") as exc:
        host_resolvers((only_local,))
    assert exc.value.fix is not None and "egress_dns" in exc.value.fix


def test_host_table_is_ours_only() -> None:
    text = host_ruleset(4242, "10.213.0.0/16", forward_was_off=False)
    assert text.startswith("table inet bastion_egress_4242 {")
    assert 'iifname "bh4242x*" ip saddr 10.213.0.0/16 accept' in text
    assert 'oifname "bh4242x*" drop' in text  # nothing new into a sandbox
    assert 'ip saddr 10.213.0.0/16 oifname != "bh4242x*" masquerade' in text
    catch_all = '    iifname != "bh*" oifname != "bh*" drop\n'
    assert catch_all not in text  # forwarding was on: others' forwarding is untouched
    off = host_ruleset(4242, "10.213.0.0/16", forward_was_off=True)
    assert catch_all in off  # bastion turned routing on: only bastion's traffic is routed


def test_leftover_names_carry_the_owner_pid() -> None:
    assert owner_pid("bst-1234-7") == 1234
    assert owner_pid("bh1234x7") == 1234 and owner_pid("bu99x0") == 99
    assert owner_pid("bastion_egress_1234") == 1234
    assert owner_pid("bstu-abc") is None and owner_pid("eth0") is None
    assert owner_pid("bastion_egress") is None


def test_several_upstream_resolvers() -> None:
    rule = EgressRule.create(["allowed.test"], [], [443])
    text = nft_ruleset(rule, ["10.0.0.53", "10.0.1.53"])
    assert "meta skuid 65534 ip daddr { 10.0.0.53, 10.0.1.53 } udp dport 53 accept" in text
    args = dnsmasq_args(rule, ("10.0.0.53", "10.0.1.53"), log_file="/l", pid_file="/p")
    assert {"--server=/allowed.test/10.0.0.53", "--server=/allowed.test/10.0.1.53"} <= set(args)


def test_candidates_are_private() -> None:
    import ipaddress

    assert all(ipaddress.ip_network(c).is_private for c in uplink.CANDIDATES)


def test_host_forward_chain_drops_non_public_but_dns_and_listed_lan() -> None:
    text = host_ruleset(4242, "10.213.0.0/16", forward_was_off=False, resolvers=["10.0.0.2"])
    dns = text.index('iifname "bh4242x*" ip saddr 10.213.0.0/16 ip daddr { 10.0.0.2 } udp dport 53')
    lan = text.index('iifname . ip daddr @lan4 accept')
    drop = text.index("169.254.0.0/16")
    assert dns < lan < drop < text.index('iifname "bh4242x*" ip saddr 10.213.0.0/16 accept')
