"""The speech engine child: faster-whisper or Piper in a process of its own, driven over a pipe.

``python -m bastion.voice._engine`` is started by :mod:`bastion.voice.engine`. Native code
(CTranslate2, onnxruntime) runs only here, so a crash costs the request in flight, not
``bastion serve``. Protocol: JSON lines. The first line is ``{"kind": "stt"|"tts",
"config": …}``; the answer is ``{"ready": true}`` or ``{"error", "fix"}``. Each request is
answered by zero or more ``{"audio", "rate"}`` lines (TTS) or one ``{"transcript"}`` line (STT),
then ``{"end": true}`` (or ``{"error", "fix", "end": true}``). Audio travels as base64 float32.
fd 1 is pointed at stderr so nothing a native library prints can corrupt the protocol.

``BASTION_TEST_VOICE_FAULT=PATH``: a request that finds PATH deletes it and SIGSEGVs this
process (the fault-injection tests use it to crash the engine in the middle of a request); if
PATH held ``mid-line``, half an answer line is written first; ``memory``: the process takes
memory until a memory limit gets it killed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from bastion._proc import die_with_parent
from bastion.errors import BastionError

FAULT_ENV = "BASTION_TEST_VOICE_FAULT"


def _send(out: IO[bytes], obj: dict[str, Any]) -> None:
    out.write((json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8"))
    out.flush()


def _load(kind: str, config: dict[str, Any]) -> Any:
    if kind == "stt":
        from bastion.config.model import SttConfig
        from bastion.voice.stt import WhisperSTT

        return WhisperSTT(SttConfig.model_validate(config))
    from bastion.config.model import TtsConfig
    from bastion.voice.tts import PiperTTS

    return PiperTTS(TtsConfig.model_validate(config))


def _serve(engine: Any, req: dict[str, Any], out: IO[bytes]) -> None:
    import numpy as np

    from bastion.voice.audio import Audio

    fault = os.environ.get(FAULT_ENV)
    if fault and Path(fault).exists():
        how = Path(fault).read_text()
        Path(fault).unlink()
        if how == "memory":  # grows until a memory limit kills it (at most 8 GiB)
            hog = [b"\x01" * (64 << 20) for _ in range(128)]  # written, so resident
            os._exit(70 + len(hog) % 2)
        if how == "mid-line":  # dies half-way through an answer line, as a kill mid-write does
            out.write(b'{"audio": "AAAA')
            out.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    if req["op"] == "stt":
        samples = np.frombuffer(base64.b64decode(req["samples"]), dtype=np.float32)
        t = engine.transcribe(Audio(samples, int(req["rate"])), language=req.get("language"),
                              prompt=req.get("prompt"))
        _send(out, {"transcript": asdict(t)})
    else:
        for piece in engine.synthesize(req["text"], speed=req.get("speed")):
            data = np.ascontiguousarray(piece.samples, dtype=np.float32).tobytes()
            _send(out, {"audio": base64.b64encode(data).decode("ascii"),
                        "rate": piece.sample_rate})
    _send(out, {"end": True})


def main() -> None:
    """Load the engine the first line names, then serve requests until stdin closes."""
    die_with_parent()  # (a parent gone before this closed our stdin: we exit on EOF)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    head = json.loads(inp.readline() or b"{}")
    try:
        engine = _load(str(head.get("kind")), dict(head.get("config") or {}))
    except BastionError as exc:
        _send(out, {"error": exc.message, "fix": exc.fix})
        return
    _send(out, {"ready": True, "pid": os.getpid()})
    for line in inp:
        req = json.loads(line)
        try:
            _serve(engine, req, out)
        except BastionError as exc:
            _send(out, {"error": exc.message, "fix": exc.fix, "end": True})
        except Exception as exc:  # noqa: BLE001 - a Python-level failure is this request's error
            _send(out, {"error": f"{type(exc).__name__}: {exc}", "fix": None, "end": True})


if __name__ == "__main__":
    main()
