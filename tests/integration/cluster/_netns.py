"""Network namespaces joined by a bridge, like machines on one LAN (needs root and iproute2)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def bridged(prefix: str, second_octet: int, hosts: Sequence[Sequence[str]]
            ) -> Iterator[tuple[list[str], str]]:
    """Yield (namespaces, /24 prefix): one namespace per entry of ``hosts``, holding those host
    numbers of ``10.<second_octet>.<x>.0/24`` on a veth whose peer sits on a bridge (in its own
    namespace). All of it is deleted afterwards."""
    tag = f"{os.getpid() % 100000}"
    names = [f"{prefix}{i}{tag}" for i in range(len(hosts))]
    br = f"{prefix}r{tag}"
    subnet = f"10.{second_octet}.{os.getpid() % 200 + 20}"
    made: list[str] = []
    try:
        for ns in (*names, br):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "link", "set", "br0", "up")
        for i, (ns, numbers) in enumerate(zip(names, hosts, strict=True)):
            inner, outer = f"{prefix}v{i}{tag}", f"{prefix}p{i}{tag}"
            ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            ip("link", "set", inner, "netns", ns)
            ip("link", "set", outer, "netns", br)
            ip("-n", br, "link", "set", outer, "master", "br0")
            ip("-n", br, "link", "set", outer, "up")
            for host in numbers:
                ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
        yield names, subnet
    finally:
        for ns in made:  # deleting a namespace deletes its veth ends too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
