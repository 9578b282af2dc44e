"""The model factory: dispatch on backend, clear errors for unknown models and files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.model import Config
from bastion.errors import ModelError
from bastion.llm.factory import create_leaf_model
from bastion.llm.http import HttpModel
from bastion.models import create_model


def cfg(**model: object) -> Config:
    return Config.model_validate({"model": model})


def test_unknown_embedded_model_name() -> None:
    with pytest.raises(ModelError, match="unknown embedded model 'llama-70b'") as info:
        create_model(cfg(name="llama-70b"))
    assert "model.path" in (info.value.fix or "")


def test_missing_and_non_gguf_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        create_model(cfg(path=str(tmp_path / "nope.gguf")))
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a GGUF file"):
        create_model(cfg(path=str(bad)))


def test_corrupt_gguf_is_a_model_error(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)  # version 0: refused before native code reads it
    with pytest.raises(ModelError, match="broken.gguf is not a GGUF model file"):
        create_model(cfg(path=str(bad)))
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\0" * 64)  # a cut v3 file
    with pytest.raises(ModelError, match="could not load model broken.gguf"):
        create_model(cfg(path=str(bad)))


async def test_http_backends_by_profile() -> None:
    m = create_model(cfg(backend="ollama", name="qwen3:0.6b"))
    assert isinstance(m, HttpModel) and m.quirks.name == "ollama"
    assert m.base_url == "http://127.0.0.1:11434/v1" and m.quirks.native_tools
    await m.aclose()
    m = create_model(cfg(backend="openai", base_url="http://127.0.0.1:8011", native_tools=True))
    assert isinstance(m, HttpModel) and m.quirks.name == "llamacpp" and m.quirks.native_tools
    await m.aclose()


def test_openai_itself_needs_a_key() -> None:
    with pytest.raises(ModelError, match="needs an API key") as info:
        create_model(cfg(backend="openai"))
    assert "api_key" in (info.value.fix or "")


@pytest.mark.parametrize("backend", ["cluster", "pattern"])
def test_leaf_factory_refuses_composites(backend: str) -> None:
    with pytest.raises(ModelError, match="composite model") as info:
        create_leaf_model(cfg(backend=backend))
    assert "bastion.models.create_model" in (info.value.fix or "")
