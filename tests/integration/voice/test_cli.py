"""``bastion voice`` as a user runs it: a subprocess, real models, files instead of devices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.voice.audio import decode
from tests.unit.voice._shared import espeak, word_accuracy

ROOT = Path(__file__).resolve().parents[3]


def _bastion(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
    env.update({"BASTION_HOME": str(home), "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(ROOT / "src"), "BASTION_MODEL__MAX_TOKENS": "40",
                "BASTION_AGENT__MAX_STEPS": "2",  # a tool loop is not what is tested
                "BASTION_MEMORY__ENABLED": "false", "BASTION_SECURITY__SANDBOX": "none"})
    return subprocess.run([sys.executable, "-m", "bastion", *args], env=env, cwd=home,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.real_model
def test_headless_turn_from_wav_to_wav(bastion_home: Path) -> None:
    question = bastion_home / "question.wav"
    question.write_bytes(espeak("What is the capital of France?").wav())
    answer = bastion_home / "answer.wav"
    r = _bastion("voice", "--input", str(question), "--output", str(answer), home=bastion_home)
    assert r.returncode == 0, r.stderr
    heard = r.stderr.split("you:", 1)[1].splitlines()[0]
    assert word_accuracy("What is the capital of France?", heard) >= 0.8, r.stderr
    assert "bastion:" in r.stdout and len(r.stdout.split("bastion:", 1)[1].strip()) > 0
    audio = decode(answer.read_bytes())
    assert audio.sample_rate == 22_050 and 0.3 < audio.duration < 40.0


def test_push_to_talk_without_devices_says_what_to_do(bastion_home: Path) -> None:
    r = _bastion("voice", home=bastion_home, timeout=60)
    assert r.returncode == 1
    assert "no microphone" in r.stderr and "--input question.wav" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_input_file_is_one_clear_line(bastion_home: Path) -> None:
    bad = bastion_home / "notes.wav"
    bad.write_text("these are my notes, not a recording\n" * 20)
    r = _bastion("voice", "--input", str(bad), "--output", str(bastion_home / "a.wav"),
                 home=bastion_home, timeout=120)
    assert r.returncode == 1 and "not audio" in r.stderr and "fix:" in r.stderr
    assert "Traceback" not in r.stderr


def test_say_writes_speech(bastion_home: Path) -> None:
    out = bastion_home / "hello.wav"
    r = _bastion("voice", "say", "Hello from bastion.", "--engine", "espeak", "-o", str(out),
                 home=bastion_home, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 0.5 < decode(out.read_bytes()).duration < 5.0
