"""Every implementation of a seam closes through the seam's own method (#15 item 4).

The seams declare ``close()`` (sync seams: secret backends, SIEM sinks, notifiers) or
``aclose()`` (conversation memory), so callers call it instead of probing with ``getattr``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from bastion.intelligence import alerts, siem
from bastion.memory.base import EphemeralMemory
from bastion.memory.persistent import PersistentMemory
from bastion.security.secrets.env import EnvBackend
from bastion.security.secrets.sops import SopsBackend
from bastion.security.secrets.vault import VaultBackend
from bastion.server._turns import RequestMemory

SYNC = [EnvBackend, SopsBackend, VaultBackend, siem.SplunkHecSink, siem.ElasticsearchSink,
        siem.DatadogSink, siem.SyslogSink, alerts.WebhookNotifier, alerts.SyslogNotifier,
        alerts.FileNotifier]


@pytest.mark.parametrize("cls", SYNC, ids=lambda c: c.__name__)
def test_sync_seams_close(cls: type) -> None:
    close = getattr(cls, "close", None)
    assert callable(close) and not inspect.iscoroutinefunction(close)


@pytest.mark.parametrize("cls", [EphemeralMemory, PersistentMemory, RequestMemory],
                         ids=lambda c: c.__name__)
def test_memories_aclose(cls: type) -> None:
    assert inspect.iscoroutinefunction(getattr(cls, "aclose", None))


def test_no_close_probes_left_on_these_seams() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "bastion"
    for rel in ("security/setup.py", "security/signing.py", "cli/secrets.py",
                "intelligence/siem.py", "intelligence/alerts.py", "app.py"):
        text = (src / rel).read_text()
        assert 'getattr(b, "close"' not in text and 'getattr(backend, "close"' not in text, rel
        assert 'getattr(n, "close"' not in text and 'getattr(self.sink, "close"' not in text, rel
        assert 'getattr(self.memory, "aclose"' not in text, rel


async def test_ephemeral_memory_closes() -> None:
    mem = EphemeralMemory()
    await mem.aclose()
    EnvBackend("BASTION_SECRET_").close()
