"""Import helpers for optional extras: a missing extra is a clear error, not an ImportError."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

from bastion.errors import MissingExtraError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip line."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra, module) from exc


HUB_OFFLINE_MARK = "BASTION_HUB_OFFLINE_SET"
"""Set (to ``1``) when bastion, not the user, switched the Hugging Face libraries offline."""


def hub_offline_for_local_models() -> None:
    """Keep the Hugging Face libraries off the network while a shipped model loads.

    Set in the environment, as those libraries read it (``huggingface_hub`` once, when it is
    first imported); :data:`HUB_OFFLINE_MARK` records that it was bastion's choice, so a
    model pull the user asks for later in the same process may still go online.
    """
    if "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ:
        os.environ[HUB_OFFLINE_MARK] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextlib.contextmanager
def hub_online_unless_the_user_said_offline() -> Iterator[None]:
    """Let ``huggingface_hub`` reach the hub inside the block, unless the user set it offline."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    if not (was and os.environ.get(HUB_OFFLINE_MARK) == "1"):
        yield
        return
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was
