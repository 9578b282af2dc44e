"""Fixtures for crypto tests: a real SoftHSM2 token store, created before PKCS#11 is loaded.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when a process first loads the module, and does not
see tokens initialised later by another process; so every token the in-process tests use is
initialised up front, in one store for the whole session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.crypto.pkcs11 import SOFTHSM_MODULE, init_softhsm_token, softhsm_conf

PIN = "2468-user"
SO_PIN = "1357-so"
TOKENS = ("audit", "keys", "bench")


@dataclass
class SoftHsm:
    module: str
    conf: Path
    pin: str


def require_softhsm() -> None:
    if shutil.which("softhsm2-util") and Path(SOFTHSM_MODULE).exists():
        return
    if os.environ.get("CI"):
        pytest.fail("SoftHSM2 is missing: run scripts/system-deps.sh")
    pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    require_softhsm()
    conf = softhsm_conf(tmp_path_factory.mktemp("softhsm"))
    for label in TOKENS:
        init_softhsm_token(conf, label, PIN, SO_PIN)
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    yield SoftHsm(SOFTHSM_MODULE, conf, PIN)
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unsealed copies go to a per-test directory, never the real /dev/shm."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))


from tests.integration.security.conftest import openbao  # noqa: E402  (a real bao server -dev)

__all__ = ["openbao"]
