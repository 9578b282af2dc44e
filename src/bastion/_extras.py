"""Import helpers for optional extras: a missing extra is a clear error, not an ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType

from bastion.errors import MissingExtraError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip line."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra, module) from exc
