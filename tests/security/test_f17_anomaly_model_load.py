"""F17 breach tests: a local attacker who can write the anomaly-model directory must not get
bastion to unpickle their code (review 2026-12, finding F17).

Two attacks on the real AnomalyDetector, real joblib files:
- the check-then-load race, made deterministic with a FIFO: the first open of the model file
  gets the genuine bytes (the HMAC check passes), the second open gets a malicious pickle;
- the HMAC key lying beside the models: sign a malicious model with whatever key is found there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import random
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.intelligence.anomaly import AnomalyDetector, IntelError
from bastion.intelligence.features import CallView


class Evil:
    """Unpickling this creates ``marker``: the attacker's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _trained(model_dir: Path) -> Path:
    rng = random.Random(5)
    calls = [CallView("agent", datetime(2026, 11, 2 + i // 20, 10, rng.randint(0, 59)).timestamp(),
                      "read_file", {"path": f"n/{rng.randint(0, 9)}.md"}, "allowed")
             for i in range(80)]
    det = AnomalyDetector(model_dir, min_samples=50, n_estimators=10)
    det.train(sorted(calls, key=lambda c: c.ts))
    (path,) = det.save()
    return path


def _evil_bytes(tmp_path: Path, marker: Path) -> bytes:
    import joblib

    evil = tmp_path / "evil.joblib"
    joblib.dump(Evil(marker), evil)
    return evil.read_bytes()


def test_model_swapped_between_check_and_load_is_not_unpickled(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = _trained(models)
    marker = tmp_path / "PWNED"
    genuine, evil = path.read_bytes(), _evil_bytes(tmp_path, marker)
    path.unlink()
    os.mkfifo(path)  # the attacker serves each open of the "model" from a FIFO

    done = threading.Event()

    def serve() -> None:
        deadline = time.monotonic() + 5
        for data in (genuine, evil):  # 1st open: what the HMAC sees; 2nd: what gets loaded
            while time.monotonic() < deadline and not done.is_set():
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # no reader yet
                        raise
                    time.sleep(0.005)
                    continue
                os.set_blocking(fd, True)
                with contextlib.suppress(BrokenPipeError):
                    os.write(fd, data)
                os.close(fd)
                time.sleep(0.05)
                break

    attacker = threading.Thread(target=serve, daemon=True)
    attacker.start()
    try:
        with pytest.raises(IntelError):
            AnomalyDetector(models).load()
    finally:
        done.set()
    attacker.join(6)
    assert not marker.exists(), "the swapped-in pickle was executed"


def test_key_found_beside_the_models_cannot_sign_a_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    path = _trained(models)
    marker = tmp_path / "PWNED"
    evil = _evil_bytes(tmp_path, marker)
    for candidate in models.iterdir():  # the attacker tries every file they can reach there
        if candidate.suffix in (".joblib", ".hmac"):
            continue
        try:
            key = bytes.fromhex(candidate.read_text().strip())
        except ValueError:
            continue
        path.write_bytes(evil)
        path.with_suffix(".hmac").write_text(hmac.new(key, evil, hashlib.sha256).hexdigest())
        with pytest.raises(IntelError):
            AnomalyDetector(models).load()
        assert not marker.exists(), f"a model signed with {candidate.name} was executed"
    assert not list(models.glob("*.key")), "an HMAC key lies beside the models"
