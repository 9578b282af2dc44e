"""Ordinary source code as a yardstick for the secret scanner's false findings.

The labelled corpus (bench/data/secrets_corpus.jsonl) is mostly tokens and near misses. What a
scanner meets on the egress path and in tool output is mostly ordinary text: code, docs,
configuration. This reads the installed Python packages (this checkout's ``.venv``; libraries,
not their test folders, which hold fake keys on purpose), splits them by package into a dev half
(where rules may be tuned: ``--show`` prints its findings) and a test half (only counted), and
scans each file whole, as a tool's output would be scanned. A finding there is almost always
false: the yardstick is findings per 10,000 lines, bastion's and detect-secrets' (its default
plugins and filters), in the same run. Documentation examples that hold credential-shaped
values (an RFC's sample client secret) count as findings too, so the rate is an upper bound on
the false ones.

    .venv/bin/python bench/real_code.py [--split dev|test|both] [--show] [--mb 6]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.security.scanner import SecretScanner  # noqa: E402

SUFFIXES = (".py", ".md", ".rst", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json")
TEST_PARTS = frozenset({"tests", "test", "testing", "testdata", "fixtures", "examples"})


def _half(package: str) -> str:
    return "dev" if hashlib.sha256(package.encode()).digest()[0] % 2 == 0 else "test"


def files(split: str, budget: int) -> list[tuple[str, str]]:
    """Return (relative path, text) of up to ``budget`` bytes of the half's library files.

    Files are taken in the order of their path's SHA-256 (a fixed sample across packages).
    """
    root = Path(sysconfig.get_paths()["purelib"])
    picked: list[tuple[str, Path]] = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if (p.suffix not in SUFFIXES or len(rel.parts) < 2 or rel.parts[0].endswith(
                (".dist-info", ".egg-info")) or TEST_PARTS & set(rel.parts[:-1])
                or p.name.startswith("test_") or p.stem.endswith("_test") or not p.is_file()):
            continue
        if _half(rel.parts[0]) == split:
            picked.append((hashlib.sha256(str(rel).encode()).hexdigest(), p))
    out: list[tuple[str, str]] = []
    size = 0
    for _, p in sorted(picked):
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if not 0 < len(text) <= 200_000:
            continue
        out.append((str(p.relative_to(root)), text))
        size += len(text)
        if size >= budget:
            break
    return out


def detect_secrets_count(docs: list[tuple[str, str]]) -> tuple[int, float]:
    """detect-secrets' findings (default plugins and filters) on the same files."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, (rel, text) in enumerate(docs):
            path = Path(d) / f"{i}{Path(rel).suffix}"
            path.write_text(text)
            paths.append(str(path))
        start = time.perf_counter()
        with default_settings():
            coll = SecretsCollection()
            for path in paths:
                coll.scan_file(path)
        elapsed = time.perf_counter() - start
        lines = {(f, s.line_number) for f, s in coll}
    return len(lines), elapsed


def measure(split: str, budget: int, show: bool) -> None:
    docs = files(split, budget)
    scanner = SecretScanner()
    n_lines = sum(t.count("\n") + 1 for _, t in docs)
    size = sum(len(t) for _, t in docs)
    rules: Counter[str] = Counter()
    flagged: list[tuple[str, str, str]] = []
    start = time.perf_counter()
    for rel, text in docs:
        seen: set[int] = set()
        for f in scanner.scan(text):
            line_no = text.count("\n", 0, f.start)
            if line_no in seen:
                continue
            seen.add(line_no)
            rules[f.rule] += 1
            ls = text.rfind("\n", 0, f.start) + 1
            le = text.find("\n", f.end)
            flagged.append((rel, f.rule, text[ls:le if le != -1 else len(text)].strip()))
    ours_s = time.perf_counter() - start
    theirs, theirs_s = detect_secrets_count(docs)
    per = 10_000 / n_lines
    print(f"\n== ordinary code, {split} half: {len(docs)} library files of the installed "
          f"packages, {n_lines:,} lines, {size / 1e6:.1f} MB ==")
    print(f"bastion scanner: {len(flagged)} lines with a finding = {len(flagged) * per:.1f} "
          f"per 10k lines ({ours_s:.1f} s); by rule: {dict(rules.most_common())}")
    print(f"detect-secrets : {theirs} lines = {theirs * per:.1f} per 10k lines ({theirs_s:.1f} s)")
    if show:
        for rel, rule, line in flagged:
            print(f"  [{rule}] {rel[:50]}: {line[:150]!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=("dev", "test", "both"), default="both")
    ap.add_argument("--show", action="store_true", help="print each finding (dev half only)")
    ap.add_argument("--mb", type=float, default=6.0, help="MB of code per half")
    a = ap.parse_args()
    if a.show and a.split != "dev":
        ap.error("--show prints findings; use it on the dev half only")
    for split in ("dev", "test") if a.split == "both" else (a.split,):
        measure(split, int(a.mb * 1e6), a.show)


if __name__ == "__main__":
    main()
