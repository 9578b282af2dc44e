from __future__ import annotations

import random

from bastion.privacy.detect import Entity
from bastion.privacy.placeholders import Pseudonymizer, StreamRestorer


def _ps() -> Pseudonymizer:
    p = Pseudonymizer()
    p.placeholder("PERSON", "Ada Lovelace")
    p.placeholder("PERSON", "Alan Turing")
    p.placeholder("EMAIL_ADDRESS", "ada@example.org")
    return p


def test_same_value_same_placeholder_and_numbering() -> None:
    p = Pseudonymizer()
    text = "Ada Lovelace met Alan Turing; Ada Lovelace left."
    ents = [Entity("PERSON", 0, 12, 0.9), Entity("PERSON", 17, 28, 0.9),
            Entity("PERSON", 30, 42, 0.9)]
    out = p.redact(text, ents)
    assert out == "<PERSON_1> met <PERSON_2>; <PERSON_1> left."
    assert p.restore(out) == text


def test_user_typed_placeholders_are_never_reused() -> None:
    p = Pseudonymizer(["literally <PERSON_1> in my text"])
    assert p.placeholder("PERSON", "Bob Smith") == "<PERSON_2>"
    # a placeholder the remote echoes that we never handed out stays as it is
    assert p.restore("<PERSON_1> and <PERSON_2>") == "<PERSON_1> and Bob Smith"


def test_bare_and_other_bracket_forms_are_restored() -> None:
    p = _ps()
    assert p.restore("to: EMAIL_ADDRESS_1, PERSON_1.") == "to: ada@example.org, Ada Lovelace."
    assert p.restore("{PERSON_2} [PERSON_1]") == "Alan Turing Ada Lovelace"
    assert p.restore("PERSON_10 MY_PERSON_1 PERSON_1x") == "PERSON_10 MY_PERSON_1 PERSON_1x"


def test_restore_data_keys_and_nested_values() -> None:
    p = _ps()
    data = {"to": ["<EMAIL_ADDRESS_1>"], "body": {"<PERSON_2>": "hi <PERSON_1>"}, "n": 3}
    assert p.restore_data(data) == {
        "to": ["ada@example.org"], "body": {"Alan Turing": "hi Ada Lovelace"}, "n": 3
    }


def test_stream_restore_any_chunking() -> None:
    p = _ps()
    remote = ("Dear <PERSON_1>, <PERSON_2> wrote to <EMAIL_ADDRESS_1>. a<b and <PERSON_9> stay. "
              "Bare PERSON_1 and [PERSON_2] too; PERSON_12 and XPERSON_1 are other words. <")
    want = ("Dear Ada Lovelace, Alan Turing wrote to ada@example.org. a<b and <PERSON_9> stay. "
            "Bare Ada Lovelace and Alan Turing too; PERSON_12 and XPERSON_1 are other words. <")
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(remote)), rng.randint(1, 25)))
        chunks = [remote[i:j] for i, j in zip([0, *cuts], [*cuts, len(remote)], strict=True)]
        r = StreamRestorer(p)
        shown = "".join(r.feed(c) for c in chunks) + r.flush()
        assert shown == want
    # one character at a time: no piece of a known placeholder is ever shown
    r = StreamRestorer(p)
    pieces = [r.feed(ch) for ch in remote]
    assert not any(x.startswith(("<E", "<PERSON_1", "<PERSON_2")) for x in pieces)
    assert "<PERSON_9" in "".join(pieces)  # an unknown one passes once it cannot match
    assert "".join(pieces) + r.flush() == want


def test_stream_without_mapping_passes_through() -> None:
    r = StreamRestorer(Pseudonymizer())
    assert r.feed("<PERSON_1") == "<PERSON_1"
    assert r.flush() == ""
