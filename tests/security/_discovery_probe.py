"""Run inside a network namespace: a cluster router with discovery on, configured by the JSON
``cluster.discovery`` section in argv[1]. Prints the router's nodes as JSON when ``gpu1`` is
found, then again on each line read from stdin."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bastion.cluster.factory import create_cluster_model
from bastion.cluster.model import ClusterModel
from bastion.config.model import Config


def state(model: ClusterModel) -> dict[str, object]:
    nodes = {n.name: n.spec.url for n in model.router.nodes.values()}
    return {"nodes": nodes}


async def main(discovery: dict[str, object]) -> None:
    cfg = Config.model_validate({
        "model": {"backend": "cluster", "name": "m"},
        "cluster": {"discovery": {"enabled": True, "ttl_s": 60, **discovery},
                    "health_interval_s": 0.3, "health_timeout_s": 2},
    })
    model = create_cluster_model(cfg)
    assert isinstance(model, ClusterModel)
    await model.start()
    t0 = time.monotonic()
    while "gpu1" not in model.router.nodes and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.05)
    print(json.dumps(state(model)), flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(json.dumps(state(model)), flush=True)
    await model.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
