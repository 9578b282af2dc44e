"""The rich console for stdout: terminal width on a terminal, uncut in pipes and scripts."""

from __future__ import annotations

import os
import sys

from rich.console import Console

PIPE_WIDTH = 10_000  # rich's default off a terminal is 80 columns, which cuts table cells


def out_console(**kwargs: object) -> Console:
    """Return a stdout console that never cuts table cells when stdout is not a terminal."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(width=width, **kwargs)  # type: ignore[arg-type]


def progress(message: str) -> None:
    """Say on stderr what a slow step is doing (a terminal only: scripts stay quiet)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"{message}\n")
        sys.stderr.flush()


def model_notes(model: object) -> None:
    """Say on stderr what the model's plan changed from the settings (one ``note:`` each).

    A context lowered to the one the model was trained on, fewer conversations at once than
    asked, GPU layers a CPU-only llama.cpp ignores: settings that do not take effect are said
    every time, with the fix that silences them (scripts read stdout).
    """
    plan = getattr(model, "memory", None)
    for note in getattr(plan, "notes", ()):
        sys.stderr.write(f"note: {note.text} (fix: {note.fix})\n")
    sys.stderr.flush()

