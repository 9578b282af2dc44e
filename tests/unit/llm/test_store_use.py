"""``store.use``: what ``bastion model use`` and ``POST /v1/models/use`` write to bastion.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bastion.errors import ModelError
from bastion.llm import store


def _installed(tmp_path: Path) -> store.Manifest:
    gguf = tmp_path / "Tiny-Q8_0.gguf"
    gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(1000))  # a v3 header
    return store.import_file(gguf)


def test_switching_from_a_model_server_drops_its_url(bastion_home: Path, tmp_path: Path) -> None:
    config = bastion_home / "bastion.yaml"
    config.write_text(yaml.safe_dump({"model": {
        "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "remote"}}))
    m = _installed(tmp_path)
    assert store.use(m, n_ctx=2048) == config
    model = yaml.safe_load(config.read_text())["model"]
    assert (model["backend"], model["name"], model["n_ctx"]) == ("embedded", m.name, 2048)
    assert model["path"] == str(store.model_path(m)) and model.get("base_url") is None


def test_a_changed_file_or_no_config_is_refused(bastion_home: Path, tmp_path: Path) -> None:
    m = _installed(tmp_path)
    with pytest.raises(ModelError, match="not set up"):
        store.use(m)
    (bastion_home / "bastion.yaml").write_text("model: {}\n")
    store.model_path(m).write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(9))
    with pytest.raises(ModelError, match="changed since it was verified"):
        store.use(m)
    assert yaml.safe_load((bastion_home / "bastion.yaml").read_text()) == {"model": {}}
