"""Cluster routes: Prometheus metrics (process and cluster), status, and nodes at runtime.

``GET /metrics`` needs the API token like every route (Prometheus: ``authorization:
{credentials: TOKEN}`` in the scrape config).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from bastion.app import App
from bastion.cluster.admin import NodeIn, add_node, drain_node, remove_node
from bastion.cluster.metrics import CONTENT_TYPE
from bastion.cluster.model import ClusterModel, find_cluster
from bastion.server.contract import errors, feature_off, link, links, media
from bastion.server.deps import get_app
from bastion.server.responses import ClusterStatus, NodeStatus
from bastion.server.schemas import DrainBody
from bastion.telemetry.metrics import METRICS

router = APIRouter(tags=["cluster"])
AppDep = Annotated[App, Depends(get_app)]

NodeName = Annotated[str, Path(min_length=1, max_length=63, description="node name")]


async def _cluster(app: App) -> ClusterModel:
    cluster = find_cluster(app.model)
    if cluster is None:
        raise feature_off("cluster routing", "model.backend: cluster", code="no_cluster")
    await cluster.start()  # background health checks and discovery run from the first call
    return cluster


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses=media("Prometheus text format", "text/plain"))
async def metrics(app: AppDep) -> Response:
    """Return the process metrics, then the cluster's per-node ones when it routes.

    Process: turns, tool calls by decision, approval waits, sandbox starts, tokens/s, queue.
    """
    body = METRICS.render()
    cluster = find_cluster(app.model)
    if cluster is not None:
        await cluster.start()
        body += cluster.metrics.render()
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/v1/cluster", summary="Cluster status", responses=errors(409))
async def status(app: AppDep) -> ClusterStatus:
    """Nodes with health, breaker state, load, latency and speed."""
    return ClusterStatus.model_validate((await _cluster(app)).status())


@router.post("/v1/cluster/nodes", status_code=201, summary="Add a node now",
             responses=errors(409), operation_id="add_cluster_node",
             openapi_extra=links(201, {name: link(name, name="$response.body#/name")
                                       for name in ("drain_cluster_node",
                                                    "remove_cluster_node")}))
async def add(body: NodeIn, app: AppDep) -> NodeStatus:
    """Add a node at runtime (not saved to the config file)."""
    return NodeStatus.model_validate(add_node(await _cluster(app), body))


@router.delete("/v1/cluster/nodes/{name}", summary="Remove a node now",
               responses=errors(404, 409), operation_id="remove_cluster_node")
async def remove(name: NodeName, app: AppDep) -> NodeStatus:
    """Remove a node; calls in flight on it fail over to other nodes."""
    return NodeStatus.model_validate(remove_node(await _cluster(app), name))


@router.post("/v1/cluster/nodes/{name}/drain", summary="Drain or resume a node",
             responses=errors(404, 409), operation_id="drain_cluster_node")
async def drain(
    name: NodeName, app: AppDep, body: DrainBody | None = None
) -> NodeStatus:
    """Stop sending new requests to a node (``drain: false`` resumes); calls in flight finish."""
    return NodeStatus.model_validate(
        drain_node(await _cluster(app), name, True if body is None else body.drain))
