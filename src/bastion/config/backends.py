"""The built-in backends by config name: one table per seam, ``name -> "module:object"``.

This is the one place a built-in backend is registered. Config validates names against it and
the factories import the object only when that backend is used, so the config layer never
imports the layers that implement the backends (``security``, ``llm``). Adding a built-in
backend therefore touches two files: its module and one line here (docs/ARCHITECTURE.md,
"Files touched to add ..."; ``tests/unit/test_backend_tables.py`` registers a throwaway one
that way).
"""

from __future__ import annotations

import importlib

#: Sandbox backends: ``security.sandbox``, ``security.tool_sandboxes.*`` and
#: ``mcp_servers[].sandbox`` accept these names (plus ``auto``/``none``/``default`` where
#: documented); ``security.sandbox.factory`` builds the class, constructed as ``(spec, *, warm)``.
SANDBOX_BACKENDS: dict[str, str] = {
    "bubblewrap": "bastion.security.sandbox.bwrap:BubblewrapSandbox",
    "gvisor": "bastion.security.sandbox.gvisor:GVisorSandbox",
    "podman": "bastion.security.sandbox.podman:PodmanSandbox",
    "docker": "bastion.security.sandbox.docker:DockerSandbox",
}

#: Leaf model backends (``model.backend``): a callable ``(config) -> Model``.
LEAF_MODEL_BACKENDS: dict[str, str] = {
    "embedded": "bastion.llm.factory:embedded_model",
    "openai": "bastion.llm.factory:http_model",
    "ollama": "bastion.llm.factory:http_model",
}

#: Models made of models, built by ``bastion.models`` (above ``llm``).
COMPOSITE_MODEL_BACKENDS: tuple[str, ...] = ("cluster", "pattern")


def model_backends() -> tuple[str, ...]:
    """Return every built-in ``model.backend`` name (leaf backends, then composites)."""
    return (*LEAF_MODEL_BACKENDS, *COMPOSITE_MODEL_BACKENDS)


def load_object(target: str) -> object:
    """Import ``"module:object"`` and return the object (an ``ImportError`` if it is missing)."""
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except AttributeError as exc:
        raise ImportError(f"{module} has no {name}") from exc
