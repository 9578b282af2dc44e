"""``bastion.client.refusal``: a server's error answer becomes one line with its fix."""

from __future__ import annotations

import httpx

from bastion.client import ServerRefused, refusal
from bastion.errors import AuthError, NotFoundError


def test_server_errors_become_one_line_bastion_errors() -> None:
    body = {"error": {"message": "no node a (fix: list them with bastion cluster status)",
                      "code": "node_not_found", "fix": "list them with bastion cluster status"}}
    err = refusal(httpx.Response(404, json=body))
    assert isinstance(err, ServerRefused) and isinstance(err, NotFoundError)
    assert (err.message, err.fix, err.status, err.code) == (
        "no node a", "list them with bastion cluster status", 404, "node_not_found")
    other = refusal(httpx.Response(502, text="bad gateway"))
    assert (other.message, other.fix, other.status, other.code) == (
        "bad gateway", None, 502, None)
    assert isinstance(refusal(httpx.Response(401, json={"error": {"message": "x"}})), AuthError)
    odd = refusal(httpx.Response(500, json=["not", "an", "error"]))
    assert odd.status == 500 and odd.code is None and odd.message.startswith("[")
