"""Text to speech: the :class:`TTS` seam, Piper (shipped voice) and espeak-ng (always there)."""

from __future__ import annotations

import functools
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from bastion._extras import require
from bastion.config.model import TtsConfig
from bastion.errors import AudioError, ConfigError
from bastion.voice.audio import Audio, from_pcm16
from bastion.voice.models import shipped_piper_voice
from bastion.voice.text import speakable


@runtime_checkable
class TTS(Protocol):
    """A speech synthesiser. ``synthesize`` is blocking; callers run it in a worker thread."""

    name: str
    sample_rate: int

    def synthesize(self, text: str, *, speed: float | None = None) -> Iterator[Audio]:
        """Yield audio for ``text``, one piece per sentence, as soon as each is ready."""
        ...


class PiperTTS:
    """Piper (VITS on onnxruntime) with the shipped en_US "joe" voice or a user's .onnx voice."""

    name = "piper"

    def __init__(self, config: TtsConfig | None = None) -> None:
        self.config = config or TtsConfig()
        piper = require("piper", extra="voice", feature="Piper text to speech")
        if self.config.voice:
            model = Path(self.config.voice).expanduser()
            cfg = Path(f"{model}.json")
            if not (model.is_file() and cfg.is_file()):
                raise ConfigError(
                    f"Piper voice {model} or its {cfg.name} is missing",
                    fix="set voice.tts.voice to a Piper .onnx file with its .onnx.json beside it, "
                    "or unset it for the shipped voice",
                )
        else:
            model, cfg = shipped_piper_voice()
        self.voice = piper.PiperVoice.load(model, config_path=cfg)
        self._syn_config = piper.SynthesisConfig
        self.sample_rate = int(self.voice.config.sample_rate)

    def synthesize(self, text: str, *, speed: float | None = None) -> Iterator[Audio]:
        """Yield one :class:`Audio` per sentence of ``text``."""
        text = speakable(text)
        if not text:
            return
        speed = speed or self.config.speed
        syn = self._syn_config(length_scale=self.voice.config.length_scale / speed)
        # onnxruntime sessions are thread-safe: no lock, and each sentence is yielded as it is done.
        for chunk in self.voice.synthesize(text, syn):
            yield Audio(chunk.audio_float_array.astype("float32"), chunk.sample_rate)


class EspeakTTS:
    """espeak-ng as a subprocess: robotic but tiny, any of its ~100 languages, always available."""

    name = "espeak"
    sample_rate = 22_050
    _WPM = 175  # espeak-ng's default speaking rate

    def __init__(self, config: TtsConfig | None = None) -> None:
        self.config = config or TtsConfig(engine="espeak")
        exe = shutil.which("espeak-ng") or shutil.which("espeak")
        if exe is None:
            raise ConfigError(
                "espeak-ng is not installed",
                fix="apt-get install espeak-ng (or brew install espeak-ng / the Windows installer)",
            )
        self.exe = exe
        self.voice = self.config.voice or "en-us"
        known = _espeak_voices(exe)
        if known and self.voice.split("+")[0].lower() not in known:
            raise ConfigError(
                f"espeak-ng has no voice {self.voice!r}",
                fix="pick a language or voice name from: espeak-ng --voices",
            )

    def synthesize(self, text: str, *, speed: float | None = None) -> Iterator[Audio]:
        """Yield one :class:`Audio` per sentence of ``text``."""
        from bastion.voice.text import split_sentences

        wpm = max(80, min(500, round(self._WPM * (speed or self.config.speed))))
        for sentence in split_sentences(speakable(text)):
            yield self._run(sentence, wpm)

    def _run(self, text: str, wpm: int) -> Audio:
        proc = subprocess.run(
            [self.exe, "--stdout", "-v", self.voice, "-s", str(wpm), "--", text],
            capture_output=True,
            timeout=60,
            check=False,
        )
        out = proc.stdout
        if proc.returncode != 0 or len(out) < 44 or out[:4] != b"RIFF":
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise AudioError(
                f"espeak-ng failed: {err[0] if err else 'no audio'}",
                fix=f"check the voice name ({self.voice!r}) with: espeak-ng --voices",
            )
        # espeak-ng streams WAV with placeholder sizes: read the rate, take the rest as PCM.
        rate = struct.unpack_from("<I", out, 24)[0]
        pcm = out[44:]
        return from_pcm16(pcm[: len(pcm) - len(pcm) % 2], rate)


@functools.cache
def _espeak_voices(exe: str) -> frozenset[str]:
    """Language codes, voice names and file names espeak-ng knows (empty if it cannot say)."""
    try:
        out = subprocess.run([exe, "--voices"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:  # Pty Language Age/Gender VoiceName File [Other Languages]
            names.update({cols[1].lower(), cols[3].lower(), cols[4].lower(),
                          cols[4].rsplit("/", 1)[-1].lower()})
    return frozenset(names)


def create_tts(config: TtsConfig) -> TTS:
    """Return the engine named by ``config.engine``."""
    if config.engine == "espeak":
        return EspeakTTS(config)
    return PiperTTS(config)
