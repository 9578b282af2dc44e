"""Speech for bastion: STT (faster-whisper), TTS (Piper, espeak-ng), VAD, audio I/O, voice turns.

Heavy packages (faster-whisper, piper, sounddevice) are imported only when a model is loaded,
and a missing ``bastion[voice]`` extra is a clear error naming the pip line.
"""

from bastion.voice.audio import Audio, decode, from_pcm16
from bastion.voice.service import VoiceService
from bastion.voice.stt import STT, Transcript, WhisperSTT
from bastion.voice.tts import TTS, EspeakTTS, PiperTTS
from bastion.voice.turn import Heard, Spoken, VoiceDone, VoiceEvent, speak_events, voice_turn

__all__ = [
    "STT",
    "TTS",
    "Audio",
    "EspeakTTS",
    "Heard",
    "PiperTTS",
    "Spoken",
    "Transcript",
    "VoiceDone",
    "VoiceEvent",
    "VoiceService",
    "WhisperSTT",
    "decode",
    "from_pcm16",
    "speak_events",
    "voice_turn",
]
