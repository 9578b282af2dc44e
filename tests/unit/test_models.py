"""The composition level for models: composites above ``llm``, leaf backends from ``llm``."""

from __future__ import annotations

import sys
import types

import pytest

from bastion.config.model import Config
from bastion.llm.http import HttpModel
from bastion.models import create_model
from bastion.patterns.draft_verify import DraftVerifyModel
from bastion.testing import ScriptedModel


def test_cluster_backend_is_built_by_the_cluster_package(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("bastion.cluster.factory")
    sentinel = object()
    fake.create_cluster_model = lambda config: (sentinel, config)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bastion.cluster.factory", fake)
    config = Config.model_validate({"model": {"backend": "cluster"}})
    assert create_model(config) == (sentinel, config)


async def test_pattern_members_use_the_same_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pattern member may be a cluster: the composite builder is handed down, not re-imported."""
    fake = types.ModuleType("bastion.cluster.factory")
    built: list[str] = []
    member = ScriptedModel()

    def cluster(config: Config) -> ScriptedModel:
        built.append(config.model.name)
        return member

    fake.create_cluster_model = cluster  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bastion.cluster.factory", fake)
    config = Config.model_validate({"model": {"backend": "pattern"}, "patterns": {
        "kind": "draft_verify", "models": [
            {"backend": "cluster", "name": "big"},
            {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "name": "small"}]}})
    model = create_model(config)
    assert isinstance(model, DraftVerifyModel) and built == ["big"] and model.drafter is member
    assert isinstance(model.verifier, HttpModel) and model.verifier.name == "small"
    await model.aclose()


def test_leaf_backends_come_from_llm() -> None:
    config = Config.model_validate({"model": {"backend": "ollama", "name": "qwen3:0.6b"}})
    assert isinstance(create_model(config), HttpModel)


async def test_find_cluster_walks_the_one_wrapped_attribute() -> None:
    """The cluster behind a secret guard, a privacy router and a cascade is found."""
    from bastion.cluster.factory import create_cluster_model
    from bastion.cluster.model import find_cluster
    from bastion.patterns.cascade import CascadeModel
    from bastion.privacy.policy import PrivacyPolicy
    from bastion.privacy.router import PrivacyRouter
    from bastion.security.model_guard import GuardedModel
    from bastion.security.redact import Redactor

    config = Config.model_validate({"model": {"backend": "cluster"}, "cluster": {"nodes": [
        {"name": "n1", "url": "http://127.0.0.1:9"}]}})
    cluster = create_cluster_model(config)
    cascade = CascadeModel([ScriptedModel(), cluster])
    router = PrivacyRouter(ScriptedModel(), cascade,
                           PrivacyPolicy.from_config(Config().privacy, None))
    assert find_cluster(GuardedModel(router, Redactor())) is cluster
    assert find_cluster(GuardedModel(ScriptedModel(), Redactor())) is None
    await cluster.aclose()
