"""A native crash in a speech engine costs one request, not ``bastion serve``.

A live ``python -m bastion serve`` (faster-whisper and Piper in their supervised children, the
default); ``BASTION_TEST_VOICE_FAULT`` makes the engine child SIGSEGV itself in the middle of
the next request. Through the official ``openai`` client: that request gets one clear error
naming the signal, the server lives on, and the next request is served by a new child.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from openai import APIStatusError, OpenAI

from bastion.voice.audio import decode
from tests.integration._cgroup import confine
from tests.unit.voice._shared import espeak, word_accuracy

ROOT = Path(__file__).resolve().parents[3]
SAID = "Please turn off the lights in the kitchen."


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenAI, Path, int]]:
    home = tmp_path_factory.mktemp("voice-crash")
    fault = home / "segv-next-request"
    env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
    env.update(BASTION_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"),
               BASTION_MEMORY__ENABLED="false", BASTION_TEST_VOICE_FAULT=str(fault))
    init = subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=home)
    assert init.returncode == 0, init.stderr
    token = yaml.safe_load((home / "bastion.yaml").read_text())["api"]["token"]
    out = home / "serve.out"
    with out.open("w") as o:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                env=env, stdout=o, stderr=subprocess.STDOUT, cwd=home)
    try:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"(http://127\.0\.0\.1:\d+)", out.read_text())):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "bastion serve did not start"
            time.sleep(0.1)
        client = OpenAI(base_url=f"{m.group(1)}/v1", api_key=token, max_retries=0, timeout=300)
        yield client, fault, proc.pid
        assert proc.poll() is None, out.read_text()  # the server outlived every crash
        assert "Traceback" not in out.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _engines(server: int) -> set[int]:
    return {p for p in _children(server) if "bastion.voice._engine" in _cmdline(p)}


def test_a_crashed_recogniser_costs_one_request(live: tuple[OpenAI, Path, int]) -> None:
    client, fault, server = live
    wav = espeak(SAID).wav()
    first = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
    assert word_accuracy(SAID, first.text) >= 0.8
    before = _engines(server)
    assert before  # the engines run in children of the server, not inside it
    fault.touch()
    with pytest.raises(APIStatusError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
    assert info.value.status_code == 502
    msg = str(info.value)
    assert "the speech engine (faster-whisper) crashed (signal 11, SIGSEGV)" in msg, msg
    assert "fix" in msg and "Traceback" not in msg
    again = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
    assert word_accuracy(SAID, again.text) >= 0.8  # the next request works (a new child)
    assert _engines(server) - before


def test_a_crashed_synthesiser_costs_one_request(live: tuple[OpenAI, Path, int]) -> None:
    client, fault, _ = live
    assert decode(client.audio.speech.create(model="tts-1", voice="alloy", input=SAID,
                                             response_format="wav").read()).duration > 1.0
    fault.touch()
    with pytest.raises(APIStatusError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input=SAID,
                                   response_format="wav").read()
    assert info.value.status_code == 502
    assert "the speech engine (piper) crashed (signal 11, SIGSEGV)" in str(info.value)
    audio = decode(client.audio.speech.create(model="tts-1", voice="alloy", input=SAID,
                                              response_format="wav").read())
    assert audio.sample_rate == 22_050 and audio.duration > 1.0


def test_an_engine_that_dies_mid_line_is_a_crash_not_a_server_error(
        live: tuple[OpenAI, Path, int]) -> None:
    """Killed while writing an answer line, the child leaves half a JSON line in the pipe: that
    is its crash (502, the signal), not a JSONDecodeError traceback and a 500 (found when an
    out-of-memory kill landed mid-write)."""
    client, fault, _ = live  # (the recogniser: each engine's crashes stay under its loop limit)
    wav = espeak(SAID).wav()
    fault.write_text("mid-line")
    with pytest.raises(APIStatusError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
    assert info.value.status_code == 502, str(info.value)
    assert "the speech engine (faster-whisper) crashed (signal 11, SIGSEGV)" in str(info.value)
    again = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav))
    assert word_accuracy(SAID, again.text) >= 0.8


def test_a_synthesiser_killed_for_memory_is_named_so(live: tuple[OpenAI, Path, int]) -> None:
    """A real out-of-memory kill: the Piper child is moved into a memory cgroup of 1 MiB, and
    the memory its next request takes (the failpoint) gets it killed by the kernel."""
    client, fault, server = live
    assert decode(client.audio.speech.create(model="tts-1", voice="alloy", input=SAID,
                                             response_format="wav").read()).duration > 1.0
    (piper,) = [p for p in _engines(server) if "ctranslate2" not in _maps(p)]  # not whisper
    fault.write_text("memory")
    with confine(piper, 1 << 20), pytest.raises(APIStatusError) as info:
        client.audio.speech.create(model="tts-1", voice="alloy", input=SAID,
                                   response_format="wav").read()
    assert info.value.status_code == 502
    assert "the speech engine (piper) was killed for lack of memory (signal 9, SIGKILL, by " \
        "the kernel's out-of-memory killer)" in str(info.value), str(info.value)
    audio = decode(client.audio.speech.create(model="tts-1", voice="alloy", input=SAID,
                                              response_format="wav").read())
    assert audio.duration > 1.0  # the next request: a new child


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""
