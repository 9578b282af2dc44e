from __future__ import annotations

from bastion.cluster.discovery import Announcement, spec_from_properties
from bastion.cluster.serve import ServeOptions, server_argv, server_env


def test_announcement_round_trips_into_a_node_spec() -> None:
    ann = Announcement("gpu1", 8080, ("10.0.0.5",), tier="large", models=("m1", "m2"),
                       max_context=8192)  # fmt: skip
    props = {k.encode(): v.encode() for k, v in ann.properties().items()}
    spec = spec_from_properties(props, "10.0.0.5", 8080, token="t")
    assert spec is not None
    assert spec.name == "gpu1" and spec.url == "http://10.0.0.5:8080"
    assert spec.api_base == "http://10.0.0.5:8080/v1"
    assert spec.tier == "large" and spec.models == ("m1", "m2") and spec.max_context == 8192
    assert spec.engine == "llama_cpp" and spec.token == "t"


def test_foreign_or_broken_records_are_ignored() -> None:
    assert spec_from_properties({}, "10.0.0.5", 1, None) is None
    bad_tier = {b"name": b"x", b"tier": b"huge"}
    assert spec_from_properties(bad_tier, "10.0.0.5", 1, None) is None
    bad_ctx = {b"name": b"x", b"max_context": b"lots"}
    assert spec_from_properties(bad_ctx, "10.0.0.5", 1, None) is None
    bad_engine = {b"name": b"x", b"engine": b"mystery"}
    assert spec_from_properties(bad_engine, "10.0.0.5", 1, None) is None


def test_node_serve_command_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    opts = ServeOptions(model_path=tmp_path / "m.gguf", name="n", port=9000, n_ctx=1024,
                        n_threads=1, api_key="k")  # fmt: skip
    argv = server_argv(opts)
    assert argv[1:3] == ["-m", "bastion.llm.server_main"]  # llama_cpp.server, repack chosen
    joined = " ".join(argv)
    assert "--port 9000" in joined and "--n_ctx 1024" in joined
    assert "--api_key" not in joined and "k" not in argv  # the key goes by environment
    assert server_env(opts)["API_KEY"] == "k"
    assert "--interrupt_requests false" in joined  # queue, never cut a running stream


def test_network_allowlist() -> None:
    import pytest

    from bastion.cluster.discovery import DiscoveryService
    from bastion.cluster.router import Router
    from bastion.config.model import ClusterDiscoveryConfig
    from bastion.errors import ConfigError

    open_svc = DiscoveryService(Router(), ClusterDiscoveryConfig())
    assert open_svc.allowed("192.168.1.9")
    svc = DiscoveryService(Router(), ClusterDiscoveryConfig(networks=["10.231.0.0/16"]))
    assert svc.allowed("10.231.7.1") and not svc.allowed("192.168.1.9")
    with pytest.raises(ConfigError):
        DiscoveryService(Router(), ClusterDiscoveryConfig(networks=["not-a-net"]))
