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

secretlint's rule tests (github.com/secretlint/secretlint, MIT): each rule package's
``test/snapshots/<case>/`` holds an input file and the ``output.json`` of what the rule found
there (``ng.*`` cases must be found, ``ok.*`` must not). One item per line of each input,
comments and blank lines left out; a PEM block, a JSON file or a Kubernetes manifest holding a
secret is one item. A line is positive where the rule found something in it, then relabelled by
the same policy, by hand (``secretlint`` in the labels file): secretlint's own "allowed by
option" cases and URL credentials it leaves to another rule are positive; a certificate, a CSR,
an Azure tenant or client id and an AWS account id are negative (public identifiers); left out:
near misses (a glued or changed prefix, a fragment, a token one character off), runs of one
character, ``foo-bar`` values, and lines whose label depends on the file name. The rules
``example``, ``filter-comments``, ``no-homedir`` and ``no-dotenv`` test secretlint itself, not
credentials, and are skipped.

Fresh draws of gitleaks' generated cases (``--gitleaks``): the main corpus runs gitleaks'
generators (``secrets.NewSecret(regex)``, ``GenerateSampleSecrets``) once, with its seed, and
splits what they gave between dev and test. Here the same generators run again with other seeds
(RESAMPLE_SEEDS); every text already in the main corpus, either half, is dropped (so gitleaks'
literal cases, which do not change with the seed, are not repeated), and the main corpus's
labelling policy and near-miss list apply unchanged. These are new draws from the distribution
both halves come from, not the test half's items.

Every item is split ``dev``: this file is for developing the rules only. The figures that
count stay those of the main corpus's test half, which this file does not touch.

    git clone https://github.com/praetorian-inc/noseyparker /tmp/np
    git clone https://github.com/secretlint/secretlint /tmp/secretlint
    .venv/bin/python bench/data/build_secrets_dev_extra.py --noseyparker /tmp/np \
        --secretlint /tmp/secretlint
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
from build_secrets_corpus import (  # noqa: E402  (the same policy, the same generators)
    GITLEAKS,
    dedupe,
    excluded,
    export,
    gitleaks_items,
    placeholder,
    relabel,
)

NOSEYPARKER = ("praetorian-inc/noseyparker", "2e6e7f36ce36619852532bbe698d8cb7a26d2da7",
               "Apache-2.0")
RULES_DIR = "crates/noseyparker/data/default/builtin/rules"
SECRETLINT = ("secretlint/secretlint", "18346ba31b8173d52060b971221ab38c1943def0", "MIT")
SL_DIR = "packages/@secretlint"
SL_SKIP_RULES = frozenset({"example", "filter-comments", "no-homedir", "no-dotenv",
                           "internal-test-cjs", "internal-test-esm"})
SL_SKIP_FILES = frozenset({"README.md", "output.json", ".secretlintrc.json", "options.ts",
                           ".gitignore", "excluded"})
PEM = re.compile(r"-----BEGIN [A-Z ]+-----")
RESAMPLE_SEEDS = (1, 2, 3, 4)  # the main corpus used build_secrets_corpus.GEN_SEED
OUT = Path(__file__).with_name("secrets_dev_extra.jsonl")
MAIN = Path(__file__).with_name("secrets_corpus.jsonl")
# the hand labels (by SHA-256 of the text, first 12 hex digits): see the module docstring
LABELS = json.loads(Path(__file__).with_name("secrets_dev_extra_labels.json").read_text())
EXCLUDED_RULES = frozenset(LABELS["excluded_rules"])
NEGATIVE = frozenset(LABELS["negative"])
EXCLUDE = frozenset(LABELS["exclude"])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _row(text: str, label: bool, relabel: str | None, source: str,
         origin_repo: tuple[str, str, str], path: str, origin: str) -> dict[str, object]:
    """One dev item of ``source`` (repository, commit, licence in ``origin_repo``)."""
    it: dict[str, object] = {
        "text": text, "label": label, "source": source, "repo": origin_repo[0], "path": path,
        "commit": origin_repo[1], "licence": origin_repo[2], "origin": origin, "split": "dev"}
    if relabel:
        it["relabel"] = relabel
    return it


def items(rules_dir: Path, main: set[str], seen: set[str]) -> list[dict[str, object]]:
    """Nosey Parker's examples, relabelled (see the module docstring)."""
    out: list[dict[str, object]] = []
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
                out.append(_row(text, label, relabel, "noseyparker", NOSEYPARKER,
                                f"{RULES_DIR}/{f.name}", f"{rule['id']} {origin}"))
    return out


def _whole(path: Path, text: str) -> bool:
    """One item for the whole file: a PEM block, JSON, a Kubernetes Secret manifest."""
    return (PEM.search(text) is not None or path.suffix == ".json"
            or path.suffix in (".yml", ".yaml") and "kind: Secret" in text)


def secretlint_items(packages: Path, main: set[str], seen: set[str]) -> list[dict[str, object]]:
    """secretlint's snapshot cases, one item per line, relabelled (see the module docstring)."""
    labels = LABELS["secretlint"]
    positive, negative, exclude = (frozenset(labels[k]) for k in ("positive", "negative",
                                                                   "exclude"))
    out: list[dict[str, object]] = []
    for case in sorted(packages.glob("secretlint-rule-*/test/snapshots/*/")):
        rule = case.parts[-4].removeprefix("secretlint-rule-")
        if rule in SL_SKIP_RULES or "preset" in rule:
            continue
        found = case / "output.json"
        ranges = [m["range"] for m in json.loads(found.read_text())["messages"]
                  if "range" in m] if found.exists() else []
        for f in sorted(case.iterdir()):
            if f.name in SL_SKIP_FILES or f.suffix == ".p12":
                continue
            try:
                raw = f.read_text()
            except UnicodeDecodeError:
                continue
            spans: list[tuple[int, int]] = []
            if _whole(f, raw):
                spans.append((0, len(raw)))
            else:
                pos = 0
                for line in raw.split("\n"):
                    spans.append((pos, pos + len(line)))
                    pos += len(line) + 1
            for a, b in spans:
                text = raw[a:b].strip("\n").rstrip()
                bare = text.strip()
                if not bare or bare.startswith(("#", "//")):
                    continue
                d = _digest(text)
                if text in main or text in seen or d in exclude:
                    continue
                label = any(r[0] < b and r[1] > a for r in ranges)
                if a == 0 and b == len(raw) and PEM.search(raw) and "PRIVATE KEY" in raw:
                    label = label or case.name.startswith("ng")  # found in its .p12 twin
                relabel = None
                if d in positive:
                    label, relabel = True, "hand: a working credential by the policy"
                elif d in negative:
                    label, relabel = False, "hand: a public identifier"
                elif label and placeholder(text):
                    label, relabel = False, "(b) placeholder"
                seen.add(text)
                out.append(_row(text, label, relabel, "secretlint", SECRETLINT,
                                str(f.relative_to(packages.parent.parent)),
                                f"{rule} {case.name}"))
    return out


def resampled_gitleaks(root: Path, main: set[str], seen: set[str]) -> list[dict[str, object]]:
    """gitleaks' generated cases drawn again with other seeds (see the module docstring)."""
    out: list[dict[str, object]] = []
    # the main corpus's near misses are listed by text; a new draw of the same case has another
    # text, so it is left out by the case it comes from (its origin: rule file, line, position)
    first, _ = gitleaks_items(root)
    relabel(first)
    near_miss = {it["origin"] for it in first if excluded(it)}
    for seed in RESAMPLE_SEEDS:
        drawn, _ = gitleaks_items(root, seed)
        relabel(drawn)
        for it in dedupe([it for it in drawn if not excluded(it)]):
            if it["text"] in main or it["text"] in seen or it["origin"] in near_miss:
                continue
            seen.add(it["text"])
            it.update(source="gitleaks-resampled", origin=f"{it['origin']} (seed {seed})",
                      split="dev")
            out.append(it)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--noseyparker", required=True, help="a clone or mirror of the repository")
    ap.add_argument("--secretlint", required=True, help="a clone or mirror of the repository")
    ap.add_argument("--gitleaks", required=True, help="a clone or mirror of the repository")
    a = ap.parse_args()
    main_texts = {json.loads(line)["text"] for line in MAIN.read_text().splitlines() if line}
    seen: set[str] = set()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(f"git -C {a.noseyparker} archive {NOSEYPARKER[1]} {RULES_DIR} "
                       f"| tar -x -C {d}", shell=True, check=True)
        subprocess.run(f"git -C {a.secretlint} archive {SECRETLINT[1]} {SL_DIR} "
                       f"| tar -x -C {d}", shell=True, check=True)
        rows = items(Path(d) / RULES_DIR, main_texts, seen)
        rows += secretlint_items(Path(d) / SL_DIR, main_texts, seen)
        gl = Path(d) / "gl"
        gl.mkdir()
        export(a.gitleaks, GITLEAKS[1], ["cmd/generate/config"], gl)
        rows += resampled_gitleaks(gl, main_texts, seen)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} items ({sum(bool(r['label']) for r in rows)} positive) -> {OUT}")


if __name__ == "__main__":
    main()
