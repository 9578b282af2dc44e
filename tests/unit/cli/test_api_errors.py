from __future__ import annotations

import httpx
import pytest

from bastion.cli._api import raise_for_api_error
from bastion.errors import AuthError, ClusterError, NotFoundError


def test_server_errors_become_one_line_bastion_errors() -> None:
    raise_for_api_error(httpx.Response(200, json={"ok": True}), ClusterError)  # no error
    body = {"error": {"message": "no node a", "fix": "list them with bastion cluster nodes"}}
    with pytest.raises(NotFoundError) as nf:
        raise_for_api_error(httpx.Response(404, json=body), ClusterError)
    assert nf.value.message == "no node a" and nf.value.fix == body["error"]["fix"]
    with pytest.raises(AuthError):
        raise_for_api_error(httpx.Response(401, json={"error": {"message": "bad token"}}),
                            ClusterError)
    with pytest.raises(ClusterError) as other:
        raise_for_api_error(httpx.Response(502, text="bad gateway"), ClusterError)
    assert other.value.message == "bad gateway" and other.value.fix is None
