"""Unit tests of the constrained protocol run without the sentence embedder (lexical signal
only), so they need no torch and stay fast; tests/unit/llm/test_semantic.py hands in a
scripted one, and the real embedder runs in tests/integration/llm/test_bfcl_regression.py."""

from __future__ import annotations

import pytest

from bastion.llm import _semantic


@pytest.fixture(autouse=True)
def _no_shipped_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_semantic, "shipped", lambda: None)
