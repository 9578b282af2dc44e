"""Benchmark of the privacy router: PII detection quality and the latency it adds.

Run: ``.venv/bin/python bench/privacy.py [--fills 2] [--requests 20]``
(needs ``pip install --no-deps presidio-evaluator==0.3.2``, done by scripts/test-assets.sh)

1. Detection precision / recall / F1 per class on a labelled set built offline from the data
   ``presidio-evaluator`` ships: its 209 sentence templates (``templates.txt``), filled with
   people, e-mails and phone numbers from its ``FakeNameGenerator.com_3000.csv`` and with
   Luhn-valid card numbers and mod-97-valid IBANs generated here (the CSV's card column is
   mangled to floats). Only PERSON, EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD and IBAN_CODE
   are scored (other slots are filled too; a prediction on an address, place, company or id
   slot counts neither way, and predictions of other classes are ignored). A gold span
   counts as found when a predicted span of the same class covers at least half of it.
   Baselines measured in the same run: bastion's secret scanner alone (what guarded model
   traffic before the router) and a regex-only detector (e-mail, phone, Luhn card, IBAN
   regexes; no names).
2. Added latency per request: the shipped SmolLM2 answering 16 tokens directly vs through
   the ``PrivacyRouter`` (same model as local and remote), for a fresh 3-message request
   each time (nothing cached) and for a 9-message conversation whose older messages were
   already scanned (the agent's steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bastion.config.model import Config  # noqa: E402
from bastion.messages import ChatSettings, Message, TextDelta  # noqa: E402
from bastion.privacy.detect import Entity  # noqa: E402
from bastion.privacy.router import PrivacyRouter  # noqa: E402
from bastion.privacy.scan import policy_for_config  # noqa: E402
from bastion.security.scanner import SecretScanner  # noqa: E402

CLASSES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE")
LABEL = {
    "person": "PERSON", "name": "PERSON", "first_name": "PERSON", "last_name": "PERSON",
    "name_female": "PERSON", "name_male": "PERSON", "first_name_male": "PERSON",
    "first_name_female": "PERSON", "last_name_male": "PERSON", "last_name_female": "PERSON",
    "first_name_nonbinary": "PERSON", "email": "EMAIL_ADDRESS", "phone_number": "PHONE_NUMBER",
    "credit_card_number": "CREDIT_CARD", "iban": "IBAN_CODE",
}  # fmt: skip
# Personal data outside the scored classes (addresses, places, companies, ids, dates): a
# prediction on them is neither a hit nor a false alarm.
IGNORE = {"address", "street_name", "city", "country", "organization", "ssn", "ip_address",
          "us_driver_license", "date_of_birth", "url", "secondary_address", "nationality",
          "nation_woman", "nation_plural"}


@dataclass
class Sample:
    text: str
    gold: list[tuple[int, int, str]]
    ignore: list[tuple[int, int]]


def raw_data() -> Path:
    spec = importlib.util.find_spec("presidio_evaluator")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs: pip install --no-deps presidio-evaluator==0.3.2 (scripts/test-assets.sh)")
    return Path(list(spec.submodule_search_locations)[0]) / "data_generator" / "raw_data"


def luhn_card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "52", "53", "54", "55"])
    digits = [int(c) for c in prefix] + [rng.randrange(10) for _ in range(15 - len(prefix))]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += sum(divmod(d * 2, 10)) if i % 2 == 0 else d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else s


def iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 18), ("FR", 23), ("NL", 14), ("ES", 20)])
    if country == "NL":
        bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + "".join(
            str(rng.randrange(10)) for _ in range(10))
    else:
        bban = "".join(str(rng.randrange(10)) for _ in range(length))
    num = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(num) % 97:02d}{bban}"


def build_set(fills: int, seed: int = 7) -> list[Sample]:
    data = raw_data()
    templates = [t.strip() for t in (data / "templates.txt").read_text("utf-8-sig").splitlines()
                 if t.strip()]
    with open(data / "FakeNameGenerator.com_3000.csv", encoding="utf-8-sig") as fh:
        people = list(csv.DictReader(fh))
    orgs = [r.split(",")[0] for r in
            (data / "companies_and_organizations.csv").read_text("utf-8").splitlines()[1:200]]
    rng = random.Random(seed)
    out: list[Sample] = []
    slot = re.compile(r"{{\s*(\w+)\s*}}")
    for template in templates:
        for _ in range(fills):
            p = rng.choice(people)
            values = {
                "person": f"{p['GivenName']} {p['Surname']}", "name": f"{p['GivenName']} "
                f"{p['Surname']}", "first_name": p["GivenName"], "last_name": p["Surname"],
                "name_female": f"{p['GivenName']} {p['Surname']}",
                "name_male": f"{p['GivenName']} {p['Surname']}",
                "first_name_male": p["GivenName"], "first_name_female": p["GivenName"],
                "first_name_nonbinary": p["GivenName"], "last_name_male": p["Surname"],
                "last_name_female": p["Surname"], "prefix": p["Title"],
                "prefix_male": p["Title"], "prefix_female": p["Title"],
                "building_number": str(rng.randrange(1, 400)), "secondary_address": "Apt. 4",
                "state_abbr": p["State"], "date_time": "Monday 9am", "day_of_week": "Monday",
                "date_of_birth": p["Birthday"], "url": f"https://{p['Domain']}",
                "ssn": f"{rng.randrange(100, 666)}-{rng.randrange(10, 99)}-"
                f"{rng.randrange(1000, 9999)}", "ip_address": f"10.{rng.randrange(255)}.0.7",
                "us_driver_license": "D1234567", "nation_woman": "Greenlander",
                "nation_plural": "Greenlanders",
                "email": p["EmailAddress"],
                "phone_number": f"+{p['TelephoneCountryCode']} {p['TelephoneNumber']}",
                "credit_card_number": luhn_card(rng), "iban": iban(rng),
                "city": p["City"], "country": p["CountryFull"], "address":
                f"{p['StreetAddress']}, {p['City']}", "street_name": p["StreetAddress"],
                "organization": rng.choice(orgs) if orgs else p["Company"],
                "company": p["Company"], "age": p["Age"], "job": p["Occupation"],
                "nationality": p["CountryFull"], "postcode": p["ZipCode"],
                "zipcode": p["ZipCode"], "year": str(rng.randrange(1950, 2024)),
            }  # fmt: skip
            text, pos = "", 0
            gold: list[tuple[int, int, str]] = []
            ignore: list[tuple[int, int]] = []
            for m in slot.finditer(template):
                text += template[pos : m.start()]
                key = m.group(1)
                value = values.get(key, "7")
                if key in LABEL:
                    gold.append((len(text), len(text) + len(value), LABEL[key]))
                elif key in IGNORE:
                    ignore.append((len(text), len(text) + len(value)))
                text += value
                pos = m.end()
            text += template[pos:]
            out.append(Sample(text, gold, ignore))
    return out


Detect = Callable[[str], Sequence[Entity]]


def regex_detector() -> Detect:
    rules = [
        ("EMAIL_ADDRESS", re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")),
        ("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b")),
        ("CREDIT_CARD", re.compile(r"\b(?:\d{4}[ -]?){3}\d{4}\b")),
        ("PHONE_NUMBER", re.compile(r"(?<!\w)\+?\d[\d ()-]{6,}\d")),
    ]

    def detect(text: str) -> list[Entity]:
        out: list[Entity] = []
        taken: list[tuple[int, int]] = []
        for cls, rx in rules:
            for m in rx.finditer(text):
                if any(m.start() < e and s < m.end() for s, e in taken):
                    continue
                taken.append(m.span())
                out.append(Entity(cls, m.start(), m.end(), 1.0))
        return out

    return detect


def scanner_detector() -> Detect:
    scanner = SecretScanner()
    return lambda text: [Entity("SECRET", f.start, f.end, 1.0) for f in scanner.scan(text)]


def score(samples: list[Sample], detect: Detect) -> dict[str, tuple[float, float, float]]:
    tp = dict.fromkeys(CLASSES, 0)
    fn = dict.fromkeys(CLASSES, 0)
    fp = dict.fromkeys(CLASSES, 0)
    for s in samples:
        preds = [e for e in detect(s.text) if set(e.classes) & set(CLASSES)
                 or e.entity_type == "SECRET"]
        used: set[int] = set()
        for gs, ge, cls in s.gold:
            hit = None
            for i, e in enumerate(preds):
                if cls in e.classes or e.entity_type == "SECRET":
                    overlap = min(ge, e.end) - max(gs, e.start)
                    if overlap * 2 >= ge - gs:
                        hit = i
                        break
            if hit is None:
                fn[cls] += 1
            else:
                tp[cls] += 1
                used.add(hit)
        for i, e in enumerate(preds):
            if i not in used and not any(e.start < b and a < e.end for a, b in s.ignore):
                cls = next((c for c in e.classes if c in CLASSES), None)
                if cls is not None:
                    fp[cls] += 1
    out = {}
    for cls in (*CLASSES, "ALL"):
        t = sum(tp.values()) if cls == "ALL" else tp[cls]
        n = sum(fn.values()) if cls == "ALL" else fn[cls]
        f = sum(fp.values()) if cls == "ALL" else fp[cls]
        p = t / (t + f) if t + f else 0.0
        r = t / (t + n) if t + n else 0.0
        out[cls] = (p, r, 2 * p * r / (p + r) if p + r else 0.0)
    return out


def _ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}x" if y else "inf (baseline 0)"


def quality(fills: int) -> None:
    samples = build_set(fills)
    gold = {c: sum(1 for s in samples for *_, g in s.gold if g == c) for c in CLASSES}
    print(f"labelled set: {len(samples)} sentences from presidio-evaluator templates, "
          f"gold spans {gold}")
    policy = policy_for_config(Config())
    t0 = time.perf_counter()
    policy.detector.warm()
    print(f"presidio + spaCy load: {time.perf_counter() - t0:.2f} s")
    results = {}
    for name, detect in [("bastion (presidio+spaCy+scanner)", policy.detector.detect),
                         ("regex-only", regex_detector()),
                         ("secret scanner alone", scanner_detector())]:
        t0 = time.perf_counter()
        results[name] = score(samples, detect)
        ms = (time.perf_counter() - t0) * 1000 / len(samples)
        print(f"\n{name}: {ms:.1f} ms/sentence")
        print(f"  {'class':14} {'precision':>9} {'recall':>7} {'F1':>6}")
        for cls, (p, r, f) in results[name].items():
            print(f"  {cls:14} {p:9.3f} {r:7.3f} {f:6.3f}")
    ours = results["bastion (presidio+spaCy+scanner)"]["ALL"]
    for base in ("regex-only", "secret scanner alone"):
        b = results[base]["ALL"]
        print(f"ratio vs {base}: recall {_ratio(ours[1], b[1])}, F1 {_ratio(ours[2], b[2])}")


async def latency(requests: int) -> None:
    from bastion.llm.embedded import EmbeddedModel

    model = EmbeddedModel.load(n_ctx=2048)
    router = PrivacyRouter(model, model, policy_for_config(Config()))
    router.policy.detector.warm()
    settings = ChatSettings(max_tokens=16)
    rng = random.Random(3)
    first = ["Olivia", "Marcus", "Priya", "Tomasz", "Aiko", "Kwame", "Lucia", "Henrik"]
    last = ["Bennett", "Okafor", "Raman", "Nowak", "Sato", "Mensah", "Ferreira", "Lund"]

    def fresh(i: int) -> list[Message]:
        n = f"{rng.choice(first)} {rng.choice(last)}"
        return [Message("system", "You are bastion, a helpful assistant."),
                Message("user", f"Hi, I am {n} ({n.split()[0].lower()}{i}@example.com)."),
                Message("user", f"Write a two-line note to {n} about invoice {i}.")]

    history = fresh(0)
    for i in range(3):
        history += [Message("assistant", f"Noted, reply {i}."), Message("user", f"More {i}?")]

    async def run(target: object, msgs: list[Message]) -> float:
        t0 = time.perf_counter()
        async for ev in target.chat(msgs, [], settings=settings):  # type: ignore[attr-defined]
            if isinstance(ev, TextDelta):
                pass
        return time.perf_counter() - t0

    await run(model, fresh(999))  # warm-up
    for label, make in [("fresh 3-message request", fresh),
                        ("9-message conversation, older messages cached",
                         lambda i: [*history, Message("user", f"And item {i}, for Lucia?")])]:
        direct, routed = [], []
        for i in range(requests):
            msgs = make(i)
            direct.append(await run(model, msgs))
            msgs = make(i + 10_000)
            routed.append(await run(router, msgs))
        d, r = statistics.median(direct), statistics.median(routed)
        print(f"\n{label}: direct p50 {d * 1000:.0f} ms, via router p50 {r * 1000:.0f} ms, "
              f"added {(r - d) * 1000:+.0f} ms ({r / d:.2f}x)")
        t0 = time.perf_counter()
        for i in range(requests):
            router.policy.analyze(make(i + 20_000))
        print(f"  router analysis alone: {(time.perf_counter() - t0) * 1000 / requests:.1f} "
              "ms/request")
    await model.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fills", type=int, default=2, help="fills per template")
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    quality(args.fills)
    asyncio.run(latency(args.requests))


if __name__ == "__main__":
    main()
