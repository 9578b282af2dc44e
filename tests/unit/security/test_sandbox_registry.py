"""One table of sandbox backends feeds the config and the factory (issue 15 item 6)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.backends import SANDBOX_BACKENDS
from bastion.config.model import Config
from bastion.errors import SandboxError
from bastion.security.sandbox import factory


def test_every_configurable_backend_has_a_class() -> None:
    for kind in SANDBOX_BACKENDS:
        assert getattr(factory.backend_class(kind), "name") == kind  # noqa: B009


@pytest.mark.parametrize("kind", SANDBOX_BACKENDS)
def test_config_accepts_each_backend_everywhere(kind: str) -> None:
    cfg = Config.model_validate({"security": {"sandbox": kind, "tool_sandboxes": {"python": kind}},
                                 "mcp_servers": [{"name": "s", "command": ["x"], "sandbox": kind}]})
    assert cfg.security.sandbox == kind and cfg.security.tool_sandboxes["python"] == kind


def test_unknown_backend_is_refused_by_config_and_factory() -> None:
    with pytest.raises(ValidationError):
        Config.model_validate({"security": {"sandbox": "chroot"}})
    with pytest.raises(SandboxError, match="unknown sandbox backend 'chroot'") as info:
        factory.backend_class("chroot")
    assert "bubblewrap, gvisor, podman, docker" in (info.value.fix or "")
