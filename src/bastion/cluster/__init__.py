"""Multi-machine orchestration: a cluster of model servers behind one :class:`Model`.

bastion never runs distributed inference itself; it routes requests across servers that
do (llama.cpp, vLLM, Ollama, any OpenAI-compatible server, another bastion):

* :mod:`~bastion.cluster.router` keeps the nodes and ranks them per request (tier, model,
  context fit, breaker state, recent failures, load / weight);
* :mod:`~bastion.cluster.model` is the :class:`ClusterModel` the agent talks to: it retries
  on another node at once after a failure, backs off (full jitter) only when a whole round
  failed, and continues a stream cut mid-answer on another node without the client seeing
  a seam; tool calls are delivered only from an attempt that finished;
* :mod:`~bastion.cluster.breaker`, :mod:`~bastion.cluster.health`: breakers driven by real
  calls and by background liveness checks and one-token probes;
* :mod:`~bastion.cluster.classifier`: the fast local complexity classifier (its features are
  documented there) that maps a request to a tier;
* :mod:`~bastion.cluster.metrics`: Prometheus text exposition (``GET /metrics``,
  ``bastion cluster metrics``);
* :mod:`~bastion.cluster.discovery`, :mod:`~bastion.cluster.serve`: mDNS announce/browse
  and ``bastion node serve``.

Enable with ``model.backend: cluster`` and ``cluster.nodes`` (or ``cluster.discovery``).
"""

from bastion.cluster.factory import create_cluster_model
from bastion.cluster.model import ClusterModel, find_cluster
from bastion.cluster.node import Node, NodeSpec
from bastion.cluster.router import Router

__all__ = ["ClusterModel", "Node", "NodeSpec", "Router", "create_cluster_model", "find_cluster"]
