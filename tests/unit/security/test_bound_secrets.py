"""Logic of bound secrets and the proxied egress ruleset (attacks: tests/security/test_i18_*)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.model import Config
from bastion.security.egress.credproxy import HttpRule
from bastion.security.egress.rules import EgressRule, nft_ruleset
from bastion.security.secrets.bound import PREFIX, Binding, PlaceholderBook, parse_host
from bastion.security.secrets.resolver import tool_bindings, tool_declarations


def test_parse_host_defaults_to_443_and_keeps_an_explicit_port() -> None:
    assert parse_host("API.GitHub.com.") == ("api.github.com", 443)
    assert parse_host("maps.example.com:8443") == ("maps.example.com", 8443)
    assert parse_host("[2001:db8::1]:8443") == ("2001:db8::1", 8443)


def test_placeholders_are_random_per_issue_and_gone_after_release() -> None:
    book = PlaceholderBook()
    b = Binding("shell", "T", "secret://env/t", (("api.test", 443),))
    one, two = book.issue(b, "v"), book.issue(b, "v")
    assert one != two and one.startswith(PREFIX) and "v" not in one
    book.release(one)
    assert [i.placeholder for i in book.live()] == [two]
    assert b.binds("API.test.", 443) and not b.binds("api.test", 8443)


def test_config_takes_plain_and_bound_entries() -> None:
    cfg = Config.model_validate({"secrets": {"tools": {"shell": {
        "A": "secret://env/a",
        "B": {"ref": "secret://env/b", "hosts": ["api.test"], "format": "token {}"}}}}})
    tools = cfg.secrets.tools

    class Tool:
        name = "shell"

    assert tool_declarations(Tool(), tools) == {"A": "secret://env/a", "B": "secret://env/b"}
    assert list(tool_bindings("shell", tools)) == ["B"]
    with pytest.raises(ValidationError, match="exactly once"):
        Config.model_validate({"secrets": {"tools": {"shell": {
            "B": {"ref": "secret://env/b", "hosts": ["api.test"], "format": "Bearer"}}}}})


def test_proxied_ruleset_accepts_nothing_but_loopback_and_the_resolver() -> None:
    rule = EgressRule.create(["api.test"], ["93.184.216.0/24"], [443])
    direct, proxied = nft_ruleset(rule, "10.0.0.53"), nft_ruleset(rule, "10.0.0.53",
                                                                   proxied=True)
    assert "@allow4 tcp dport" in direct and "93.184.216.0/24" in direct
    assert "@allow4 tcp dport" not in proxied and "93.184.216.0/24" not in proxied
    assert 'oifname "lo" accept' in proxied and "skuid 65534" in proxied


def test_http_rule_methods_and_path_globs() -> None:
    rule = HttpRule("api.*", ("GET",), ("/repos/*",))
    assert rule.covers("api.test") and not rule.covers("other.test")
    assert rule.allows("GET", "/repos/x?y=1")
    assert not rule.allows("POST", "/repos/x") and not rule.allows("GET", "/user")
