"""The FastAPI application. Each route group lives in ``server/routes/<name>.py`` exposing
``router`` (an ``APIRouter``); add one line per module to ``ROUTE_MODULES``."""

from __future__ import annotations

import importlib

ROUTE_MODULES = [
    "bastion.server.routes.core",  # /health, /v1/chat/completions, /v1/models, sessions chat
]
