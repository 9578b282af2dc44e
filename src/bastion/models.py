"""The composition level for models: leaf backends from ``llm``, composites around them, plugins.

``llm.factory`` builds only leaf models (embedded, openai, ollama). A cluster or a pattern is a
model made of models, from a higher layer, so this module (just below ``app``) chooses between
them and hands the builder down: ``create_pattern_model(config, build=create_model)`` builds its
members with the same dispatch, so a pattern over a cluster works.

Model backends from outside bastion register in the ``bastion.models`` entry-point group, next
to ``bastion.tools``: the entry point's name is the ``model.backend`` value, its object a
callable ``(config) -> Model``::

    [project.entry-points."bastion.models"]
    mybackend = "my_package.model:build"

Adding a backend that way touches two files: its module and the entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from bastion.config.model import Config
from bastion.errors import ModelError
from bastion.llm.base import Model
from bastion.llm.factory import create_leaf_model, leaf_builder

ENTRY_POINT_GROUP = "bastion.models"


def plugin_builder(name: str) -> Callable[[Config], Model] | None:
    """Return the ``bastion.models`` entry point called ``name``, loaded, or None."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        build = ep.load()
        if not callable(build):
            raise ModelError(f"the bastion.models entry point {name!r} is not callable",
                             fix=f"point {ep.value} at a function (config) -> Model")
        return build  # type: ignore[no-any-return]
    return None


def create_model(config: Config) -> Model:
    """Build the model ``config.model`` describes (``config`` whole: cluster needs more)."""
    backend = config.model.backend
    if backend == "cluster":
        from bastion.cluster.factory import create_cluster_model

        return create_cluster_model(config)
    if backend == "pattern":
        from bastion.patterns.factory import create_pattern_model

        return create_pattern_model(config, build=create_model)
    if leaf_builder(backend) is not None:
        return create_leaf_model(config)
    build = plugin_builder(backend)
    if build is None:
        raise ModelError(f"unknown model backend {backend!r}",
                         fix="set model.backend to embedded, openai, ollama, cluster, pattern "
                             "or an installed bastion.models plugin")
    return build(config)
