"""Run inside a network namespace: discover a node over mDNS, route a real request to it,
then report when the node is removed after it vanished. Prints one JSON object per phase."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from bastion.cluster.factory import create_cluster_model
from bastion.cluster.model import ClusterModel
from bastion.config.model import Config
from bastion.messages import ChatSettings, Message, TextDelta


def say(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def main(ttl: float) -> None:
    cfg = Config.model_validate(
        {
            "model": {"backend": "cluster", "name": "smollm2-135m"},
            "cluster": {
                "discovery": {
                    "enabled": True, "ttl_s": ttl, "networks": ["10.231.0.0/16"],
                    # the node's key goes only to the node pinned by name and network
                    "trusted": [{"name": "nsnode", "address": "10.231.0.0/16",
                                 "token": os.environ["BASTION_NODE_API_KEY"]}],
                },
                "health_interval_s": 0.5,
                "health_timeout_s": 20,
                "breaker_cooldown_s": 0.5,
            },
        }
    )
    model = create_cluster_model(cfg)
    assert isinstance(model, ClusterModel)
    await model.start()
    t0 = time.monotonic()
    while not model.router.nodes and time.monotonic() - t0 < 90:
        await asyncio.sleep(0.05)
    if not model.router.nodes:
        say(phase="discover", ok=False)
        return
    node = next(iter(model.router.nodes.values()))
    say(
        phase="discover",
        ok=True,
        name=node.name,
        url=node.spec.url,
        source=node.source,
        models=list(node.spec.models),
        max_context=node.spec.max_context,
        s=time.monotonic() - t0,
    )
    text = ""
    async for ev in model.chat(
        [Message("user", "Say hello.")], settings=ChatSettings(max_tokens=8)
    ):
        if isinstance(ev, TextDelta):
            text += ev.text
    say(phase="served", text=text, nodes=model.history[-1].nodes)
    t1 = time.monotonic()
    while model.router.nodes and time.monotonic() - t1 < 90:
        await asyncio.sleep(0.05)
    say(phase="removed", ok=not model.router.nodes, s=time.monotonic() - t1)
    await model.aclose()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1])))
