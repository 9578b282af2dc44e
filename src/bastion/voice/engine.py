"""Speech engines in supervised child processes (the default for ``bastion serve`` and the CLI).

:class:`IsolatedSTT` (faster-whisper) and :class:`IsolatedTTS` (Piper) keep their native
engine in a child (:mod:`bastion.voice._engine`), one per engine, loaded once and reused. A
child that dies (segfault, abort, out-of-memory kill) fails only the request in flight with
:class:`SpeechEngineCrashed` (``the speech engine crashed (signal 11, SIGSEGV)``); the next
request starts a new child. Three crashes within a minute (:class:`bastion._proc.CrashLoop`)
mark the engine broken: every later request gets one clear error instead of a crash loop.
Children get no secrets in their environment, their own session, and die with the parent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from bastion._proc import CRASH_LIMIT, CRASH_WINDOW_S, CrashLoop, child_env, describe_exit
from bastion.config.model import SttConfig, TtsConfig
from bastion.errors import AudioError, BastionError, ConfigError, ModelError
from bastion.hardware.memory import OOM_KILLED, OomWatch
from bastion.voice.audio import Audio
from bastion.voice.stt import Segment, Transcript


class SpeechEngineCrashed(ModelError):
    """The speech engine's process died while serving a request."""

    def __init__(self, what: str, returncode: int, *, oom: bool = False) -> None:
        """Name the engine and how its process ended (``oom``: killed for lack of memory)."""
        self.returncode = returncode
        self.oom = oom
        if oom:
            super().__init__(
                f"the speech engine ({what}) was killed for lack of memory "
                f"({describe_exit(returncode)}, {OOM_KILLED}); this request is lost, the engine "
                "restarts with the next one",
                fix="free memory, or choose a smaller voice model (voice.stt.model)",
            )
            return
        super().__init__(
            f"the speech engine ({what}) crashed ({describe_exit(returncode)}); this request is "
            "lost, the engine restarts with the next one",
            fix="retry; if it keeps crashing check the voice model files (voice.stt.model, "
            "voice.tts.voice) and run `bastion doctor`",
        )


class EngineProcess:
    """One supervised engine child; one request at a time (requests queue on a lock)."""

    def __init__(self, kind: str, what: str, config: dict[str, Any]) -> None:
        """Start the child for ``kind`` (``stt``/``tts``) and wait until its engine loaded."""
        self.kind, self.what, self.config = kind, what, config
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._oom = OomWatch()  # renewed by each _start
        self.crashes = CrashLoop(CRASH_LIMIT, CRASH_WINDOW_S)
        self.broken: BastionError | None = None
        with self._lock:
            self._start()

    @property
    def pid(self) -> int | None:
        """The running child's process id (None between a crash and the next request)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:  # under self._lock
        self._oom = OomWatch()
        proc = subprocess.Popen(  # noqa: S603 - our own module, argv is fixed
            [sys.executable, "-m", "bastion.voice._engine"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), close_fds=True,
            start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"kind": self.kind, "config": self.config}).encode() + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line.endswith(b"\n"):  # it died before its first line was out
            raise self._crashed(proc)
        msg = json.loads(line)
        if "error" in msg:
            proc.wait()
            raise ConfigError(msg["error"], fix=msg.get("fix"))
        self._proc = proc

    def _crashed(self, proc: subprocess.Popen[bytes]) -> BastionError:
        rc = proc.wait()
        self._proc = None
        err = SpeechEngineCrashed(self.what, rc, oom=self._oom.killed(rc))
        if self.crashes.record():
            self.broken = ModelError(
                f"the speech engine ({self.what}) keeps crashing ({self.crashes.count} times "
                f"within {CRASH_WINDOW_S:.0f} s); not restarting it",
                fix="check the voice model files (voice.stt.model, voice.tts.voice), run "
                "`bastion doctor`, then restart bastion",
            )
        return err

    def request(self, req: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Send one request; yield its answer lines (raise on its error or a crash)."""
        with self._lock:
            if self.broken is not None:
                raise self.broken
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(req).encode() + b"\n")
                proc.stdin.flush()
            except OSError as exc:
                raise self._crashed(proc) from exc
            finished = False
            try:
                while True:
                    line = proc.stdout.readline()
                    if not line.endswith(b"\n"):  # end of output, or cut mid-line: it died
                        finished = True
                        raise self._crashed(proc)
                    msg = json.loads(line)
                    if "error" in msg:
                        finished = True
                        raise AudioError(msg["error"], fix=msg.get("fix"))
                    if msg.get("end"):
                        finished = True
                        return
                    yield msg
            finally:
                if not finished:  # abandoned half-way: its answer would reach the next request
                    proc.kill()
                    proc.wait()
                    self._proc = None

    def close(self) -> None:
        """End the child (closing stdin ends it; killed after a grace period)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class IsolatedSTT:
    """faster-whisper in a supervised child (see the module text); the :class:`STT` seam."""

    name = "faster-whisper"

    def __init__(self, config: SttConfig | None = None) -> None:
        """Start the child and load Whisper there (a bad config fails here, as in-process)."""
        self.config = config or SttConfig()
        self.engine = EngineProcess("stt", "faster-whisper", self.config.model_dump(mode="json"))

    def transcribe(
        self, audio: Audio, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        """Return the text spoken in ``audio`` (transcribed in the child)."""
        data = np.ascontiguousarray(audio.samples, dtype=np.float32).tobytes()
        req = {"op": "stt", "samples": base64.b64encode(data).decode("ascii"),
               "rate": audio.sample_rate, "language": language, "prompt": prompt}
        for msg in list(self.engine.request(req)):  # read to its end: the child is then free
            t = msg["transcript"]
            return Transcript(t["text"], t["language"], float(t["duration"]),
                              tuple(Segment(**s) for s in t["segments"]), bool(t["speech"]))
        raise AudioError("the speech engine gave no transcript", fix="retry the request")


class IsolatedTTS:
    """Piper in a supervised child (see the module text); the :class:`TTS` seam."""

    name = "piper"

    def __init__(self, config: TtsConfig | None = None) -> None:
        """Start the child and load the Piper voice there."""
        self.config = config or TtsConfig()
        self.engine = EngineProcess("tts", "piper", self.config.model_dump(mode="json"))
        self.sample_rate = 0
        for piece in self.synthesize("ok"):  # learn the voice's rate (and warm it)
            self.sample_rate = piece.sample_rate

    def synthesize(self, text: str, *, speed: float | None = None) -> Iterator[Audio]:
        """Yield one :class:`Audio` per sentence of ``text``, as the child produces them."""
        for msg in self.engine.request({"op": "tts", "text": text, "speed": speed}):
            samples = np.frombuffer(base64.b64decode(msg["audio"]), dtype=np.float32)
            yield Audio(samples.copy(), int(msg["rate"]))
