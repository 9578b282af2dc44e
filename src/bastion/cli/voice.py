"""``bastion voice``: talk to the agent (push-to-talk or files), transcribe, speak, Wyoming."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bastion.cli._console import out_console
from bastion.cli._terminal import visible
from bastion.errors import AudioError

if TYPE_CHECKING:
    from bastion.app import App
    from bastion.voice.audio import Audio
    from bastion.voice.service import VoiceService

_err = Console(stderr=True, highlight=False)
_out = out_console(highlight=False)

voice_app = typer.Typer(
    help="Talk to the agent and hear it answer (local Whisper STT, Piper/espeak-ng TTS).",
    no_args_is_help=False,
)

EngineOpt = Annotated[
    str | None, typer.Option("--engine", "-e", help="TTS engine: piper or espeak")
]
SpeedOpt = Annotated[
    float | None, typer.Option("--speed", help="speaking speed, 1.0 = normal", min=0.25, max=4.0)
]
LangOpt = Annotated[
    str | None, typer.Option("--language", "-l", help="spoken language (ISO code); default auto")
]


def _build(yes: bool) -> App:
    from bastion.app import build_app
    from bastion.cli.approval import choose_approver
    from bastion.config.loader import load

    return build_app(load(), approver=choose_approver(yes=yes))


def _service(app: App) -> VoiceService:
    from bastion.voice.service import VoiceService

    return VoiceService(app.config.voice)


async def _turn(
    app: App,
    service: VoiceService,
    audio: Audio,
    *,
    session_id: str,
    language: str | None,
    engine: str | None,
    speed: float | None,
    play: object | None = None,
) -> list[Audio]:
    """Run one spoken turn, printing what was heard and the answer as it streams."""
    from bastion.agent.events import TurnError
    from bastion.messages import TextDelta
    from bastion.voice.turn import Heard, Spoken, VoiceDone, voice_turn

    spoken: list[Audio] = []
    async for ev in voice_turn(
        service, app.agent(), audio, session_id=session_id, language=language, engine=engine,
        speed=speed, redact=app.redactor.text,
    ):
        if isinstance(ev, Heard):
            if not ev.transcript.text:
                raise AudioError("no speech was heard", fix="speak closer to the microphone, "
                                 "or check the input file has speech in it")
            _err.print(f"[bold]you:[/] {escape(visible(ev.transcript.text))}")
            _out.print("[bold]bastion:[/] ", end="")
        elif isinstance(ev, TextDelta):
            _out.print(escape(visible(app.redactor.text(ev.text))), end="", soft_wrap=True)
        elif isinstance(ev, Spoken):
            spoken.append(ev.audio)
            if play is not None:
                play.play(ev.audio)  # type: ignore[attr-defined]
        elif isinstance(ev, TurnError):
            _out.print()
            raise AudioError(f"the agent failed: {ev.message}")
        elif isinstance(ev, VoiceDone):
            _out.print()
    return spoken


async def _headless(
    input_path: Path, output: Path | None, *, session: str | None, language: str | None,
    engine: str | None, speed: float | None, yes: bool,
) -> None:
    from bastion.voice.audio import Audio

    app = _build(yes)
    try:
        service = _service(app)
        if not input_path.is_file():
            raise AudioError(f"{input_path} does not exist", fix="give a WAV file with --input")
        audio = service.decode(input_path.read_bytes())
        sid = session or app.agent().new_session_id()
        spoken = await _turn(app, service, audio, session_id=sid, language=language,
                             engine=engine, speed=speed)
        if output is not None:
            rate = service.tts(engine).sample_rate
            output.write_bytes(Audio.concat(spoken, rate).wav())
            _err.print(f"[dim]answer audio written to {escape(str(output))}[/]")
        else:
            from bastion.voice.devices import Player, check_devices

            check_devices(need_input=False, need_output=True,
                          output_device=app.config.voice.output_device)
            player = Player(service.tts(engine).sample_rate, app.config.voice.output_device)
            for piece in spoken:
                player.play(piece)
            await asyncio.to_thread(player.close)
    finally:
        await app.aclose()


async def _push_to_talk(
    *, session: str | None, language: str | None, engine: str | None, speed: float | None,
    yes: bool, output: Path | None,
) -> None:
    from bastion.config.loader import load
    from bastion.voice.audio import Audio
    from bastion.voice.devices import Player, Recorder, check_devices

    cfg = load().voice
    check_devices(need_input=True, need_output=output is None,  # before any model loads
                  input_device=cfg.input_device, output_device=cfg.output_device)
    app = _build(yes)
    try:
        service = _service(app)
        _err.print("[dim]loading speech models...[/]")
        await service.warm(engine)
        sid = session or app.agent().new_session_id()
        _err.print(f"session {sid}. Press Enter to talk, Enter again to stop; Ctrl-C quits.")
        while await asyncio.to_thread(sys.stdin.readline):  # "" = end of input: quit
            rec = Recorder(cfg.input_device, max_seconds=cfg.max_seconds)
            rec.start()
            _err.print("[red]● listening[/] (Enter to stop)")
            await asyncio.to_thread(sys.stdin.readline)
            audio = rec.stop()
            if rec.truncated:
                _err.print(f"[yellow]recording stopped at the {cfg.max_seconds:.0f} s limit "
                           "(voice.max_seconds)[/]")
            rate = service.tts(engine).sample_rate
            player = None if output is not None else Player(rate, cfg.output_device)
            try:
                spoken = await _turn(app, service, audio, session_id=sid, language=language,
                                     engine=engine, speed=speed, play=player)
            except AudioError as exc:
                _err.print(f"[yellow]{escape(exc.user_text())}[/]")
                spoken = []
            finally:
                if player is not None:
                    await asyncio.to_thread(player.close)
            if output is not None and spoken:
                output.write_bytes(Audio.concat(spoken, rate).wav())
            _err.print("[dim]Enter to talk again.[/]")
    finally:
        await app.aclose()


@voice_app.callback(invoke_without_command=True)
def voice(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None, typer.Option("--input", "-i", help="question as a WAV file (no microphone)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the spoken answer to this WAV")
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="conversation id; reuse to continue")
    ] = None,
    language: LangOpt = None,
    engine: EngineOpt = None,
    speed: SpeedOpt = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="approve every risky tool call without asking")
    ] = False,
) -> None:
    """Talk with the agent: Enter starts and stops recording, the answer is spoken.

    The answer is spoken sentence by sentence as it is written. With --input/--output it runs
    on files (no audio devices needed).
    """
    if ctx.invoked_subcommand:
        return
    if input_path is not None:
        asyncio.run(_headless(input_path, output, session=session, language=language,
                              engine=engine, speed=speed, yes=yes))
        return
    try:
        asyncio.run(_push_to_talk(session=session, language=language, engine=engine,
                                  speed=speed, yes=yes, output=output))
    except KeyboardInterrupt:
        _err.print("bye")


@voice_app.command("transcribe")
def transcribe(
    file: Annotated[Path, typer.Argument(help="audio file: WAV, FLAC, MP3, OGG, WebM")],
    language: LangOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON with segments")] = False,
) -> None:
    """Print the text spoken in an audio file (empty for silence)."""
    from bastion.config.loader import load
    from bastion.voice.service import VoiceService

    service = VoiceService(load().voice)
    if not file.is_file():
        raise AudioError(f"{file} does not exist", fix="give the path of an audio file")
    t = asyncio.run(service.transcribe(service.decode(file.read_bytes()), language=language))
    if as_json:
        _out.print_json(json.dumps({
            "text": t.text, "language": t.language, "duration": round(t.duration, 3),
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in t.segments],
        }))
    else:
        _out.print(escape(t.text))


@voice_app.command("say")
def say(
    text: Annotated[str, typer.Argument(help="what to say")],
    output: Annotated[
        Path | None, typer.Option(
            "--output", "-o", help="write a file instead of playing; its suffix picks the "
            "format: .wav .mp3 .opus .ogg .aac .flac .pcm")
    ] = None,
    engine: EngineOpt = None,
    speed: SpeedOpt = None,
) -> None:
    """Speak text with the configured TTS engine (or write it to an audio file)."""
    from bastion.config.loader import load
    from bastion.voice.audio import FORMATS, Audio, encode
    from bastion.voice.service import VoiceService

    fmt = None
    if output is not None:
        suffix = output.suffix.lower().lstrip(".")
        fmt = {"ogg": "opus", "m4a": "aac"}.get(suffix, suffix)
        if fmt not in FORMATS:
            raise AudioError(f"cannot tell the audio format of {output.name!r} from its suffix",
                             fix="name the file .wav, .mp3, .opus, .ogg, .aac, .flac or .pcm")

    cfg = load().voice
    service = VoiceService(cfg)

    async def run() -> list[Audio]:
        return [a async for a in service.synthesize(text, engine=engine, speed=speed)]

    if output is None:
        from bastion.voice.devices import check_devices

        check_devices(need_input=False, need_output=True, output_device=cfg.output_device)
    parts = asyncio.run(run())
    if not parts:
        raise AudioError("nothing to say", fix="give some words")
    audio = Audio.concat(parts, parts[0].sample_rate)
    if output is not None:
        output.write_bytes(encode(audio, str(fmt)))
        _err.print(f"[dim]{audio.duration:.1f} s written to {escape(str(output))}[/]")
        return
    from bastion.voice.devices import Player

    player = Player(audio.sample_rate, cfg.output_device)
    player.play(audio)
    player.close()


@voice_app.command("wyoming")
def wyoming(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (Home Assistant's default is 10300)")] = 10300,
    allow: Annotated[list[str] | None, typer.Option(
        "--allow", help="only serve this address or CIDR, e.g. Home Assistant's (repeat)")] = None,
) -> None:
    """Serve bastion's STT and TTS over the Wyoming protocol (Home Assistant voice)."""
    from bastion._net import is_loopback
    from bastion.config.loader import load
    from bastion.voice.service import VoiceService
    from bastion.voice.wyoming_server import parse_allow, serve

    nets = parse_allow(allow or [])
    service = VoiceService(load().voice)
    if not is_loopback(host):
        who = ", ".join(allow or []) or "anyone who can reach it (the protocol has no password)"
        _err.print(f"[yellow]warning: listening on {escape(host)}; served: {escape(who)}. "
                   "Limit it with --allow HOME_ASSISTANT_IP.[/]")
    _err.print(f"Wyoming STT+TTS on tcp://{host}:{port} (Ctrl-C stops)")
    try:
        asyncio.run(serve(service, host, port, nets))
    except KeyboardInterrupt:
        _err.print("stopped")


def register(app: typer.Typer) -> None:
    """Add ``bastion voice`` to the CLI."""
    app.add_typer(voice_app, name="voice")
