"""Load, validate, change and save ``bastion.yaml``.

Environment variables ``BASTION_<SECTION>__<KEY>`` override the file.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from bastion.config import paths
from bastion.config.model import Config
from bastion.errors import ConfigError

ENV_PREFIX = "BASTION_"


class _Loader(yaml.SafeLoader):
    """YAML 1.2's booleans: only true/false are booleans; on, off, yes, no stay words.

    YAML 1.1 (PyYAML's default) reads ``repack: off`` as ``False``, which a setting whose
    choices are ``auto | on | off`` then refused with "Input should be 'auto', 'on' or 'off'".
    Boolean settings still take on/off/yes/no: the config model reads those words as
    booleans.
    """


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str) -> Any:
    """Parse a config file or value (YAML, with YAML 1.2's booleans)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


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
        node[parts[-1]] = parse_yaml(value) if value else value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _fields_at(loc: list[str]) -> list[str] | None:
    """Return the setting names valid at ``loc`` (a dotted path's parent), if it is a section."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        for arg in (*get_args(ann), ann):  # X | None, dict[str, X], X
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            return None
    return list(model.model_fields)


def _env_name(loc: list[str], env: dict[str, Any]) -> str | None:
    """Return the ``BASTION_…`` variable that set ``loc`` (or a setting inside it), if any."""
    node: Any = env
    for i, part in enumerate(loc):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
        if not isinstance(node, dict):
            return ENV_PREFIX + "__".join(loc[: i + 1]).upper()
    while isinstance(node, dict) and node:  # a section: name one variable inside it
        key = next(iter(node))
        loc, node = [*loc, key], node[key]
    return ENV_PREFIX + "__".join(loc).upper()


def _explain(exc: ValidationError, source: str, env: dict[str, Any] | None = None
             ) -> ConfigError:
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    where = ".".join(loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    count = len(exc.errors())
    more = f" (+{count - 1} more)" if count > 1 else ""
    variable = _env_name(loc, env or {})
    origin = f"${variable}" if variable else source  # the environment overrides the file
    rule_fix = (first.get("ctx") or {}).get("fix")
    if first["type"] == "extra_forbidden":
        known = _fields_at(loc[:-1]) or []
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        parent = ".".join(loc[:-1])
        hint = f"did you mean {'.'.join([*loc[:-1], close[0]])}? " if close else ""
        listing = f"bastion config show (section {parent})" if parent else "bastion config show"
        edit = f"rename or unset {origin}" if variable else f"edit {source}"
        return ConfigError(f"unknown setting {where} in {origin}{more}",
                           fix=f"{hint}{edit}; the settings are listed by {listing}")
    if variable is not None:
        return ConfigError(f"invalid setting {where} from {origin}: {msg}{more}",
                           fix=rule_fix or f"correct or unset {origin} (it overrides {source})")
    if rule_fix or _fields_at(loc) is not None:  # a rule across the section's settings
        return ConfigError(f"invalid {where} section in {source}: {msg}{more}",
                           fix=rule_fix or f"edit the {where} section of {source}")
    return ConfigError(f"invalid setting {where} in {source}: {msg}{more}",
                       fix=f"edit {source} or run: bastion config set {where} VALUE")


def validate(data: dict[str, Any], source: str = "config",
             env: dict[str, Any] | None = None) -> Config:
    """Validate a raw mapping into :class:`Config`, mapping errors to one clear line.

    ``env`` is the part of ``data`` that came from ``BASTION_…`` variables, so an error there
    names the variable rather than the file.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        # from None: it quotes config values (api.token ...)
        raise _explain(exc, source, env) from None


def read_raw(path: Path | None = None) -> dict[str, Any]:
    """Read the YAML file as a mapping (empty when it does not exist)."""
    path = path or paths.config_file()
    if not path.exists():
        return {}
    try:
        data = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        # from None: it quotes config values (api.token ...)
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
    env = _env_overrides(dict(os.environ if environ is None else environ))
    return validate(_merge(read_raw(path), env), str(path), env)


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
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            close = difflib.get_close_matches(part, list(node) if isinstance(node, dict) else [],
                                              n=1, cutoff=0.6)
            hint = f"did you mean {'.'.join([*parts[:i], close[0]])}? " if close else ""
            raise ConfigError(f"unknown setting {key}",
                              fix=f"{hint}list settings with: bastion config show")
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
    node[parts[-1]] = parse_yaml(value) if value != "" else None
    config = validate(raw, str(path))
    get_key(config, key)  # refuse keys that validated only because they were optional extras
    save(config, path)
    return config
