"""Speech models shared by every voice test in the session (loading them takes seconds)."""

from __future__ import annotations

import functools
import re
import shutil
import struct
import subprocess

from bastion.config.model import VoiceConfig
from bastion.voice.audio import Audio, decode, wav_bytes
from bastion.voice.service import VoiceService


@functools.cache
def shared_service() -> VoiceService:
    """One VoiceService with Whisper, Piper and espeak-ng loaded, for the whole test session."""
    # in-process: these tests are about the engines; tests/integration/voice covers isolation
    service = VoiceService(VoiceConfig(isolation="in_process"))
    service.stt  # noqa: B018 - load now
    service.tts("piper")
    service.tts("espeak")
    return service


def espeak(text: str, *, wpm: int = 150, voice: str = "en-us") -> Audio:
    """Speech of ``text`` by the espeak-ng program itself (independent of bastion's TTS)."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is missing: bash scripts/system-deps.sh"
    wav = subprocess.run([exe, "-v", voice, "-s", str(wpm), "--stdout", text],
                         capture_output=True, check=True).stdout
    # espeak-ng streams WAV with placeholder sizes: rewrite the header around the PCM.
    rate = struct.unpack_from("<I", wav, 24)[0]
    pcm = wav[44:]
    return decode(wav_bytes(pcm[: len(pcm) // 2 * 2], rate))


def words(text: str) -> list[str]:
    """Lower-case words for comparison."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_accuracy(reference: str, hypothesis: str) -> float:
    """1 - word error rate (Levenshtein over words), floored at 0."""
    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
            prev, d[j] = d[j], cur
    return max(0.0, 1.0 - d[len(hyp)] / max(1, len(ref)))
