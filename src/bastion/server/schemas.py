"""Request bodies shared by the routes and :mod:`bastion.client` (pydantic only, no app).

The client builds its requests from these models, so what it sends is what the server's
OpenAPI document describes and its validation accepts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from bastion.server.contract import ApiModel


class DrainBody(ApiModel):
    """``POST /v1/cluster/nodes/{name}/drain``."""

    model_config = ConfigDict(extra="forbid")

    drain: bool = True


class RotateBody(ApiModel):
    """``POST /v1/secrets/rotate``: a rotation request (the new value is generated unless given)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["vault", "sops"] = "vault"
    path: str = Field(min_length=1, max_length=500)
    key: str = Field(default="value", min_length=1, max_length=200)
    value: str | None = Field(default=None, description="new value; default: 32 random bytes")
    emergency: bool = False
    grace_s: float = Field(default=3600.0, ge=0)
