"""Pull network targets, paths and hashes out of tool-call arguments (any nesting)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

URL_RE = re.compile(r"\b(?:https?|wss?|ftp|sftp|ssh|scp)://[^\s'\"<>`]+", re.I)
IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w.])")
HOST_RE = re.compile(r"(?<![\w@./-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                     r"(?:[a-z]{2,24}|xn--[a-z0-9-]{2,59}))(?=[:/\s'\"]|$)", re.I)
HASH_RE = re.compile(r"(?<![0-9a-f])(?:[0-9a-f]{64}|[0-9a-f]{40}|[0-9a-f]{32})(?![0-9a-f])",
                     re.I)
PATH_RE = re.compile(r"(?:^|(?<=[\s'\"=]))(?:~|\.{1,2})?/[^\s'\";|&<>]*")
# Names that look like hosts but are files: a bare "report.txt" is not a network target.
_FILE_EXT = frozenset({
    "txt", "md", "py", "js", "ts", "json", "yaml", "yml", "toml", "csv", "log", "html", "htm",
    "xml", "cfg", "ini", "conf", "pdf", "png", "jpg", "jpeg", "gif", "svg", "zip", "gz", "tar",
    "tgz", "whl", "c", "h", "cpp", "rs", "java", "rb", "php", "lock", "sql", "db", "env", "pem",
    "key", "crt",
})


def strings(value: Any) -> Iterator[str]:
    """Yield every string inside ``value`` (mapping values, list items; keys are skipped)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from strings(v)


def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return ``text`` as an IP address, or None."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(slots=True)
class Targets:
    """What a call's arguments point at."""

    urls: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # lower-case names and IP literals
    ips: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


def targets(arguments: Any) -> Targets:
    """Return the URLs, hosts, IPs, hashes and paths found in ``arguments``."""
    out = Targets()
    seen_hosts: dict[str, None] = {}
    for s in strings(arguments):
        rest = s
        for m in URL_RE.finditer(s):
            url = m.group().rstrip(").,;]")
            out.urls.append(url)
            try:
                host = (urlsplit(url).hostname or "").lower()
            except ValueError:
                host = ""
            if host:
                seen_hosts[host] = None
            rest = rest.replace(m.group(), " ")
        for m in IPV4_RE.finditer(rest):
            ip = m.group().split("/")[0]
            if ip_of(ip) is not None:
                seen_hosts[ip] = None
        for m in HOST_RE.finditer(rest):
            name = m.group(1).lower()
            if name.rsplit(".", 1)[-1] not in _FILE_EXT:
                seen_hosts[name] = None
        out.hashes.extend(h.lower() for h in HASH_RE.findall(rest))
        out.paths.extend(p for p in PATH_RE.findall(rest) if len(p) > 1)
    out.hosts = list(seen_hosts)
    out.ips = [h for h in out.hosts if ip_of(h) is not None]
    return out


def path_depth(paths: Iterable[str]) -> int:
    """Return the deepest path's depth (components other than ``.``)."""
    return max((len([x for x in p.split("/") if x and x != "."]) for p in paths), default=0)


def path_escape(paths: Iterable[str]) -> int:
    """Count ways the paths leave a relative root: ``..`` components, ``/`` and ``~`` roots."""
    n = 0
    for p in paths:
        n += sum(1 for x in p.split("/") if x == "..")
        n += p.startswith(("/", "~"))
    return n
