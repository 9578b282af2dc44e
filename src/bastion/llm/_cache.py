"""The private folder for what bastion derives from model files (converted copies, probes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bastion.config import paths
from bastion.errors import ModelError


def private_cache_dir() -> Path:
    """Return ``$BASTION_MODEL_CACHE`` or ``<home>/models/.converted`` (created 0700).

    Refused when another user owns it or others may write to it (a planted file there would
    be loaded as the model, or taken for a probe's verdict).
    """
    env = os.environ.get("BASTION_MODEL_CACHE")
    d = Path(env).expanduser() if env else paths.data_dir("models") / ".converted"
    d.mkdir(mode=0o700, parents=bool(env), exist_ok=True)
    st = d.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ModelError(
            f"the converted-model cache {d} is not private (owned by another user or "
            "writable by others)",
            fix=f"chmod 700 {d} (or unset BASTION_MODEL_CACHE, or model.convert off)")
    return d


def read_verdicts(path: Path | None) -> dict[str, Any]:
    """Return a probe's kept verdicts (a JSON object in the cache folder), or {} if none."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
