from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from bastion.app import App, build_app
from bastion.config.model import Config
from bastion.server.app import create_app
from bastion.testing import Reply, ScriptedModel

TOKEN = "tok-unit-4f1c2b9e7d"


@dataclass
class Api:
    client: TestClient
    model: ScriptedModel
    app: App


@pytest.fixture
def make_api() -> Iterator[Callable[..., Api]]:
    made: list[tuple[TestClient, App]] = []

    def make(*replies: Reply, token: str | None = TOKEN, auth: bool = True,
             raise_server_exceptions: bool = True, security: dict | None = None,
             memory: dict | None = None) -> Api:
        # Real SQLite sessions; the semantic index is the memory feature's to test.
        # Pending approvals wait for the API; a short timeout keeps "denied" tests quick.
        config = Config.model_validate({
            "api": {"token": token},
            "memory": {"semantic": False, **(memory or {})},
            "security": {"approval_timeout_s": 1, **(security or {})},
        })
        model = ScriptedModel(*replies)
        app = build_app(config, model=model)
        headers = {"Authorization": f"Bearer {token}"} if auth and token else {}
        client = TestClient(create_app(app), headers=headers,
                            raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        made.append((client, app))
        return Api(client, model, app)

    yield make
    for client, app in made:
        client.__exit__(None, None, None)
        app.audit.close()
