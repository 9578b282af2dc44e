"""Install a plugin distribution for one test: a module plus its entry points, on sys.path.

The real discovery path (``importlib.metadata.entry_points``) then finds it, as it finds an
installed package's ``*.dist-info/entry_points.txt``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str,
                   entry_points: str) -> None:
    """Write ``module``.py and a dist-info whose entry_points.txt is ``entry_points``."""
    (tmp_path / f"{module}.py").write_text(source)
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    name = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
