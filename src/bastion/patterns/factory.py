"""Building a pattern from ``model.backend: pattern`` and the ``patterns:`` section."""

from __future__ import annotations

from collections.abc import Callable

from bastion.config.model import Config, ModelConfig
from bastion.errors import ConfigError
from bastion.llm.base import Model
from bastion.llm.factory import create_leaf_model


def _sub_configs(config: Config) -> list[ModelConfig]:
    pc = config.patterns
    if pc.models:
        return list(pc.models)
    if pc.kind != "vote":
        raise ConfigError(
            f"the {pc.kind} pattern needs its models listed",
            fix="list them under patterns.models (small first for cascade; drafter, verifier "
            "for draft_verify)",
        )
    # self-consistency: the 'model:' section's settings on the embedded backend
    return [config.model.model_copy(update={"backend": "embedded"})]


def create_pattern_model(
    config: Config, *, build: Callable[[Config], Model] = create_leaf_model
) -> Model:
    """Return the pattern ``config.patterns`` describes, its models made by ``build``.

    The composition level passes its own dispatch (:func:`bastion.models.create_model`), so a
    member may itself be a cluster; the default builds leaf backends only.
    """
    pc = config.patterns
    built: dict[str, Model] = {}  # the same model config twice shares one instance
    models: list[Model] = []
    for mc in _sub_configs(config):
        key = mc.model_dump_json()
        if key not in built:
            built[key] = build(config.model_copy(update={"model": mc}))
        models.append(built[key])
    if pc.kind == "cascade":
        from bastion.patterns.cascade import CascadeModel

        return CascadeModel(
            models, min_logprob=pc.min_logprob, escalate_on_length=pc.escalate_on_length
        )
    if pc.kind == "vote":
        from bastion.patterns.vote import VoteModel

        return VoteModel(models, samples=pc.samples, temperature=pc.temperature)
    from bastion.patterns.draft_verify import DraftVerifyModel

    return DraftVerifyModel(models[0], models[1])

