"""What the CLI command modules share: the ``--json`` option and reading the config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from bastion.config.model import Config

#: ``--json``: print JSON instead of a table.
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def load_config() -> Config:
    """Return the validated config (read when a command runs, not when the CLI starts)."""
    from bastion.config.loader import load

    return load()
