"""Model backends by table and by plugin; the Literal/table pairs stay in step (#15 item 6)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.cluster._client import _PROFILE_OF_ENGINE
from bastion.config import model as config_model
from bastion.config.backends import LEAF_MODEL_BACKENDS, model_backends
from bastion.config.model import ENGINES, Config, ModelConfig
from bastion.llm.factory import leaf_builder
from bastion.llm.http import PROFILES
from bastion.models import create_model
from bastion.testing import ScriptedModel
from tests.fakes.plugin import install_plugin


def test_every_builtin_backend_is_built_somewhere() -> None:
    assert set(model_backends()) == {*LEAF_MODEL_BACKENDS, "cluster", "pattern"}
    for name in LEAF_MODEL_BACKENDS:
        assert callable(leaf_builder(name))


def test_profiles_and_engines_match_their_tables() -> None:
    profiles = typing.get_args(ModelConfig.model_fields["profile"].annotation)
    assert set(profiles) - {"auto"} == set(PROFILES)
    assert set(_PROFILE_OF_ENGINE) <= set(ENGINES)
    assert set(_PROFILE_OF_ENGINE.values()) <= set(PROFILES)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed plugin distribution: a module plus its bastion.models entry point."""
    install_plugin(tmp_path, monkeypatch, "demo_backend",
                   "from bastion.testing import ScriptedModel, say\n"
                   "def build(config):\n"
                   "    return ScriptedModel(say('from the plugin ' + config.model.name))\n",
                   "[bastion.models]\ndemo = demo_backend:build\n")
    config_model._plugin_names.cache_clear()
    yield "demo"
    config_model._plugin_names.cache_clear()


def test_a_plugin_backend_is_configured_and_built(plugin: str) -> None:
    config = Config.model_validate({"model": {"backend": plugin, "name": "tiny"}})
    model = create_model(config)
    assert isinstance(model, ScriptedModel) and model.replies[0].text == "from the plugin tiny"


def test_an_unknown_backend_names_the_known_ones(plugin: str) -> None:
    with pytest.raises(ValidationError, match="unknown model backend 'nope'.*embedded.*demo"):
        Config.model_validate({"model": {"backend": "nope"}})
