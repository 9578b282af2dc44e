"""Which tool call an egress proxy's held request is put to the human as (#18).

One namespace and proxy serve every call of a tool, so the proxy names the calls running
while the request came in. The proxy is not started here (no namespace, no root): only the
bookkeeping and the approval request it builds are checked; the real run is
``tests/security/test_i18_egress_protocol_filtering.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.security.approval import ApprovalDecision, ApprovalRequest, CallRef
from bastion.security.egress.credproxy import CredentialProxy, ProxyPolicy
from bastion.security.egress.rules import EgressRule
from bastion.security.secrets.bound import Binding, PlaceholderBook

pytest.importorskip("mitmproxy", reason="pip install 'bastion[egress-proxy]'")


class Asked:
    def __init__(self) -> None:
        self.requests: list[ApprovalRequest] = []

    async def decide(self, request: ApprovalRequest, *, timeout_s: float) -> ApprovalDecision:
        self.requests.append(request)
        return ApprovalDecision(False, "test")


Made = tuple[CredentialProxy, Asked, list[Any]]


@pytest.fixture
def made() -> Iterator[Made]:
    book = PlaceholderBook()
    book.issue(Binding("shell", "GH_TOKEN", "secret://env/gh", (("api.test", 443),)), "v" * 20)
    asked = Asked()
    proxy = CredentialProxy("shell", ProxyPolicy(EgressRule.create(["api.test"])), book,
                            approver=asked)
    yield proxy, asked, book.live()
    proxy.close()  # its CA directory


def _ask(proxy: CredentialProxy, leaked: list[Any]) -> None:
    flow = SimpleNamespace(request=SimpleNamespace(method="GET", scheme="https", path="/x?q=1"))
    assert asyncio.run(proxy._approve_leak(flow, "other.test", 443, leaked)) is False


def test_one_call_running_names_its_session_call_and_tool(made: Made) -> None:
    proxy, asked, leaked = made
    with proxy.serving(CallRef("shell", "c1", "s1")):
        _ask(proxy, leaked)
    req = asked.requests[0]
    assert (req.tool, req.session_id, req.call_id) == ("shell", "s1", "c1")
    assert "calls" not in req.arguments and "sandbox" not in req.arguments
    assert req.arguments["destination"] == "other.test:443" and not req.allow_session_rule


def test_a_call_that_runs_two_commands_at_once_stays_until_both_end(made: Made) -> None:
    proxy, _, _ = made
    ref = CallRef("shell", "c1", "s1")
    with proxy.serving(ref):
        with proxy.serving(ref):
            assert proxy.running() == [ref]
        assert proxy.running() == [ref]
    assert proxy.running() == []


def test_calls_at_once_are_all_listed_and_none_is_guessed(made: Made) -> None:
    proxy, asked, leaked = made
    one, two = CallRef("shell", "c1", "s1"), CallRef("shell", "c2", "s2")
    with proxy.serving(one), proxy.serving(two):
        _ask(proxy, leaked)
    req = asked.requests[0]
    assert (req.tool, req.session_id, req.call_id) == ("shell", None, None)
    assert [(c["call_id"], c["session_id"]) for c in req.arguments["calls"]] == [
        ("c1", "s1"), ("c2", "s2")]


def test_an_mcp_servers_proxy_names_the_mcp_tool_and_its_sandbox(made: Made) -> None:
    proxy, asked, leaked = made
    proxy.subject = "mcp:gh"
    with proxy.serving(CallRef("gh__leak", "c9", "s9")):
        _ask(proxy, leaked)
    req = asked.requests[0]
    assert (req.tool, req.session_id, req.call_id, req.arguments["sandbox"]) == (
        "gh__leak", "s9", "c9", "mcp:gh")


def test_no_call_running_asks_as_the_sandbox(made: Made) -> None:
    proxy, asked, leaked = made
    _ask(proxy, leaked)
    req = asked.requests[0]
    assert (req.tool, req.session_id, req.call_id) == ("shell", None, None)
