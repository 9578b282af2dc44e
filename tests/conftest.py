"""Shared fixtures: every test gets its own BASTION_HOME."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# one local site and one chromium per test session for every browser test (lazy: no cost
# unless a test asks for them)
pytest_plugins = ["tests.integration.browser.fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture(autouse=True)
def bastion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "bastion-home"
    home.mkdir()
    monkeypatch.setenv("BASTION_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("BASTION_") and "__" in key:
            monkeypatch.delenv(key)
    yield home


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the tests' own Docker daemon if a test started it (tests/_dockerd.py)."""
    import sys

    dockerd = sys.modules.get("tests._dockerd")
    if dockerd is not None:
        dockerd.stop()
