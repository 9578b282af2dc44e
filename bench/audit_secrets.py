"""Audit throughput, scanner speed, and scanner precision/recall against detect-secrets.

Run: .venv/bin/python bench/audit_secrets.py [--events 100000] [--baseline-events 20000]

1. Audit: events/s of bastion's chained, batched AuditLog (redaction + SHA-256 chain + signed
   checkpoints) vs one plain INSERT-and-commit per event on the same schema, same run.
2. Scanner: MB/s on a mixed text corpus (no secrets, and 1 % secret-bearing lines).
3. Precision/recall/F1 per item on an independent labelled corpus (bench/data/secrets_corpus.jsonl,
   built from gitleaks' and detect-secrets' own test cases plus structural negatives; see
   bench/data/SECRETS_CORPUS.md), for bastion's scanner and for `detect-secrets` (its default
   plugins and filters, scanning the items as one file), in the same run, on both halves
   (default `--split both`: dev, where the rules were tuned, then test, which is reported);
   `--split dev --show` prints the dev half's errors.

Scanner figures only: nice -n 5 .venv/bin/python bench/audit_secrets.py --scanner-only
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sqlite3
import string
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.security.audit import _SCHEMA, AuditLog  # noqa: E402
from bastion.security.redact import Redactor  # noqa: E402
from bastion.security.scanner import SecretScanner  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "data" / "secrets_corpus.jsonl"
DEV_EXTRA = CORPUS.with_name("secrets_dev_extra.jsonl")  # more dev data (SECRETS_CORPUS.md)
R = random.Random(20261125)
A_Z = string.ascii_uppercase
AZ09 = string.ascii_letters + string.digits


def rs(chars: str, n: int) -> str:
    return "".join(R.choice(chars) for _ in range(n))


# ---- labelled corpus ---------------------------------------------------------------------
def tokens() -> list[tuple[str, Callable[[], str]]]:
    b64 = AZ09 + "+/"
    url = AZ09 + "_-"
    hexd = "0123456789abcdef"
    return [
        ("aws_key_id", lambda: "AKIA" + rs(A_Z + string.digits, 16)),
        ("aws_secret", lambda: "aws_secret_access_key = " + rs(b64, 40)),
        ("github_pat", lambda: "ghp_" + rs(AZ09, 36)),
        ("github_oauth", lambda: "gho_" + rs(AZ09, 36)),
        ("github_fine", lambda: "github_pat_" + rs(AZ09, 22) + "_" + rs(AZ09, 59)),
        ("gitlab", lambda: "glpat-" + rs(url, 20)),
        ("slack_bot", lambda: f"xoxb-{rs(string.digits, 12)}-{rs(string.digits, 13)}-"
         + rs(AZ09, 24)),
        ("slack_webhook", lambda: "https://hooks.slack.com/services/T" + rs(A_Z, 8) + "/B"
         + rs(A_Z, 8) + "/" + rs(AZ09, 24)),
        ("openai", lambda: "sk-proj-" + rs(url, 48)),
        ("openai_legacy", lambda: "sk-" + rs(AZ09, 48)),
        ("anthropic", lambda: "sk-ant-api03-" + rs(url, 93) + "AA"),
        ("google_api", lambda: "AIza" + rs(url, 35)),
        ("stripe", lambda: "sk_live_" + rs(AZ09, 24)),
        ("twilio", lambda: "SK" + rs(hexd, 32)),
        ("sendgrid", lambda: "SG." + rs(url, 22) + "." + rs(url, 43)),
        ("npm", lambda: "npm_" + rs(AZ09, 36)),
        ("pypi", lambda: "pypi-AgEIcHlwaS5vcmc" + rs(url, 60)),
        ("huggingface", lambda: "hf_" + rs(string.ascii_letters, 34)),
        ("jwt", lambda: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + base64.urlsafe_b64encode(
            f'{{"sub":"{rs(string.digits, 10)}","name":"{rs(string.ascii_letters, 8)}"}}'.encode()
        ).decode().rstrip("=") + "." + rs(url, 43)),
        ("private_key", lambda: "-----BEGIN RSA PRIVATE KEY-----\\n" + rs(b64, 64)
         + "\\n-----END RSA PRIVATE KEY-----"),
        ("url_password", lambda: f"postgres://app:{rs(AZ09, 14)}@db.internal:5432/prod"),
        ("password_assign", lambda: f'DB_PASSWORD="{rs(AZ09 + "!#%", 16)}"'),
        ("bearer", lambda: "Authorization: Bearer " + rs(url, 40)),
        ("hex_key", lambda: "encryption_key: " + rs(hexd, 64)),
        ("vault", lambda: "hvs." + rs(url, 90)),
        ("azure_storage", lambda: "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
         + rs(b64, 86) + "=="),
        ("telegram", lambda: rs(string.digits, 10) + ":AA" + rs(url, 33)),
    ]


TEMPLATES_POS = [
    "export TOKEN={t}", "config: {t}", '  "credential": "{t}",', "curl -H 'X-Key: {t}' https://api",
    "[2026-11-25 10:00:01] INFO using {t}", "{t}", "set it to {t} and restart",
]
NEGATIVES = [
    lambda: f"commit {rs('0123456789abcdef', 40)} Merge branch 'main'",
    lambda: f"sha256:{rs('0123456789abcdef', 64)}  file.tar.gz",
    lambda: f"request id {rs('0123456789abcdef', 8)}-{rs('0123456789abcdef', 4)}-4"
            f"{rs('0123456789abcdef', 3)}-a{rs('0123456789abcdef', 3)}-"
            f"{rs('0123456789abcdef', 12)}",
    lambda: f"/usr/lib/python3.11/site-packages/{rs(string.ascii_lowercase, 8)}/__init__.py",
    lambda: "def " + rs(string.ascii_lowercase, 10) + "_handler(request, *args, **kwargs):",
    lambda: f"total {R.randint(10, 900)} drwxr-xr-x 2 root root 4096 Nov 25 12:00 workspace",
    lambda: f"https://example.com/docs/{rs(string.ascii_lowercase, 6)}?page={R.randint(1, 9)}",
    lambda: "The quick brown fox jumps over the lazy dog near the riverbank.",
    lambda: f"password: {{{{ .Values.{rs(string.ascii_lowercase, 6)} }}}}",
    lambda: f"token_count = {R.randint(100, 9000)}  # tokens per request",
    lambda: "import " + rs(string.ascii_lowercase, 7) + " as np",
    lambda: f"ERROR connection refused to 10.0.{R.randint(0, 255)}.{R.randint(1, 254)}:5432",
    lambda: f"user_id={R.randint(10**5, 10**6)} action=login status=ok",
    lambda: f"{rs(string.ascii_lowercase, 5)}.{rs(string.ascii_lowercase, 8)}.example.org",
    lambda: f"font-family: Inter, sans-serif; color: #{rs('0123456789abcdef', 6)};",
    lambda: "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    lambda: "AKIA is the prefix of AWS access key ids; ghp_ is GitHub's.",
    lambda: f"version {R.randint(1, 9)}.{R.randint(0, 20)}.{R.randint(0, 99)} released",
]


def corpus(n_pos: int = 600, n_neg: int = 1400) -> list[tuple[str, bool, str]]:
    items: list[tuple[str, bool, str]] = []
    fmts = tokens()
    for i in range(n_pos):
        name, make = fmts[i % len(fmts)]
        items.append((R.choice(TEMPLATES_POS).format(t=make()), True, name))
    for i in range(n_neg):
        items.append((NEGATIVES[i % len(NEGATIVES)](), False, "negative"))
    R.shuffle(items)
    return items


def score(pred: list[bool], truth: list[bool]) -> tuple[float, float, int, int]:
    tp = sum(p and t for p, t in zip(pred, truth, strict=True))
    fp = sum(p and not t for p, t in zip(pred, truth, strict=True))
    fn = sum(t and not p for p, t in zip(pred, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, fp, fn


def detect_secrets_lines(lines: list[str]) -> tuple[list[bool], float]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "corpus.txt"
        path.write_text("\n".join(lines) + "\n")
        start = time.perf_counter()
        with default_settings():
            coll = SecretsCollection()
            coll.scan_file(str(path))
        elapsed = time.perf_counter() - start
        hits = {s.line_number for _, s in coll}
    return [i + 1 in hits for i in range(len(lines))], elapsed


# ---- audit throughput --------------------------------------------------------------------
def bench_audit(n: int, n_base: int) -> None:
    args = {"command": "ls -la /workspace/src", "timeout_s": 30}
    result = "total 12\ndrwxr-xr-x 2 user user 4096 main.py\n-rw-r--r-- 1 user user 120 notes.md"
    with tempfile.TemporaryDirectory() as d:
        base = sqlite3.connect(Path(d) / "base.db", isolation_level=None)
        base.execute("PRAGMA journal_mode=WAL")
        base.execute("PRAGMA synchronous=NORMAL")
        base.executescript(_SCHEMA)
        import json

        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n_base):
            base.execute("BEGIN")
            base.execute("INSERT INTO events (id, ts, kind, actor, session_id, tool, decision,"
                         " risk, arguments, result, duration_ms, detail, hash) VALUES"
                         " (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (i + 1, time.time(), "tool_call", "agent", "s1", "shell", "allowed", "low",
                          json.dumps(args), result, 1.5, json.dumps({"call_id": f"c{i}"}), ""))
            base.execute("COMMIT")
        base_rate = n_base / (time.perf_counter() - start)
        base_cpu = n_base / (time.process_time() - cpu)
        base.close()

        rates, cpus = {}, {}
        for durability in ("queued", "committed"):
            log = AuditLog(Path(d) / f"{durability}.db", Redactor(["held-secret-value-1"]),
                           durability=durability)  # type: ignore[arg-type]
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                log.record("tool_call", actor="agent", session_id="s1", tool="shell",
                           decision="allowed", risk="low", arguments=args, result=result,
                           duration_ms=1.5, detail={"call_id": f"c{i}"})
            log.flush()
            rates[durability] = n / (time.perf_counter() - start)
            cpus[durability] = n / (time.process_time() - cpu)
            ok = log.verify()
            assert ok.ok and ok.checked == n, ok.summary()
            log.close()
    import os

    print(f"== audit log (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs) ==")
    print("events/s by wall clock, and per CPU-second of this process (less load-sensitive)")
    print(f"baseline: one INSERT + COMMIT per event (no chain, no redaction): {base_rate:,.0f} "
          f"ev/s wall, {base_cpu:,.0f} ev/CPU-s")
    for k, v in rates.items():
        print(f"bastion chained+batched, redacted, signed checkpoints [{k}]: {v:,.0f} ev/s wall "
              f"({v / base_rate:.1f}x baseline), {cpus[k]:,.0f} ev/CPU-s "
              f"({cpus[k] / base_cpu:.1f}x)")
    print(f"target >= 20,000 ev/s (wall): {'met' if max(rates.values()) >= 20_000 else 'NOT met'}")


def load_corpus(split: str) -> list[tuple[str, bool, str]]:
    """The independent labelled corpus (bench/data/SECRETS_CORPUS.md): (text, label, source)."""
    out = []
    for path in (CORPUS, DEV_EXTRA):  # DEV_EXTRA: development data only (all split "dev")
        with path.open() as f:
            for line in f:
                it = json.loads(line)
                if split == "all" or it["split"] == split:
                    out.append((it["text"], it["label"], it["source"]))
    return out


def detect_secrets_items(texts: list[str]) -> tuple[list[bool], float]:
    """detect-secrets (default plugins and filters) on the items written as one file."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    owner: list[int] = []
    for i, t in enumerate(texts):
        owner.extend([i] * (t.count("\n") + 1))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "corpus.txt"
        path.write_text("\n".join(texts) + "\n")
        start = time.perf_counter()
        with default_settings():
            coll = SecretsCollection()
            coll.scan_file(str(path))
        elapsed = time.perf_counter() - start
        hits = {owner[s.line_number - 1] for _, s in coll}
    return [i in hits for i in range(len(texts))], elapsed


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def bench_precision(split: str, show: bool) -> None:
    items = load_corpus(split)
    texts = [t for t, _, _ in items]
    truth = [lab for _, lab, _ in items]
    scanner = SecretScanner()
    start = time.perf_counter()
    ours = [bool(scanner.scan(t)) for t in texts]
    ours_s = time.perf_counter() - start
    theirs, theirs_s = detect_secrets_items(texts)
    p1, r1, fp1, fn1 = score(ours, truth)
    p2, r2, fp2, fn2 = score(theirs, truth)
    srcs = sorted({s for _, _, s in items})
    print(f"\n== precision/recall on the independent corpus, {split} half: {len(items)} items "
          f"({sum(truth)} with a secret; sources: {', '.join(srcs)}) ==")
    print(f"{'':16} {'precision':>9} {'recall':>7} {'F1':>6} {'fp':>4} {'fn':>4} {'ms':>6}")
    print(f"{'bastion scanner':16} {p1:9.3f} {r1:7.3f} {f1(p1, r1):6.3f} {fp1:4} {fn1:4} "
          f"{ours_s * 1000:6.0f}")
    print(f"{'detect-secrets':16} {p2:9.3f} {r2:7.3f} {f1(p2, r2):6.3f} {fp2:4} {fn2:4} "
          f"{theirs_s * 1000:6.0f}")
    print(f"{'ratio (b / d-s)':16} {p1 / p2 if p2 else 0:9.2f} {r1 / r2 if r2 else 0:7.2f} "
          f"{f1(p1, r1) / f1(p2, r2) if f1(p2, r2) else 0:6.2f}")
    target = p1 >= 0.97 and r1 >= 0.97
    print(f"target precision >= 0.97 and recall >= 0.97: {'met' if target else 'NOT met'}")
    for src in srcs:
        sel = [i for i, (_, _, s) in enumerate(items) if s == src]
        sp = score([ours[i] for i in sel], [truth[i] for i in sel])
        sd = score([theirs[i] for i in sel], [truth[i] for i in sel])
        print(f"  {src:15} bastion P {sp[0]:.3f} R {sp[1]:.3f} | detect-secrets P {sd[0]:.3f} "
              f"R {sd[1]:.3f}  ({len(sel)} items)")
    if show:
        for (t, lab, src), pred in zip(items, ours, strict=True):
            if pred != lab:
                print(f"  {'FN' if lab else 'FP'} [{src}] {t[:150]!r}")


def bench_speed(items: list[tuple[str, bool, str]]) -> None:
    import os

    scanner = SecretScanner(["held-secret-value-1"])
    clean = "\n".join(NEGATIVES[i % len(NEGATIVES)]() for i in range(40_000))
    mixed_lines = clean.splitlines()
    for i in range(0, len(mixed_lines), 100):
        mixed_lines[i] = items[i % len(items)][0]
    mixed = "\n".join(mixed_lines)
    print("\n== scanner speed ==")
    rates: dict[str, float] = {}
    for label, text in (("clean text", clean), ("1% secret lines", mixed)):
        best_wall = best_cpu = float("inf")
        for _ in range(3):  # best of 3: other processes on the machine only ever slow it down
            start, cpu = time.perf_counter(), time.process_time()
            scanner.redact(text)
            best_wall = min(best_wall, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        rates[label] = len(text) / best_wall / 1e6
        print(f"{label}: {len(text) / best_wall / 1e6:.1f} MB/s wall, "
              f"{len(text) / best_cpu / 1e6:.1f} MB per CPU-second ({len(text) / 1e6:.1f} MB, "
              "one call, best of 3)")
    small = [t for t, _, _ in items]
    start = time.perf_counter()
    for _ in range(5):
        for t in small:
            scanner.redact(t)
    el = time.perf_counter() - start
    total = sum(len(t) for t in small) * 5
    print(f"short strings (audit fields, tool lines): {len(small) * 5 / el:,.0f} strings/s, "
          f"{total / el / 1e6:.1f} MB/s")
    start = time.perf_counter()
    scanner.redact(mixed)
    ours_s = time.perf_counter() - start
    _, ds_s = detect_secrets_lines(mixed_lines)
    print(f"detect-secrets on the 1% text (as a file): {len(mixed) / ds_s / 1e6:.2f} MB/s; "
          f"bastion {ds_s / ours_s:.0f}x faster in the same run")
    met = "met" if rates["clean text"] >= 10 else "NOT met"
    print(f"target >= 10 MB/s on clean text: {met} by wall clock (load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--baseline-events", type=int, default=20_000)
    ap.add_argument("--split", choices=("both", "test", "dev", "all"), default="both",
                    help="half of the independent corpus to score (tune only on dev)")
    ap.add_argument("--show", action="store_true", help="print each wrong item (dev only)")
    ap.add_argument("--scanner-only", action="store_true", help="skip the audit-log part")
    a = ap.parse_args()
    if a.show and a.split != "dev":
        ap.error("--show prints items; use it on the dev half only")
    if not a.scanner_only:
        bench_audit(a.events, a.baseline_events)
    for split in ("dev", "test") if a.split == "both" else (a.split,):
        bench_precision(split, a.show)
    bench_speed(corpus())


if __name__ == "__main__":
    main()
