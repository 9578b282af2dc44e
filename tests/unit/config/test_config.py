"""Config loading, env overrides, clear errors, masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bastion.config import Config, dump, get_key, load, paths, save, set_key
from bastion.errors import ConfigError


def test_defaults_and_home(bastion_home: Path) -> None:
    cfg = load()
    assert cfg.model.backend == "embedded" and cfg.api.host == "127.0.0.1"
    assert paths.config_file() == bastion_home / "bastion.yaml"


def test_save_load_roundtrip_and_file_mode(bastion_home: Path) -> None:
    cfg = Config()
    cfg.api.token = SecretStr("tok-123456")
    path = save(cfg)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load().api.token.get_secret_value() == "tok-123456"  # type: ignore[union-attr]


def test_secrets_masked_unless_revealed() -> None:
    cfg = Config()
    cfg.api.token = SecretStr("tok-123456")
    assert get_key(cfg, "api.token") == "********"
    assert get_key(cfg, "api.token", reveal=True) == "tok-123456"
    assert "tok-123456" not in str(dump(cfg))


def test_env_override() -> None:
    cfg = load(environ={"BASTION_MODEL__TEMPERATURE": "0.5", "BASTION_API__PORT": "9000"})
    assert cfg.model.temperature == 0.5 and cfg.api.port == 9000


def test_invalid_field_one_clear_line(bastion_home: Path) -> None:
    paths.config_file().write_text("api:\n  port: 99999999\n")
    with pytest.raises(ConfigError) as err:
        load()
    text = err.value.user_text()
    assert "api.port" in text and "\n" not in text and "fix:" in text


def test_unknown_setting_and_bad_yaml(bastion_home: Path) -> None:
    paths.config_file().write_text("modle:\n  backend: x\n")
    with pytest.raises(ConfigError, match="unknown setting modle in ") as err:
        load()
    assert "did you mean model?" in (err.value.fix or "")
    paths.config_file().write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load()


def test_set_key_validates_and_keeps_file_intact(bastion_home: Path) -> None:
    set_key(None, "model.temperature", "0.3")
    assert load().model.temperature == 0.3
    with pytest.raises(ConfigError):
        set_key(None, "model.temperature", "hot")
    assert load().model.temperature == 0.3
    with pytest.raises(ConfigError):
        set_key(None, "model.nonsense", "1")


def test_on_off_words_are_choices_not_booleans(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """YAML 1.1 reads ``off`` as False: ``model.repack: off`` was refused with "Input should be
    'auto', 'on' or 'off'", in the file, from $BASTION_MODEL__REPACK and by `config set`."""
    from bastion.config.loader import load, set_key

    path = tmp_path / "bastion.yaml"
    path.write_text("model:\n  repack: off\n  convert: off\nvoice:\n  stt:\n    vad: off\n"
                    "memory:\n  enabled: no\n")
    cfg = load(path)
    assert (cfg.model.repack, cfg.model.convert, cfg.voice.stt.vad) == ("off", "off", "off")
    assert cfg.memory.enabled is False  # a boolean setting still takes yes/no/on/off
    monkeypatch.setenv("BASTION_MODEL__REPACK", "on")
    monkeypatch.setenv("BASTION_MEMORY__ENABLED", "yes")
    cfg = load(path)
    assert cfg.model.repack == "on" and cfg.memory.enabled is True
    monkeypatch.delenv("BASTION_MODEL__REPACK")
    assert set_key(path, "model.repack", "on").model.repack == "on"
    assert load(path).model.repack == "on"
