"""Load, validate, change and save ``bastion.yaml``.

Environment variables ``BASTION_<SECTION>__<KEY>`` override the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from bastion.config import paths
from bastion.config.model import Config
from bastion.errors import ConfigError

ENV_PREFIX = "BASTION_"
_LIST_FIX = "list settings with: bastion config show"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key or key == "BASTION_HOME":
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value) if value else value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _explain(exc: ValidationError, source: str) -> ConfigError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown setting"
    count = len(exc.errors())
    more = f" (+{count - 1} more)" if count > 1 else ""
    return ConfigError(
        f"invalid setting {where} in {source}: {msg}{more}",
        fix=f"edit {source} or run: bastion config set {where} VALUE",
    )


def validate(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into :class:`Config`, mapping errors to one clear line."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def read_raw(path: Path | None = None) -> dict[str, Any]:
    """Read the YAML file as a mapping (empty when it does not exist)."""
    path = path or paths.config_file()
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{path} is not valid YAML{line}", fix="fix the file or delete it and run: bastion init"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of settings", fix="run: bastion init --force"
        )
    return data


def load(path: Path | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Load the config file with environment overrides applied."""
    path = path or paths.config_file()
    data = _merge(read_raw(path), _env_overrides(dict(os.environ if environ is None else environ)))
    return validate(data, str(path))


def save(config: Config, path: Path | None = None) -> Path:
    """Write the config (secrets in clear: the file is created mode 0600)."""
    path = path or paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dump(config, reveal=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, path)
    return path


def _plain(value: Any, reveal: bool) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value() if reveal else "********"
    if isinstance(value, BaseModel):
        return {k: _plain(v, reveal) for k, v in value}
    if isinstance(value, dict):
        return {k: _plain(v, reveal) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, reveal) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump(config: Config, *, reveal: bool = False) -> dict[str, Any]:
    """Return the config as plain data; secrets masked unless ``reveal``."""
    out: dict[str, Any] = _plain(config, reveal)
    return out


def get_key(config: Config, key: str, *, reveal: bool = False) -> Any:
    """Return one dotted setting, e.g. ``api.token``."""
    node: Any = dump(config, reveal=reveal)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(
                f"unknown setting {key}", fix="list settings with: bastion config show"
            )
        node = node[part]
    return node


def set_key(path: Path | None, key: str, value: str) -> Config:
    """Set one dotted setting in the file (value parsed as YAML), validate, and save."""
    path = path or paths.config_file()
    raw = read_raw(path)
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(
                f"{key} is not a setting", fix="list settings with: bastion config show"
            )
    node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    config = validate(raw, str(path))
    get_key(config, key)  # refuse keys that validated only because they were optional extras
    save(config, path)
    return config
