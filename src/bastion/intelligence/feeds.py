"""Threat-intelligence feeds: load indicator files, keep them, match tool-call arguments.

Formats (``auto`` detects them):

- ``list``: one indicator per line (domain, IP, CIDR, URL or MD5/SHA-1/SHA-256 hash); ``#``
  comments; hosts-file lines (``0.0.0.0 evil.example``) give their name.
- ``csv``: abuse.ch style (URLhaus, Feodo Tracker, MalwareBazaar, ThreatFox): ``#`` comment
  lines, the header may itself be a comment; columns named like ``url``, ``dst_ip``,
  ``ioc``, ``sha256_hash``, ``domain`` are read; ``threat``/``malware`` tag the indicator.
- ``stix``: a STIX 2.1 bundle; every ``indicator`` with ``pattern_type: stix`` that is not
  revoked or expired contributes the values of its ``domain-name``, ``ipv4-addr``,
  ``ipv6-addr``, ``url`` and ``file:hashes`` comparisons.

``bastion intel feeds add FILE`` stores the parsed feed under ``HOME/intel/feeds`` (with the
source path and its SHA-256) so ``update`` can re-read it; the gateway loads them at start.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import ipaddress
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bastion.intelligence._extract import HASH_RE, Targets, ip_of, targets
from bastion.intelligence.anomaly import IntelError

Kind = Literal["domain", "ip", "cidr", "url", "hash"]
Format = Literal["auto", "list", "csv", "stix"]
_DOMAIN = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_STIX_CMP = re.compile(
    r"(domain-name|ipv4-addr|ipv6-addr|url|file):(value|hashes\.(?:'[^']+'|[A-Za-z0-9-]+))"
    r"\s*(?:=|LIKE)\s*'((?:[^'\\]|\\.)*)'")
_CSV_COLS = {
    "url": ("url",), "domain": ("domain", "host", "hostname", "fqdn"),
    "ip": ("ip", "ip_address", "dst_ip", "ipaddress", "src_ip"),
    "hash": ("sha256_hash", "sha256", "md5_hash", "md5", "sha1_hash", "sha1", "hash"),
    "any": ("ioc", "ioc_value", "indicator", "value"),
}
_CSV_TAGS = ("threat", "malware", "malware_printable", "threat_type", "signature", "tags")


@dataclass(slots=True)
class Indicator:
    """One indicator of compromise."""

    kind: Kind
    value: str
    feed: str = ""
    tags: list[str] = field(default_factory=list)
    confidence: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {"kind": self.kind, "value": self.value, "feed": self.feed, "tags": self.tags,
                "confidence": self.confidence}


def classify(text: str) -> tuple[Kind, str] | None:
    """Return the kind and normal form of one indicator string, or None if it is none."""
    s = text.strip().strip("\"'")
    if not s:
        return None
    low = s.lower()
    if "://" in low:
        try:
            host = urlsplit(low).hostname
        except ValueError:
            return None
        return ("url", low.rstrip("/")) if host else None
    if "/" in s:
        try:
            net = ipaddress.ip_network(s, strict=False)
        except ValueError:
            return None
        return ("ip", str(net.network_address)) if net.num_addresses == 1 else ("cidr", str(net))
    if ip_of(s) is not None:
        return "ip", str(ip_of(s))
    if HASH_RE.fullmatch(low):
        return "hash", low
    low = low.rstrip(".")
    if low.startswith("*."):
        low = low[2:]
    if _DOMAIN.match(low):
        return "domain", low
    return None


def parse_list(text: str) -> list[Indicator]:
    """Parse a plain list (one indicator per line; hosts-file lines allowed)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) >= 2 and ip_of(parts[0]) is not None and parts[0] in (
                "0.0.0.0", "127.0.0.1", "::", "::1"):
            parts = parts[1:]  # hosts-file style
        found = classify(parts[0].rstrip(",;"))
        if found:
            out.append(Indicator(*found))
    return out


def parse_csv(text: str) -> list[Indicator]:
    """Parse an abuse.ch-style CSV (the header may be a ``#`` comment)."""
    header: list[str] | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            cand = line.lstrip("# \t")
            if "," in cand and not body:
                header = [c.strip().strip('"').lower() for c in next(csv.reader([cand]))]
            continue
        if line.strip():
            body.append(line)
    rows = list(csv.reader(io.StringIO("\n".join(body))))
    if header is None and rows and not any(classify(c) for c in rows[0]):
        header = [c.strip().lower() for c in rows.pop(0)]
    out: list[Indicator] = []
    for row in rows:
        cells = [c.strip() for c in row]
        if header is None:
            for cell in cells:
                found = classify(cell)
                if found and found[0] in ("url", "ip", "cidr", "hash"):
                    out.append(Indicator(*found))
                    break
            continue
        rec = dict(zip(header, cells, strict=False))
        tags = [rec[t] for t in _CSV_TAGS if rec.get(t)]
        for group in ("url", "domain", "ip", "hash", "any"):
            for col in _CSV_COLS[group]:
                if rec.get(col):
                    found = classify(rec[col])
                    if found:
                        out.append(Indicator(*found, tags=tags))
    return out


def _unescape(s: str) -> str:
    return s.replace("\\'", "'").replace("\\\\", "\\")


def parse_stix(text: str, *, now: float | None = None) -> list[Indicator]:
    """Parse a STIX 2.1 bundle's live indicators."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntelError(f"not a STIX JSON bundle: {exc}", fix="check the file") from exc
    objects = doc.get("objects", []) if isinstance(doc, dict) else []
    now = time.time() if now is None else now
    out: list[Indicator] = []
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("type") != "indicator" or obj.get("revoked"):
            continue
        if obj.get("pattern_type", "stix") != "stix":
            continue
        until = obj.get("valid_until")
        if until and _stix_time(until) < now:
            continue
        conf = obj.get("confidence")
        confidence = float(conf) / 100 if isinstance(conf, int | float) else 0.9
        tags = [str(x) for x in (obj.get("indicator_types") or obj.get("labels") or [])]
        if obj.get("name"):
            tags.append(str(obj["name"]))
        for typ, _path, value in _STIX_CMP.findall(str(obj.get("pattern", ""))):
            found = classify(_unescape(value))
            if found is None:
                continue
            if typ == "file" and found[0] != "hash":
                continue
            out.append(Indicator(*found, tags=tags, confidence=max(0.05, min(confidence, 1.0))))
    return out


def _stix_time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")


def detect_format(path: Path, text: str) -> Format:
    """Guess a feed file's format from its name and first bytes."""
    head = text.lstrip()[:200]
    if path.suffix.lower() == ".json" or head.startswith("{"):
        return "stix"
    if path.suffix.lower() == ".csv" or any(
            line.count(",") >= 2 for line in text.splitlines()[:50] if not line.startswith("#")):
        return "csv"
    return "list"


def parse_file(path: Path, fmt: Format = "auto") -> tuple[Format, list[Indicator]]:
    """Read and parse one feed file."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise IntelError(f"cannot read feed {path}: {exc.strerror}", fix="check the path") from exc
    if fmt == "auto":
        fmt = detect_format(Path(path), text)
    items = {"list": parse_list, "csv": parse_csv, "stix": parse_stix}[fmt](text)
    return fmt, items


@dataclass(slots=True)
class Hit:
    """An argument value that matched an indicator."""

    indicator: Indicator
    matched: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {"matched": self.matched, **self.indicator.to_dict()}


class IndicatorIndex:
    """Fast lookups: exact sets for URLs/IPs/hashes, parent-domain walk, CIDRs by prefix."""

    def __init__(self, indicators: Iterable[Indicator] = ()) -> None:
        self.exact: dict[tuple[str, str], Indicator] = {}
        self.nets: dict[tuple[int, int], dict[int, Indicator]] = {}  # (version, prefix) -> nets
        self.count = 0
        for ind in indicators:
            self.add(ind)

    def add(self, ind: Indicator) -> None:
        """Index one indicator."""
        self.count += 1
        if ind.kind == "cidr":
            net = ipaddress.ip_network(ind.value, strict=False)
            self.nets.setdefault((net.version, net.prefixlen), {})[
                int(net.network_address)] = ind
        else:
            self.exact.setdefault((ind.kind, ind.value), ind)

    def _ip(self, text: str) -> Indicator | None:
        ip = ip_of(text)
        if ip is None:
            return None
        hit = self.exact.get(("ip", str(ip)))
        if hit:
            return hit
        bits = 32 if ip.version == 4 else 128
        for (version, prefix), nets in self.nets.items():
            if version == ip.version:
                masked = int(ip) >> (bits - prefix) << (bits - prefix) if prefix else 0
                if masked in nets:
                    return nets[masked]
        return None

    def _domain(self, host: str) -> Indicator | None:
        parts = host.rstrip(".").split(".")
        for i in range(len(parts) - 1):
            hit = self.exact.get(("domain", ".".join(parts[i:])))
            if hit:
                return hit
        return None

    def match_targets(self, found: Targets) -> list[Hit]:
        """Return the hits among extracted URLs, hosts, IPs and hashes."""
        hits: dict[str, Hit] = {}
        for url in found.urls:
            low = url.lower().rstrip("/")
            ind = self.exact.get(("url", low))
            if ind:
                hits[low] = Hit(ind, url)
        for host in found.hosts:
            ind = self._ip(host) if ip_of(host) is not None else self._domain(host)
            if ind:
                hits.setdefault(host, Hit(ind, host))
        for h in found.hashes:
            ind = self.exact.get(("hash", h))
            if ind:
                hits.setdefault(h, Hit(ind, h))
        return list(hits.values())

    def match(self, arguments: Any) -> list[Hit]:
        """Return the hits in a call's arguments."""
        if not self.count:
            return []
        return self.match_targets(targets(arguments))


class FeedStore:
    """Parsed feeds kept as JSON under one folder (``HOME/intel/feeds``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def add(self, source: Path, *, name: str | None = None, fmt: Format = "auto"
            ) -> dict[str, Any]:
        """Parse ``source`` and store it as feed ``name`` (default: the file's stem)."""
        source = Path(source).expanduser().resolve()
        name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", source.stem)[:64]
        if not _NAME.match(name):
            raise IntelError(f"bad feed name {name!r}", fix="use letters, digits, . _ -")
        fmt, items = parse_file(source, fmt)
        if not items:
            raise IntelError(f"no indicators found in {source} (read as {fmt})",
                             fix="pass --format list|csv|stix if the guess is wrong")
        unique = {(i.kind, i.value): i for i in items}
        meta = {"name": name, "source": str(source), "format": fmt, "count": len(unique),
                "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                "updated": time.time(),
                "kinds": {k: sum(1 for i in unique.values() if i.kind == k)
                          for k in ("domain", "ip", "cidr", "url", "hash")}}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self._path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": meta, "indicators": [
            [i.kind, i.value, i.tags, i.confidence] for i in unique.values()]}))
        os.replace(tmp, self._path(name))
        return meta

    def list(self) -> builtins.list[dict[str, Any]]:
        """Return every stored feed's metadata."""
        if not self.folder.exists():
            return []
        out = []
        for p in sorted(self.folder.glob("*.json")):
            with p.open() as fh:
                out.append(json.load(fh)["meta"])
        return out

    def update(self, which: str | None = None) -> builtins.list[dict[str, Any]]:
        """Re-read the source of one feed (by name or source path) or of all feeds."""
        feeds = self.list()
        if which:
            want = str(Path(which).expanduser().resolve()) if Path(which).exists() else None
            feeds = [f for f in feeds if f["name"] == which or f["source"] == want]
            if not feeds:
                if want:
                    return [self.add(Path(which))]
                raise IntelError(f"no feed {which!r}", fix="see: bastion intel feeds list")
        return [self.add(Path(f["source"]), name=f["name"], fmt=f["format"]) for f in feeds]

    def remove(self, name: str) -> None:
        """Delete a stored feed."""
        path = self._path(name)
        if not path.exists():
            raise IntelError(f"no feed {name!r}", fix="see: bastion intel feeds list")
        path.unlink()

    def index(self) -> IndicatorIndex:
        """Return an index of every stored feed's indicators."""
        idx = IndicatorIndex()
        if not self.folder.exists():
            return idx
        for p in sorted(self.folder.glob("*.json")):
            with p.open() as fh:
                doc = json.load(fh)
            feed = doc["meta"]["name"]
            for kind, value, tags, conf in doc["indicators"]:
                idx.add(Indicator(kind, value, feed, list(tags), float(conf)))
        return idx


def stamp(ts: float) -> str:
    """Return an ISO-8601 UTC time for display."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
