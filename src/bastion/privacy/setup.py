"""Assembling the privacy router from the ``privacy:`` config section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bastion.config.model import Config, ModelConfig
from bastion.errors import ConfigError
from bastion.llm.base import Model
from bastion.llm.factory import create_leaf_model
from bastion.privacy.detect import PiiDetector, detector_from_config
from bastion.privacy.policy import PrivacyPolicy
from bastion.privacy.router import PrivacyRouter


def _model(config: Config, mc: ModelConfig, build: Callable[[Config], Model]) -> Model:
    return build(config.model_copy(update={"model": mc}))


def build_detector(config: Config, scanner: Any = None) -> PiiDetector:
    """Return the PII detector ``config.privacy`` describes (presidio loads on first use)."""
    return detector_from_config(config.privacy, scanner)


def build_privacy_router(
    config: Config,
    local: Model | None = None,
    *,
    audit: Any = None,
    scanner: Any = None,
    remote: Model | None = None,
    egress: Callable[[str], bool] | None = None,
    build: Callable[[Config], Model] = create_leaf_model,
) -> PrivacyRouter:
    """Return the router over ``local`` and ``remote``.

    ``local`` defaults to privacy.local (else the 'model:' section), ``remote`` to
    privacy.remote. ``egress`` says which tools can send data out (no placeholder is
    restored into their arguments); unset, none is restored into any tool call. ``build``
    makes a model from config (the composition level passes ``bastion.models.create_model``).
    """
    pc = config.privacy
    if remote is None:
        if pc.remote is None:
            raise ConfigError(
                "the privacy router needs a remote model",
                fix="set privacy.remote (backend, base_url, name) or privacy.enabled: false",
            )
        remote = _model(config, pc.remote, build)
    if local is None:
        local = _model(config, pc.local or config.model, build)
    policy = PrivacyPolicy.from_config(pc, scanner)
    policy.detector.warm()  # fail at start-up, not on the first request, if the extra is missing
    return PrivacyRouter(local, remote, policy, audit=audit, fallback_local=pc.fallback_local,
                         egress=egress)
