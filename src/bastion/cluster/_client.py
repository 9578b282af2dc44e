"""Per-node clients: the project's OpenAI-compatible :class:`~bastion.llm.http.HttpModel`."""

from __future__ import annotations

from collections.abc import Callable

from bastion.cluster.node import NodeSpec
from bastion.config.model import Config
from bastion.llm.base import Model

_PROFILE_OF_ENGINE = {"llama_cpp": "llamacpp", "vllm": "vllm", "ollama": "ollama"}


def node_model_factory(config: Config) -> Callable[[NodeSpec, str], Model]:
    """Return ``factory(spec, model_name) -> Model`` building one HTTP client per node."""
    from bastion.llm.http import PROFILES, HttpModel, pick_profile

    cfg = config.cluster
    # the client's own timeout is a backstop; the router enforces first-token/idle limits
    timeout = max(cfg.first_token_timeout_s, cfg.idle_timeout_s) + 5.0
    native = config.model.native_tools

    def factory(spec: NodeSpec, model_name: str) -> Model:
        profile = _PROFILE_OF_ENGINE.get(spec.engine)
        quirks = PROFILES[profile] if profile else pick_profile("openai", spec.api_base)
        return HttpModel(
            model_name,
            quirks=quirks,
            base_url=spec.api_base,
            api_key=spec.token,
            timeout_s=timeout,
            native_tools=native,
        )

    return factory
