from __future__ import annotations

import pytest

from bastion.voice.service import VoiceService
from tests.unit.voice._shared import shared_service


@pytest.fixture(scope="session")
def voice() -> VoiceService:
    return shared_service()
