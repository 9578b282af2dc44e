"""Import helpers for optional extras: a missing extra is a clear error, not an ImportError."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Iterator
from types import ModuleType

from bastion.errors import BrokenExtraError, MissingExtraError


def require(module: str, *, extra: str, feature: str, broken_fix: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip line.

    A module that is there but fails to import (its native library does not load: built for
    another machine, damaged, a system library missing) raises :class:`BrokenExtraError` with
    the loader's reason and ``broken_fix`` (default: reinstall the extra), never a traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(feature, extra, module) from exc
    except Exception as exc:  # noqa: BLE001 - OSError/RuntimeError from a native library's load
        raise _broken(feature, extra, module, exc, broken_fix) from exc


def _broken(feature: str, extra: str, module: str, exc: BaseException,
            fix: str | None) -> BrokenExtraError:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if len(reason) > 300:
        reason = reason[:297] + "..."
    reason += _foreign_library(str(exc))
    return BrokenExtraError(feature, module, reason,
                            fix or f"pip install --force-reinstall 'bastion[{extra}]'")


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


# this process's executable as the kernel (or qemu-user) started it; sys.executable may be a
# wrapper script
_INTERPRETER = "/proc/self/exe"
# ELF e_machine values of the architectures bastion is built on
_ELF_MACHINES = {3: "x86 (32-bit)", 40: "32-bit ARM", 62: "x86_64", 183: "aarch64", 243: "RISC-V"}


def _elf_machine(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def _foreign_library(text: str) -> str:
    """Say so where a library a loader error names is for another architecture.

    glibc reports such a file as "cannot open shared object file: No such file or directory",
    which misleads: the file is there, built for another machine (a venv from an x86 box on an
    ARM one). The interpreter's own ELF header says what this machine runs.
    """
    ours = _elf_machine(_INTERPRETER) or _elf_machine(sys.executable)
    for path in dict.fromkeys(re.findall(r"/[^\s:'\"]+\.so(?:\.[0-9.]*[0-9])?", text)):
        theirs = _elf_machine(path)
        if ours is not None and theirs is not None and theirs != ours:
            name = os.path.basename(path)
            return (f" ({name} is {_ELF_MACHINES.get(theirs, f'machine {theirs}')} code; this "
                    f"machine runs {_ELF_MACHINES.get(ours, f'machine {ours}')})")
    return ""
