"""Ground a tool call's argument values in the user's words.

A small model invents values (``200`` for "$200,000", ``Bahia`` for "Brazil") and skips
options the request plainly asks for ("including human impact"). The helpers here read the
request for what it says -- numbers with their units and multipliers, the enum values and
documented options it names, the parameters it mentions and whether it turns them on or off
-- so the fill step can constrain each argument to values the request supports.

All of it is general text processing over the tool's own schema and docs.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from bastion.llm import _relevance

# -- words ----------------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?")
_CAMEL = _relevance._CAMEL  # identifiers split the same way as for relevance


def word_stems(text: str) -> list[str]:
    """Return the stems of every word of ``text`` in order (identifiers split)."""
    return [_relevance._stem(w) for w in _TOKEN.findall(_CAMEL.sub(" ", text.replace("_", " ")))]


def word_stems_raw(text: str) -> list[str]:
    """Return the words of ``text`` in order, lower-cased and unstemmed (identifiers split)."""
    return [w.lower() for w in _TOKEN.findall(_CAMEL.sub(" ", text.replace("_", " ")))]


def same_word(a: str, b: str) -> bool:
    """Whether two stems are the same word: equal, or sharing a long common prefix
    (``standardize``/``standardization``, ``include``/``includ``; a typo's tail)."""
    if a == b:
        return True
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n >= 5 and n >= 0.7 * min(len(a), len(b))


def phrase_at(value: str, query: Sequence[str]) -> int:
    """Return where ``value``'s words occur contiguously in the query stems, or -1."""
    words = word_stems(value)
    if not words:
        return -1
    for i in range(len(query) - len(words) + 1):
        if all(same_word(w, query[i + j]) for j, w in enumerate(words)):
            return i
    return -1


# -- values the request names ---------------------------------------------------------------


def named_values(options: Sequence[Any], query: str) -> list[Any]:
    """Return the options (enum values, documented choices) the request names, in the
    request's order: whole phrases first (``violin lessons``); if none occurs whole, the
    options at least half of whose words occur (``disabled people`` -> ``Disabled Access``)."""
    q = word_stems(query)
    low = [w.lower() for w in _TOKEN.findall(query)]
    hits: list[tuple[int, Any]] = []
    for o in options:
        if isinstance(o, str):
            at = phrase_at(o, q)
            if at < 0 and re.fullmatch(r"[A-Za-z]{3,}", o):  # 'asc' for "ascending"
                at = next((i for i, w in enumerate(low) if w.startswith(o.lower())), -1)
            if at >= 0:
                hits.append((at, o))
    if not hits:
        qset = set(q)
        content = _relevance.terms(query)
        for o in options:
            if not isinstance(o, str):
                continue
            words = [w for w in word_stems(o) if w.lower() not in _relevance._STOP]
            found = [w for w in words if any(same_word(w, x) for x in qset)]
            if words and found and 2 * len(found) >= len(words):
                pos = min(q.index(x) for x in q if any(same_word(f, x) for f in found))
                if any(same_word(f, c) for f in found for c in content):
                    hits.append((pos, o))
    hits.sort(key=lambda h: h[0])
    out: list[Any] = []
    for _, o in hits:
        if o not in out:
            out.append(o)
    return out


_DOC_OPTION = re.compile(r"'([^'\n]{1,40})'|\"([^\"\n]{1,40})\"")


def doc_options(description: str) -> list[str]:
    """Return the quoted choices a parameter's description documents (``'Celsius'``)."""
    return [a or b for a, b in _DOC_OPTION.findall(description or "")]


# -- numbers -------------------------------------------------------------------------------

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "dozen": 12, "twice": 2, "once": 1, "half": 0.5, "single": 1,
    "double": 2, "triple": 3, "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALE = {
    "hundred": 100, "thousand": 1_000, "k": 1_000, "million": 1_000_000, "m": 1_000_000,
    "mn": 1_000_000, "billion": 1_000_000_000, "bn": 1_000_000_000, "b": 1_000_000_000,
    "trillion": 1_000_000_000_000,
}  # fmt: skip
_NUMBER = re.compile(
    r"(?<![\w.])(?P<neg>-\s?)?(?P<cur>\$)?(?P<neg2>-)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
    r"(?:\s?(?P<pct>%|percent\b)|(?P<suffix>[kKmMbB]n?)\b"
    r"|\s?(?P<word>thousand|million|billion|trillion)\b)?"
)
_WORD_NUMBER = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_TENS) + r")(?:[\s-](?P<unit1>" + "|".join(_UNITS) + r"))?"
    r"|(?P<unit>" + "|".join(_UNITS) + r"))\b"
    r"(?:\s(?P<scale>hundred|thousand|million|billion)\b)?",
    re.IGNORECASE,
)
# number words too ambiguous to count on their own ("second" is also a unit of time)
_WEAK = frozenset(["first", "second", "single", "once"])


def _clean(x: float) -> int | float:
    return int(x) if float(x).is_integer() and abs(x) < 1e15 else round(x, 10)


def numbers(text: str) -> list[list[int | float]]:
    """Return each number the text gives, as the values it may stand for.

    ``$200,000`` -> ``[200000]``; ``3%`` -> ``[3, 0.03]``; ``$1.2M`` -> ``[1200000]``;
    ``-$100`` -> ``[-100]``; ``five`` -> ``[5]``; ``twenty-one`` -> ``[21]``; ``100m`` and
    ``100 m`` stay ``[100]`` (metres) unless written as money (``$100m``).
    """
    out: list[list[int | float]] = []
    for m in _NUMBER.finditer(text):
        x = float(m.group("num").replace(",", ""))
        if m.group("neg") or m.group("neg2"):
            x = -x
        if m.group("pct"):
            out.append([_clean(x), _clean(x / 100)])
            continue
        suffix = m.group("suffix") or ""
        word = (m.group("word") or "").lower()
        if word:
            out.append([_clean(x * _SCALE[word])])
        elif suffix and (m.group("cur") or suffix in ("k", "M", "B", "bn", "Bn", "mn")):
            out.append([_clean(x * _SCALE[suffix.lower()])])  # $5k, 2.5k, $1M, 3bn
        elif suffix == "K":  # 298K is kelvin, 50K may be thousands
            out.append([_clean(x), _clean(x * 1000)])
        else:  # 100m, 5b: metres, a label
            out.append([_clean(x)])
    for m in _WORD_NUMBER.finditer(text):
        word = (m.group("unit") or "").lower()
        if word in _WEAK and not m.group("scale"):
            continue
        if m.group("tens"):
            w: float = _TENS[m.group("tens").lower()]
            if m.group("unit1"):
                w += _UNITS[m.group("unit1").lower()]
        else:
            w = _UNITS[word]
        if m.group("scale"):
            w *= _SCALE[m.group("scale").lower()]
        out.append([_clean(w)])
    return out


_PERCENT_DOC = re.compile(r"percent|percentage|%", re.IGNORECASE)


def number_candidates(text: str, *, integer: bool, doc: str = "") -> list[int | float]:
    """Return the distinct values the text's numbers may stand for (integers only if asked).

    A percentage given to a fractional parameter is a fraction (``5%`` -> 0.05) unless the
    parameter's doc says it takes a percentage (``as a percentage``) and not a decimal.
    """
    as_percent = bool(_PERCENT_DOC.search(doc)) and "decimal" not in doc.lower()
    vals: list[int | float] = []
    for group in numbers(text):
        if len(group) == 2 and group[1] * 100 == group[0] and not integer:
            group = [group[0]] if as_percent else [group[1]]  # a percentage
        for v in group:
            if integer and not float(v).is_integer():
                continue
            v = int(v) if integer else v
            if v not in vals:
                vals.append(v)
    return vals


# -- dates ---------------------------------------------------------------------------------

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MON = r"(?P<mon>(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*)"
_DATES = [
    re.compile(_MON + r"\.?\s*(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s*(?P<y>\d{4})\b", re.I),
    re.compile(
        r"\b(?P<d>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MON + r"\.?,?\s+(?P<y>\d{4})\b", re.I
    ),
    re.compile(r"\b(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})\b"),
    re.compile(r"\b(?P<m>\d{1,2})[-/.](?P<d>\d{1,2})[-/.](?P<y>\d{4})\b"),
]
_FORMAT = re.compile(
    r"\b(yyyy|yyy|yy|mm|dd|month|day|year)([-/. ])(yyyy|yyy|yy|mm|dd|month|day|year)\2"
    r"(yyyy|yyy|yy|mm|dd|month|day|year)\b",
    re.IGNORECASE,
)


def dates(text: str) -> list[tuple[int, int, int]]:
    """Return the calendar dates the text gives, as (year, month, day)."""
    out: list[tuple[int, int, int]] = []
    for rx in _DATES:
        for m in rx.finditer(text):
            g = m.groupdict()
            month = _MONTHS.index(g["mon"][:3].lower()) + 1 if g.get("mon") else int(g["m"])
            y, d = int(g["y"]), int(g["d"])
            if 1 <= month <= 12 and 1 <= d <= 31 and (y, month, d) not in out:
                out.append((y, month, d))
    return out


def date_format(doc: str) -> str | None:
    """Return the ``strftime`` format a parameter's doc asks for (``yyyy-mm-dd`` ->
    ``%Y-%m-%d``; ``month-day-year`` -> ``%m-%d-%Y``), or None."""
    m = _FORMAT.search(doc or "")
    if not m:
        return None
    codes = {"yyyy": "%Y", "yyy": "%Y", "yy": "%y", "year": "%Y", "mm": "%m", "month": "%m",
             "dd": "%d", "day": "%d"}  # fmt: skip
    parts = [codes[m.group(i).lower()] for i in (1, 3, 4)]
    if sorted(parts) != ["%Y", "%d", "%m"] and sorted(parts) != ["%d", "%m", "%y"]:
        return None
    return m.group(2).join(parts)


def formatted_dates(text: str, doc: str) -> list[str]:
    """Return the text's dates written in the format the doc asks for (none if it asks none)."""
    fmt = date_format(doc)
    if not fmt:
        return []
    import datetime as _dt

    out = []
    for y, mo, d in dates(text):
        try:
            out.append(_dt.date(y, mo, d).strftime(fmt))
        except ValueError:
            continue
    return out


# -- parameters the request mentions -------------------------------------------------------

# Name words that say little about the value (``allow_transfer``: "transfer" is the evidence).
_GENERIC = frozenset(
    ["allow", "include", "includ", "use", "is", "has", "enable", "with", "show", "get",
     "type", "name", "value", "flag", "option", "mode", "level", "format", "specific",
     "should", "want", "need", "add", "apply", "consider", "return", "list"]
)  # fmt: skip
_NEGATION = frozenset(
    ["no", "not", "without", "don", "dont", "doesn", "exclude", "excluding", "never", "skip",
     "disable", "ignore", "ignoring", "omit", "nor", "except"]
)  # fmt: skip


def name_mention(name: str, query: str, tool_words: set[str]) -> int:
    """Return where the request mentions a parameter by name, or -1.

    Every non-generic word of the name (``include_human_impact`` -> human, impact) must
    occur in the request; words that name the tool's own subject (``temp`` in a temperature
    tool) are not evidence on their own.
    """
    words = [w for w in word_stems(name) if w not in _GENERIC and len(w) > 2]
    if not words:
        return -1
    q = word_stems(query)
    positions: list[int] = []
    for w in words:
        at = next((i for i, x in enumerate(q) if same_word(w, x)), -1)
        if at < 0:
            return -1
        positions.append(at)
    if all(any(same_word(w, t) for t in tool_words) for w in words):
        return -1
    return min(positions)


def polarity(query: str, at: int) -> bool:
    """Whether the mention at word index ``at`` turns the option on (no negation just before)."""
    words = _TOKEN.findall(_CAMEL.sub(" ", query.replace("_", " ")))
    before = [w.lower() for w in words[max(0, at - 3) : at]]
    return not any(w in _NEGATION for w in before)


# -- what the request hands over as a value ---------------------------------------------------

_QUOTED = re.compile(r"(?:^|(?<=\s))'([^'\n]{1,200})'(?=\W|$)|\"([^\"\n]{1,200})\"")
_AFTER_COLON = re.compile(r"(?<!:):\s+(\S.*)$", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def quoted(text: str) -> list[tuple[int, int]]:
    """Return the ``(start, end)`` offsets of each quoted phrase's inner text."""
    return [(m.start(m.lastindex or 1), m.end(m.lastindex or 1)) for m in _QUOTED.finditer(text)]


def payloads(text: str) -> list[str]:
    """Return the text a request hands over to be passed on as it is: its quoted phrases,
    and what follows a colon ("ping kim: don't forget the keys"; "note: router moved to
    port 8443"), to the end and to the end of its first sentence. A colon inside a time or
    an address (``18:00``, ``http://``) is no hand-over."""
    out: list[str] = []

    def add(v: str) -> None:
        v = " ".join(v.split()).strip().rstrip(",;")
        if v and v not in out:
            out.append(v)

    for a, b in quoted(text):
        add(text[a:b])
    for line in text.splitlines():
        m = _AFTER_COLON.search(line)
        if m:
            rest = m.group(1)
            add(rest)
            add(_SENTENCE_END.split(rest, maxsplit=1)[0])
    return out


_NAMING = frozenset(["called", "named", "titled"])
_RUN_STOP = frozenset(
    ["a", "an", "the", "in", "on", "at", "for", "of", "to", "from", "with", "by", "and", "or",
     "is", "are", "was", "be", "my", "me", "i", "you", "your", "our", "this", "that", "it",
     "its", "please", "pls", "some", "any", "all", "again", "now", "up", "down", "into",
     "what", "what's", "whats", "which", "who", "how", "where", "when", "why", "is", "are",
     "new", "old", "current", "next", "last", "previous", "recent", "upcoming", "same",
     "other", "another", "first", "every", "each"]
)  # fmt: skip
_WORDS = re.compile(r"[\w][\w'.+-]*[\w]|[\w]")


def anchored_names(name: str, query: str, tool_words: set[str], most: int = 4) -> list[str]:
    """Return the names a request gives next to the word for what they name.

    "the infra repo", "the home assistant container": the run of content words (at most
    ``most``, no bare number) just before the parameter's own name word (or, when its name
    is generic, a word of the tool's name: ``container`` for ``container_restart``'s
    ``name``); "a note called Passwords policy": the run after "called"/"named"/"titled".
    A name word that is capitalised is part of a proper name ("Premier League"), and one
    followed by a capitalised word introduces it ("the player LeBron James"): neither
    anchors a run. Empty when the request gives none.
    """
    toks = [(m.group(0), m.start(), m.end()) for m in _WORDS.finditer(query)]
    stems = [_relevance._stem(t[0]) for t in toks]
    if quoted(query):
        return []  # a quoted phrase is the name the request gives
    own = [w for w in word_stems(name) if w not in _GENERIC and w not in _RUN_STOP and len(w) > 2]
    anchors = own or [w for w in tool_words if w not in _GENERIC and len(w) > 2]
    out: list[str] = []

    def is_anchor(i: int) -> bool:
        return any(same_word(a, stems[i]) for a in anchors)

    def run(idx: range, step: int) -> None:
        words: list[int] = []
        for i in idx:
            w = toks[i][0].lower()
            if (
                i == 0  # a request's first word is its verb ("Given", "Find"), not a name
                or w in _RUN_STOP
                or w in _NAMING
                or is_anchor(i)
                or re.fullmatch(r"[\d.,]+", w)
            ):
                break
            gap = query[toks[i][2] : toks[i + 1][1]] if step < 0 else query[
                toks[i - 1][2] : toks[i][1]]  # fmt: skip
            if (words or step < 0) and re.search(r"[.!?;:,()'\"]", gap):
                break  # a run does not cross punctuation
            words.append(i)
        caps = [i for i in words if toks[i][0][:1].isupper()]
        if step < 0 and caps and len(caps) < len(words):  # "offer Chinese cuisine"
            words = [i for i in words if i >= min(caps)]
        if 0 < len(words) <= most:
            v = query[toks[min(words)][1] : toks[max(words)][2]]
            if v not in out:
                out.append(v)

    for i in range(len(toks)):
        if toks[i][0].lower() in _NAMING:
            run(range(i + 1, len(toks)), 1)
        elif is_anchor(i) and not toks[i][0][:1].isupper():
            nxt = toks[i + 1][0] if i + 1 < len(toks) else ""
            if not nxt[:1].isupper():
                run(range(i - 1, -1, -1), -1)
    return out


_WORD_NUM = "|".join([*_UNITS, *_TENS])
_COUNTED = re.compile(
    r"(?<![\w.])(?:\d+(?:[.,]\d+)?|" + _WORD_NUM + r")\s*(%|[A-Za-z]{3,})", re.IGNORECASE
)


def counted(
    name: str, doc: str, query: str, tool_words: Collection[str] = frozenset()
) -> bool:
    """Whether the request gives a number of what a number parameter counts or measures, by
    its name or docs: "the last 3 commits" for ``count`` ("How many commits."), "30%" for
    ``brightness`` ("Brightness in percent"). A word of the tool's own name is not a unit
    ("5 files" for ``read_file``'s ``offset``)."""
    doc = doc.replace("/", " per ")  # "g/mile" is a rate
    words = [*_TOKEN.findall(name.replace("_", " ")), "", *_TOKEN.findall(doc)]
    want = {
        _relevance._stem(w)
        for prev, w in zip(["", *words], words, strict=False)
        if len(w) > 2 and w.lower() not in _relevance._STOP and prev.lower() != "per"
    }
    want = {w for w in want if not any(same_word(w, t) for t in tool_words)}
    for m in _COUNTED.finditer(query):
        unit = "percent" if m.group(1) == "%" else m.group(1).lower()
        if unit in _relevance._STOP:
            continue
        if any(same_word(_relevance._stem(unit), w) for w in want):
            return True
    return False
