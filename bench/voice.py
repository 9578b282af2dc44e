"""Voice benchmark: STT/TTS real-time factors through bastion vs raw faster-whisper/Piper on
the same audio in the same run, the VAD gates compared, and the time from the end of speech to
the first byte of the spoken answer over the WebSocket of a live ``bastion serve``.

    .venv/bin/python bench/voice.py [--runs 3] [--no-latency]

RTF = processing time / audio duration (lower is better). ratio = raw time / bastion time
(1.0 = no overhead). Targets on a 2-core machine: STT RTF <= 0.3, TTS RTF <= 0.1, ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.unit.voice._shared import espeak, word_accuracy  # noqa: E402

from bastion.voice.audio import Audio, silence  # noqa: E402
from bastion.voice.service import VoiceService  # noqa: E402
from bastion.voice.vad import SpeechGate  # noqa: E402

SENTENCES = [
    "Please turn off the lights in the kitchen.",
    "What is the weather like in Berlin tomorrow?",
    "Set a timer for ten minutes.",
    "Remind me to call my mother this evening.",
    "How many days are there in a leap year?",
    "Open the garage door and switch on the heating.",
    "Read me the latest news about the stock market.",
    "Play some relaxing music in the living room.",
]
TTS_TEXT = (
    "Good morning. Your first meeting starts at nine, and it will rain after lunch. "
    "The backup finished without errors, and twelve files were copied to the archive. "
    "Remember to water the plants before you leave."
)


def timed(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    """Median wall time of ``runs`` calls, and the last result."""
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def interleaved(a: Callable[[], object], b: Callable[[], object], runs: int
                ) -> tuple[float, float, object, object]:
    """Run a and b alternately (so load changes hit both), return both medians and results."""
    ta, tb, ra, rb = [], [], None, None
    for _ in range(runs):
        t = time.perf_counter()
        ra = a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        rb = b()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb), ra, rb


def bench_stt(service: VoiceService, runs: int) -> None:
    clip = Audio.concat([p for s in SENTENCES for p in (espeak(s), silence(0.4))], 22_050)
    wav = clip.wav()
    model = service.stt.model  # type: ignore[attr-defined]
    cfg = service.config.stt

    # Raw faster-whisper gets exactly the 16 kHz samples bastion hands the model, so both
    # decode the same input to the same tokens and the difference is bastion's overhead
    # (WAV parsing, resampling, the VAD gate, the worker thread).
    samples = service.decode(wav).resample(16_000).samples

    def raw() -> str:
        segs, _ = model.transcribe(samples, beam_size=cfg.beam_size, vad_filter=False,
                                   condition_on_previous_text=False)
        return " ".join(s.text for s in segs)

    def ours() -> str:
        return asyncio.run(service.transcribe(service.decode(wav))).text

    ours()  # warm both paths (first call allocates)
    t_raw, t_ours, text_raw, text_ours = interleaved(raw, ours, runs)
    ref = " ".join(SENTENCES)
    print(f"\nSTT  faster-whisper base int8, {clip.duration:.1f} s of espeak-ng speech, "
          f"beam {cfg.beam_size}, median of {runs}")
    print(f"  raw faster-whisper : {t_raw:6.2f} s  RTF {t_raw / clip.duration:.3f}  "
          f"word accuracy {word_accuracy(ref, str(text_raw)):.0%}")
    print(f"  through bastion    : {t_ours:6.2f} s  RTF {t_ours / clip.duration:.3f}  "
          f"word accuracy {word_accuracy(ref, str(text_ours)):.0%}")
    print(f"  ratio raw/bastion  : {t_raw / t_ours:.3f}   (target RTF <= 0.3, ratio >= 0.95)")
    gate = service.stt.gate  # type: ignore[attr-defined]
    t_own, _ = timed(lambda: gate.has_speech(service.decode(wav).resample(16_000)), runs)
    print(f"  bastion's own work : {t_own * 1000:6.1f} ms (WAV parse, resample, VAD gate) = "
          f"{t_own / t_raw:.1%} of the model time; the rest of the gap is run-to-run noise")
    short = espeak("What is the capital of France?")
    t_short, _ = timed(lambda: asyncio.run(service.transcribe(short)), runs)
    print(f"  short question {short.duration:.1f} s: {t_short:.2f} s "
          f"(RTF {t_short / short.duration:.2f}; Whisper pads every clip to a 30 s window, "
          "so short clips cost about the same)")


def bench_tts(service: VoiceService, runs: int) -> None:
    from piper import SynthesisConfig

    piper_tts = service.tts("piper")
    voice = piper_tts.voice  # type: ignore[attr-defined]
    syn = SynthesisConfig(length_scale=voice.config.length_scale)

    def raw() -> float:
        return sum(len(c.audio_float_array) for c in voice.synthesize(TTS_TEXT, syn)) / 22_050

    async def collect() -> float:
        return sum([a.duration async for a in service.synthesize(TTS_TEXT, engine="piper")])

    def ours() -> float:
        return asyncio.run(collect())

    ours()
    t_raw, t_ours, d_raw, d_ours = interleaved(raw, ours, runs)
    d = float(d_ours)  # type: ignore[arg-type]
    print(f"\nTTS  Piper en_US joe medium, {d:.1f} s of speech ({len(TTS_TEXT)} chars), "
          f"median of {runs}")
    print(f"  raw piper          : {t_raw:6.2f} s  RTF {t_raw / float(d_raw):.3f}")  # type: ignore[arg-type]
    print(f"  through bastion    : {t_ours:6.2f} s  RTF {t_ours / d:.3f}")
    print(f"  ratio raw/bastion  : {t_raw / t_ours:.3f}   (target RTF <= 0.1, ratio >= 0.95)")
    es = service.tts("espeak")
    t_es, d_es = timed(lambda: sum(a.duration for a in es.synthesize(TTS_TEXT)), runs)
    print(f"  espeak-ng engine   : {t_es:6.2f} s  RTF {t_es / float(d_es):.3f}")  # type: ignore[arg-type]


def bench_vad(service: VoiceService) -> None:
    rng = np.random.default_rng(0)
    speech = espeak("Please turn off the lights in the kitchen.").resample(16_000)
    n = 16_000 * 3

    def noise(db: float) -> Audio:
        return Audio((rng.standard_normal(n) * 10 ** (db / 20)).astype(np.float32), 16_000)

    t = np.arange(n) / 16_000
    cases = {
        "speech": speech,
        "silence": silence(3.0),
        "noise -50dBFS": noise(-50),
        "noise -30dBFS": noise(-30),
        "60 Hz hum": Audio((0.05 * np.sin(2 * np.pi * 60 * t)).astype(np.float32), 16_000),
        "speech+noise": Audio(speech.samples + noise(-35).samples[: len(speech.samples)],
                              16_000),
    }
    print("\nVAD  says 'speech?' per clip (want: yes, no, no, no, no, yes); ms per audio second")
    print("  gate    " + "".join(f"{k:>15}" for k in cases))
    for kind in ("silero", "webrtc", "energy"):
        gate = SpeechGate(kind)  # type: ignore[arg-type]
        row = []
        for audio in cases.values():
            t0 = time.perf_counter()
            hit = gate.has_speech(audio)
            ms = (time.perf_counter() - t0) * 1000 / audio.duration
            row.append(f"{'yes' if hit else 'no':>9} {ms:4.1f}ms")
        print(f"  {kind:7} " + "".join(f"{r:>15}" for r in row))
    model = service.stt.model  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    segs, _ = model.transcribe(noise(-30).samples, beam_size=1)
    text = " ".join(s.text for s in segs).strip()
    print(f"  without a gate, Whisper on 3 s of -30 dBFS noise: {time.perf_counter() - t0:.2f} s,"
          f" text {text!r}")


def bench_pipeline(service: VoiceService, runs: int) -> None:
    """End of speech -> first audio with an instant (scripted) model: the voice part alone."""
    from bastion.app import build_app
    from bastion.config.model import Config, MemoryConfig
    from bastion.testing import ScriptedModel, say
    from bastion.voice.turn import Heard, Spoken, voice_turn

    question = espeak("What is the capital of France?")
    answer = "The capital of France is Paris. It has been the capital for a very long time."
    rows = []
    for _ in range(runs):
        app = build_app(Config(memory=MemoryConfig(enabled=False)),
                        model=ScriptedModel(say(answer)))

        async def turn(agent: object = app.agent()) -> dict[str, float]:
            marks: dict[str, float] = {}
            t0 = time.perf_counter()
            async for ev in voice_turn(service, agent, question):  # type: ignore[arg-type]
                if isinstance(ev, Heard):
                    marks["transcript"] = time.perf_counter() - t0
                elif isinstance(ev, Spoken) and ev.index == 0:
                    marks["first audio"] = time.perf_counter() - t0
            marks["all audio"] = time.perf_counter() - t0
            return marks

        rows.append(asyncio.run(turn()))
        app.audit.close()
    print(f"\nEnd of speech -> audio with an instant scripted model (the voice pipeline alone, "
          f"{question.duration:.1f} s question, median of {runs})")
    for key in ("transcript", "first audio", "all audio"):
        print(f"  {key:17}: {statistics.median(r[key] for r in rows):6.2f} s")


def bench_latency(runs: int) -> None:
    from websockets.sync.client import connect

    home = Path(tempfile.mkdtemp(prefix="bastion-voice-bench-"))
    env = {k: v for k, v in os.environ.items() if not (k.startswith("BASTION_") and "__" in k)}
    env.update({"BASTION_HOME": str(home), "PYTHONPATH": str(ROOT / "src"),
                "BASTION_MODEL__MAX_TOKENS": "64", "BASTION_MEMORY__ENABLED": "false"})
    subprocess.run([sys.executable, "-m", "bastion", "init", "--yes"], env=env, check=True,
                   capture_output=True, cwd=home)
    import yaml

    token = yaml.safe_load((home / "bastion.yaml").read_text())["api"]["token"]
    log = home / "serve.out"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bastion", "serve", "--port", "0"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    try:
        while not (m := re.search(r"http://(127\.0\.0\.1:\d+)", log.read_text())):
            if proc.poll() is not None:
                raise SystemExit(log.read_text())
            time.sleep(0.1)
        url = f"ws://{m.group(1)}/v1/voice/ws?token={token}"
        pcm = espeak("What is the capital of France?").resample(16_000).pcm16()
        rows = []
        for i in range(runs + 1):  # the first turn loads the models: not counted
            with connect(url, max_size=2**24, open_timeout=60) as ws:
                ws.recv(timeout=60)
                ws.send(json.dumps({"type": "start", "partials": False, "vad": False}))
                ws.recv(timeout=60)
                for k in range(0, len(pcm), 3200):
                    ws.send(pcm[k : k + 3200])
                t_end = time.perf_counter()
                ws.send(json.dumps({"type": "end"}))
                marks: dict[str, float] = {}
                while True:
                    msg = ws.recv(timeout=600)
                    now = time.perf_counter() - t_end
                    if isinstance(msg, bytes):
                        marks.setdefault("first audio byte", now)
                        continue
                    kind = json.loads(msg)["type"]
                    marks.setdefault({"transcript": "transcript", "text": "first text",
                                      "done": "answer done"}.get(kind, kind), now)
                    if kind in ("turn_end", "error"):
                        break
            if i:
                rows.append(marks)
        print(f"\nEnd of speech -> first audio byte, live bastion serve + SmolLM2 (median of "
              f"{runs} turns after a warm-up)")
        for key in ("transcript", "first text", "first audio byte", "answer done", "turn_end"):
            vals = [r[key] for r in rows if key in r]
            if vals:
                print(f"  {key:17}: {statistics.median(vals):6.2f} s")
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-latency", action="store_true", help="skip the live-server part")
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start")
    service = VoiceService()
    t = time.perf_counter()
    service.stt  # noqa: B018
    service.tts("piper")
    print(f"models loaded in {time.perf_counter() - t:.1f} s")
    bench_stt(service, args.runs)
    bench_tts(service, args.runs)
    bench_vad(service)
    bench_pipeline(service, args.runs)
    if not args.no_latency:
        bench_latency(args.runs)
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
