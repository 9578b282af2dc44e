"""The composition level for models: leaf backends from ``llm``, composites around them.

``llm.factory`` builds only leaf models (embedded, openai, ollama). A cluster or a pattern is a
model made of models, from a higher layer, so this module (just below ``app``) chooses between
them and hands the builder down: ``create_pattern_model(config, build=create_model)`` builds its
members with the same dispatch, so a pattern over a cluster works.
"""

from __future__ import annotations

from bastion.config.model import Config
from bastion.llm.base import Model
from bastion.llm.factory import create_leaf_model


def create_model(config: Config) -> Model:
    """Build the model ``config.model`` describes (``config`` whole: cluster needs more)."""
    backend = config.model.backend
    if backend == "cluster":
        from bastion.cluster.factory import create_cluster_model

        return create_cluster_model(config)
    if backend == "pattern":
        from bastion.patterns.factory import create_pattern_model

        return create_pattern_model(config, build=create_model)
    return create_leaf_model(config)
