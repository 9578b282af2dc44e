"""Build bench/data/secrets_dev_extra.jsonl: more DEVELOPMENT data for the secret scanner.

Nosey Parker's rule examples (github.com/praetorian-inc/noseyparker, Apache-2.0): every rule in
``crates/noseyparker/data/default/builtin/rules/*.yml`` lists ``examples`` (what it must find)
and ``negative_examples`` (what it must not). Those are a detector's own test cases, not a
credential labelling: an example may be a public value the rule finds on purpose (an S3
bucket, an ARN, an OAuth client id, a password hash), a negative may be a real-looking token
that is one character off for that rule. So each item is relabelled by the policy of
bench/data/SECRETS_CORPUS.md ("could be a working credential") by hand, listed below by the
SHA-256 of its text:

- an example is positive, unless its rule finds public values (EXCLUDED_RULES) or the item is
  listed in NEGATIVE (a variable, a template, a run of punctuation, a public key) or EXCLUDE
  (ambiguous: runs of one character, ``FakeValues``, ``YOURPASSWORD``, a near miss);
- a negative example under a "FIXME ... match" comment is positive (Nosey Parker says so);
  any other is left out (a near miss), unless listed in NEGATIVE (a real non-credential:
  ``this.addPassword = "#add-password"``, a route name, an ARN, a UI label);
- policy (b) placeholders become negative, exact duplicates of the main corpus are dropped.

Every item is split ``dev``: this file is for developing the rules only. The figures that
count stay those of the main corpus's test half, which this file does not touch.

    git clone https://github.com/praetorian-inc/noseyparker /tmp/np
    .venv/bin/python bench/data/build_secrets_dev_extra.py --noseyparker /tmp/np
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from build_secrets_corpus import placeholder  # noqa: E402  (the same policy (b))

NOSEYPARKER = ("praetorian-inc/noseyparker", "2e6e7f36ce36619852532bbe698d8cb7a26d2da7",
               "Apache-2.0")
RULES_DIR = "crates/noseyparker/data/default/builtin/rules"
OUT = Path(__file__).with_name("secrets_dev_extra.jsonl")
MAIN = Path(__file__).with_name("secrets_corpus.jsonl")
# the hand labels (by SHA-256 of the text, first 12 hex digits): see the module docstring
LABELS = json.loads(Path(__file__).with_name("secrets_dev_extra_labels.json").read_text())
EXCLUDED_RULES = frozenset(LABELS["excluded_rules"])
NEGATIVE = frozenset(LABELS["negative"])
EXCLUDE = frozenset(LABELS["exclude"])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def items(rules_dir: Path) -> list[dict[str, object]]:
    """Nosey Parker's examples, relabelled (see the module docstring)."""
    main = {json.loads(line)["text"] for line in MAIN.read_text().splitlines() if line}
    out: list[dict[str, object]] = []
    seen: set[str] = set()
    for f in sorted(rules_dir.glob("*.yml")):
        raw = f.read_text()
        for rule in yaml.safe_load(raw).get("rules", []):
            start = raw.find("id: " + rule["id"])
            cases = [(ex, True, "example") for ex in rule.get("examples") or []]
            negs = rule.get("negative_examples") or []
            nstart = raw.find("negative_examples:", start)
            for ex in negs:
                pos = raw.find(ex.strip().splitlines()[0][:40], nstart)
                fixme = re.search(r"FIXME[^\n]*(?:match|detect)", raw[start:pos]) is not None
                cases.append((ex, fixme, "negative_example" + (" under FIXME" if fixme else "")))
            for ex, label, origin in cases:
                text = ex.rstrip("\n")
                d = _digest(text)
                if text in main or text in seen or d in EXCLUDE:
                    continue
                if d in NEGATIVE:
                    label = False
                elif rule["id"] in EXCLUDED_RULES or not label and "FIXME" not in origin:
                    continue
                relabel = None
                if label and placeholder(text):
                    label, relabel = False, "(b) placeholder"
                seen.add(text)
                it = {"text": text, "label": label, "source": "noseyparker",
                      "repo": NOSEYPARKER[0], "path": f"{RULES_DIR}/{f.name}",
                      "commit": NOSEYPARKER[1], "licence": NOSEYPARKER[2],
                      "origin": f"{rule['id']} {origin}", "split": "dev"}
                if relabel:
                    it["relabel"] = relabel
                out.append(it)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--noseyparker", required=True, help="a clone or mirror of the repository")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(f"git -C {a.noseyparker} archive {NOSEYPARKER[1]} {RULES_DIR} "
                       f"| tar -x -C {d}", shell=True, check=True)
        rows = items(Path(d) / RULES_DIR)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} items ({sum(bool(r['label']) for r in rows)} positive) -> {OUT}")


if __name__ == "__main__":
    main()
