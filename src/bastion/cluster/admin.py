"""Runtime node management shared by the CLI and the API: add, remove, drain, status."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from bastion.cluster.model import ClusterModel
from bastion.cluster.node import NodeSpec
from bastion.config.model import ClusterNodeConfig, Engine


class NodeIn(BaseModel):
    """A node to add at runtime (same fields as a ``cluster.nodes`` entry)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    url: str = Field(pattern=r"^https?://")
    engine: Engine = "openai"
    tier: Literal["small", "medium", "large"] = "small"
    models: list[str] = Field(default_factory=list)
    max_context: int = Field(default=4096, ge=256)
    token: SecretStr | None = None
    weight: float = Field(default=1.0, gt=0, le=100)

    def to_config(self) -> ClusterNodeConfig:
        """Return the ``cluster.nodes`` entry for this node."""
        return ClusterNodeConfig.model_validate(self.model_dump())

    def to_spec(self) -> NodeSpec:
        """Return the router's spec for this node."""
        return NodeSpec.from_config(self.to_config())


def add_node(cluster: ClusterModel, node: NodeIn) -> dict[str, object]:
    """Add a node now; returns its status row."""
    return cluster.router.add(node.to_spec(), source="runtime").status()


def remove_node(cluster: ClusterModel, name: str) -> dict[str, object]:
    """Remove a node now (calls in flight on it fail over)."""
    return cluster.router.remove(name).status()


def drain_node(cluster: ClusterModel, name: str, on: bool = True) -> dict[str, object]:
    """Stop (or resume) new requests to a node; calls in flight finish."""
    return cluster.router.drain(name, on).status()


__all__ = ["NodeIn", "add_node", "drain_node", "remove_node"]
