"""Build a :class:`ClusterModel` from config, with its health monitor and discovery."""

from __future__ import annotations

from bastion.cluster.health import HealthMonitor
from bastion.cluster.model import CallPolicy, ClusterModel, ModelFactory
from bastion.cluster.node import NodeSpec
from bastion.cluster.router import BreakerSettings, Router
from bastion.cluster.service import ClusterService
from bastion.config.model import Config


def _default_factory(config: Config) -> ModelFactory:
    from bastion.cluster._client import node_model_factory

    return node_model_factory(config)


def create_cluster_model(
    config: Config, *, model_factory: ModelFactory | None = None
) -> ClusterModel:
    """Build the cluster model from ``config.cluster`` (called by the composition root)."""
    cfg = config.cluster
    router = Router(
        BreakerSettings(cfg.breaker_failures, cfg.breaker_cooldown_s, cfg.breaker_max_cooldown_s)
    )
    for node_cfg in cfg.nodes:
        router.add(NodeSpec.from_config(node_cfg), source="config")
    factory = model_factory or _default_factory(config)
    services: list[ClusterService] = []
    model = ClusterModel(
        router,
        factory,
        model_name=config.model.name,
        tier=cfg.tier,
        policy=CallPolicy.from_config(cfg),
    )
    services.append(HealthMonitor(model, cfg))
    if cfg.discovery.enabled:
        from bastion.cluster.discovery import DiscoveryService

        services.append(DiscoveryService(router, cfg.discovery))
    model._services = services
    return model
