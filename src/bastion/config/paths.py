"""Where bastion keeps its config and data: ``BASTION_HOME`` or the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """Return bastion's home directory (created on demand by callers that write)."""
    env = os.environ.get("BASTION_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("bastion", appauthor=False))


def config_file() -> Path:
    """Return the path of ``bastion.yaml``."""
    return home() / "bastion.yaml"


def data_dir(name: str) -> Path:
    """Return (and create) a data sub-directory of the home, e.g. ``audit`` or ``sessions``."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
