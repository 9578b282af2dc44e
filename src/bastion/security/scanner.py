"""Secret scanner: well-known token formats, high-entropy strings, the exact values bastion holds.

The scanner runs on every tool output (gateway stage), every model-bound message (the model
guard) and every audit record (through :class:`~bastion.security.redact.Redactor`). Held values
are matched raw and in the encodings a tool might print them in: base64 (standard and URL-safe,
at any alignment inside a longer base64 stream), hex (both cases) and URL-encoding.

Policy ``redact`` masks what it finds; ``block`` withholds the whole text.
"""

from __future__ import annotations

import base64
import itertools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, quote_plus

from bastion.security._scanner_context import (
    PUBLIC_HINTS,
    PUBLIC_SHAPES,
    b64decode_loose,
    base64_of_text,
    key_material,
    name_words,
    names_descriptive,
    names_metadata,
    names_public,
    names_secret,
    names_weak_key,
    placeholder,
    plausible_value,
    shannon_entropy,
)
from bastion.security._scanner_rules import (
    ASSIGNMENT_KEYWORDS,
    RULES,
    VENDOR_PREFIXES,
    VENDOR_TOKEN,
    Rule,
)

__all__ = ["MASK", "Finding", "Policy", "ScanResult", "SecretScanner", "encodings",
           "shannon_entropy"]

MASK = "[REDACTED]"
Policy = Literal["redact", "block"]
MIN_HELD_LEN = 6
# A run of 24+ token characters. Searched as "a character outside the set, then the run":
# inside a word the first item fails at once, so the scan is linear (a bare run pattern, or
# one with a look-behind, retries every position of every shorter word: 2x slower). The
# text's first run, which has no character before it, is matched on its own.
_ENTROPY_CANDIDATE = re.compile(r"[^A-Za-z0-9+/_-](?P<run>[A-Za-z0-9+/_-]{24,}={0,2})"
                                r"(?![A-Za-z0-9+/_=-])")
_FIRST_CANDIDATE = re.compile(r"(?P<run>[A-Za-z0-9+/_-]{24,}={0,2})(?![A-Za-z0-9+/_=-])")
# One-case hex with separators (commit ids, digests, UUIDs): never a guess (``_looks_random``
# says no to each); skipped before any other work on the run.
_ONE_CASE_HEX = re.compile(r"[0-9a-f_/+-]+=*|[0-9A-F_/+-]+=*")
_WORD = re.compile(r"[A-Za-z0-9_]")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=.~-]{16}")  # ~: Azure client secrets
# rules that can match without a long run (URL and command-line passwords can be short)
_SHORT_KEYWORDS = ("://", "-----BEGIN", "sshpass", "mysql", "mariadb", " login", "redis-cli",
                   "htpasswd", "--password-stdin", " -p ", " -P ", " -Password", " -password",
                   "Credential", "Authentication", "BasicAuth", "DigestAuth", "auth=", "auth =",
                   "DirectoryEntry")
# Public text that only looks secret: a reference to a secret (secret://backend/path#key, whose
# parts are names, not random) and an SPKI pin (sha256/ + the base64 of a public key's hash).
# Inside them, the guesses (entropy, ``secret:`` read as an assignment) are dropped; held
# values and the named token formats never are.
_REFERENCE = re.compile(r"secret://(?:env|sops|vault|openbao)/[A-Za-z0-9_./-]{1,200}"
                        r"(?:#[A-Za-z0-9_.-]{1,64})?")
_PIN = re.compile(r"(?<![A-Za-z0-9+/])sha256/[A-Za-z0-9+/]{43}=")
_GUESSES = ("high_entropy", "password_assignment", "curl_user_password", "k8s_secret_data")
# Findings whose value is checked for being a stand-in (``xxxx``, ``EXAMPLE``, ``12345678``):
# every format and context rule; never held values (exact) or private-key blocks.
_NOT_CHECKED = ("held_value", "private_key")
# Rules that take whatever follows a flag or field: the value must also be plausible (not a
# ``$VAR`` reference, a word, a short number).
_VALUE_CHECKED = frozenset({"cli_password", "cli_password_stdin", "netrc_password",
                            "call_password", "prose_password",
                            "authorization_header", "access_id", "bearer_token"})
# Prefixes of the known formats: a run that starts with one is that issuer's key only when
# it has that issuer's shape (the format rule), never by looking random (known-format
# validation: ``AIza`` + 42 characters is not a Google API key, whatever its entropy).
_FORMAT_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA",
                    "ANVA", "APKA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
                    "glpat-", "xox", "xapp-", "sk-", "hf_", "api_org_", "AIza", "GOCSPX-",
                    "sk_live_", "sk_test_", "rk_live_", "rk_test_", "npm_", "pypi-",
                    "AGE-SECRET-KEY-")
_PREFIX3 = frozenset(p[:3] for p in (*_FORMAT_PREFIXES, *VENDOR_PREFIXES))
_IDENT_CHARS = re.compile(r"[A-Za-z0-9_.-]*")
_IDENT_SET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
_VALUE_OPENERS = frozenset(":=?.+!,\"'`@[>sSv%")  # operators, quotes, ``value=``, ``string x =``
# After a secret-named identifier: a closing quote/bracket, an optional type, an operator
# (``=``, ``:``, ``:=``, ``::=``, ``?=``, ``.=``, ``=>``, ``==``, ``!=``, ``,`` between call
# arguments, ``value=`` of a key/value element) or just a quote, then the value.
_AFTER_NAME = re.compile(
    r"""[\]"'`)]{0,3}(?:\[[^\]\n]{0,40}\][\]"'`)]{0,2})?(?:[ \t]+(?:string|String|str))?"""
    # a type annotation before ``=`` (``token: str =``, ``const key: string =``)
    r"""(?:[ \t]*:[ \t]*(?:str|string|String|&(?:'static[ \t]+)?str|std::string|SecretStr"""
    r"""|Optional\[str\]|str[ \t]*\|[ \t]*None)(?=[ \t]*=))?"""
    r"""[ \t]*(?P<op>:{1,3}=|[?.+]=|={1,3}>?|!==?|:(?!:)|,|\s+value\s*=|%3[dD]|(?=["'`@]))"""
    r"""[ \t]*@?(?:!!str[ \t]+)?""")
# A YAML block scalar after ``name:``: the value is on the next, indented line
_YAML_BLOCK = re.compile(r"[|>][-+]?[ \t]*\n[ \t]+(?=\S)")
# A YAML mapping key at the start of its line (``  - key:``), and a plain scalar's words up to
# the end of the line or a `` #`` comment
_YAML_KEY_START = re.compile(r"(?:^|\n)[ \t]*(?:-[ \t]+)?\Z")
_YAML_PLAIN = re.compile(r"[^\s\"'#|>&*!%@`{\[][^\n#]*?(?=[ \t]*(?:\n|$|[ \t]#))")
# An XML attribute that names the element's text (``<entry key="NAME">value</entry>``)
_ATTR_NAME = re.compile(r"""(?:name|key|id|property)=["']\Z""")
# A run of this many token characters with no known format is encoded data (a file, an
# image, a signed blob), not a credential; long credentials (JWTs, session tokens given to
# their names, vendor tokens) are found by their format or their name.
_BLOB = 512
# Dockerfile ``ENV NAME value`` (the form without ``=``)
_DOCKER_ENV = re.compile(r"(?:^|\n)[ \t]*ENV[ \t]+\Z")
_QUOTED = {'"': re.compile(r'"([^"\n]{1,300})"'), "'": re.compile(r"'([^'\n]{1,300})'"),
           "`": re.compile(r"`([^`\n]{1,300})`")}
# An unquoted value that is code: a generic or an index (``List[str]``, ``token[1:-1]``), a
# union type or an annotation's default (``str | None``, ``bool = False``), a built-in type, a
# call, a closing parenthesis and a method (``try_token).load(``), or a ``::`` path
_CODE_VALUE = re.compile(
    r"[A-Za-z_][\w.]*(?:\[|[ \t]*\|[ \t]|[ \t]*=[ \t])"
    r"|(?:str|int|bool|float|bytes|dict|list|tuple|set|frozenset|object|type|Any|None)\b"
    r"|[A-Za-z_]\w*(?:\.\w+)*(?:\(|\)\.)"
    r"|[A-Za-z_-]*::[A-Za-z_]")  # a path in C++/Rust, a CSS pseudo-element (``hover::after``)
# A type name after ``name:`` (``private_key: CertificateIssuerPrivateKeyTypes,``): capitalised
# words run together, letters only
_TYPE_NAME = re.compile(r"[A-Z][a-z]*(?:[A-Z][a-z]+)+")
_LOWER_WORD = re.compile(r"[a-z]{1,12}")  # a word, not a password (outside dotenv lines)
_VALUE_CHARS = frozenset("_-.+/=!@#$%^&*~")  # what may follow letters inside one value
_DOC_FIELD = re.compile(r"[:@](?:param|type|arg|argument|keyword|kwarg|ivar|cvar|var)[ \t]+\Z")
_FUNCTION_WORDS = frozenset({"the", "a", "an", "of", "to", "for", "that", "if", "is", "are",
                             "be", "this", "with", "which", "when", "what", "used", "from",
                             "by", "on", "in", "or", "and", "not", "can", "will", "should"})
# An unquoted value runs to white space; a comma ends it only as a list separator (before a
# space, a quote or the end), not inside the value (``A,.:-@*?!``).
_UNQUOTED = re.compile(r"(?:[^\s\"'`,;&]|,(?=[^\s\"'`,;&])){1,300}")
_REVERSED = re.compile(r"""(["'])([^"'\n]{1,300})\1\s*(?:===?|!==?)\s*$""")
_UPPER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_LINE_START = re.compile(r"(?:^|\n)[ \t]*(?:#[ \t]*)?(?:(?:export|set|SET)[ \t]+)?\Z")
_CURL_USER = re.compile(r"""-(?:u|-user)[ \t=]+["']?([^\s"':]*):["']?([^\s"']+)""")
_NAME_BEFORE = re.compile(
    r"""([A-Za-z0-9_.-]+)["'\]]?\s*(?:[:=]|=>)\s*["'`]?[^\s"'`]{0,300}$"""
    r"""|name=["']([A-Za-z0-9_.-]+)["'][^<>]{0,60}value=["']?$""")
_CASE_FLIPS = re.compile(r"[a-z][A-Z]|[A-Z][a-z]")
_K8S_SECRET = re.compile(r"""^\s*kind:\s*["']?[Ss]ecret["']?\s*$""", re.MULTILINE)
_YAML_DOC = re.compile(r"^---[ \t]*$", re.MULTILINE)
_K8S_DATA_OR_STRING = re.compile(r"^\s*(?P<kind>data|stringData):[ \t]*\n", re.MULTILINE)
_K8S_LINE = re.compile(r"""(?:[ \t]*#[^\n]*\n)*(?P<indent>[ \t]+)(?P<key>[\w.-]+):[ \t]*["']?"""
                       r"""(?:(?P<value>[A-Za-z0-9+/]{4,}={0,2})|(?P<block>[|>][-+]?))?"""
                       r"""["']?[ \t]*(?:\n|$)""")
# ``stringData`` holds the plain values; a block scalar (``key: |``) holds indented lines
_K8S_PLAIN = re.compile(r"""(?:[ \t]*#[^\n]*\n)*(?P<indent>[ \t]+)(?P<key>[\w.-]+):[ \t]*"""
                        r"""(?P<q>["']?)(?P<value>[^\n"']*)(?P=q)[ \t]*(?:\n|$)""")
_K8S_BLOCK_LINE = re.compile(r"(?P<indent>[ \t]+)(?P<value>[A-Za-z0-9+/]{4,}={0,2})[ \t]*(?:\n|$)")
# A value labelled as a digest (``h1:``, ``SHA256:``, ``md5=``) or as the payload of a data
# URI (``data:image/png;base64,``) is a hash or embedded content, not a credential.
_DIGEST_LABEL = re.compile(r"(?:;base64,|(?i:sha(?:1|224|256|384|512)|sha3-(?:256|512)|md5|h1"
                           r"|blake2[bs]?|b3|xxh(?:64|128)|crc32c?)[:=])\Z")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s/@\"'<>]+(?P<path>/[^\s\"'<>]*)")
_QUERY_KEY = re.compile(r"[?&;]([A-Za-z0-9_.-]+)=")
# path words that say the URL itself carries a credential (webhooks, bot tokens, signed links)
_URL_SECRET_PARTS = ("hook", "bot", "token", "secret", "key", "auth", "sig", "cred", "pass",
                     "session", "invite")
_DIGIT = re.compile(r"[0-9]")
_SEPARATORS = re.compile(r"[-_.~/+]")
_DIGIT_FLIPS = re.compile(r"[0-9][A-Za-z]|[A-Za-z][0-9]")
# A run followed by a file extension or a domain's next label (``.../Zq9v...R.tsx``,
# ``<id>.cloudfront.net``) names a file or a host, not a credential
_FILE_EXT = re.compile(r"\.[a-z][a-z0-9]{0,9}(?![A-Za-z0-9+/_=-])")
_ASSIGNMENT_SET = frozenset(ASSIGNMENT_KEYWORDS)
_ALNUM_ONLY = re.compile(r"[^A-Za-z0-9]")
# ``Authorization: <scheme> <credentials>`` written without quotes: the credentials decide
_SCHEME_THEN = re.compile(r"[A-Za-z][\w.-]{0,30}[ \t]+(?P<cred>[^\s\"'`]+)")
_AUTH_PARAM = re.compile(r"[A-Za-z_]+=")
_WORDLIKE = re.compile(r"[A-Za-z]{1,16}[0-9]{0,6}|[0-9]{1,12}[A-Za-z]{0,3}|[0-9a-fA-F]+")


@dataclass(slots=True, frozen=True)
class Finding:
    """One secret found in a text: where, and which rule found it (never the value itself)."""

    rule: str
    start: int
    end: int


@dataclass(slots=True, frozen=True)
class ScanResult:
    """What applying the policy to a text gave."""

    text: str
    findings: tuple[Finding, ...]
    blocked: bool = False

    @property
    def rules(self) -> list[str]:
        """Return the distinct rule names that matched, in order of first match."""
        return list(dict.fromkeys(f.rule for f in self.findings))


def _looks_random(token: str) -> bool:
    """High entropy and mixed character classes: a likely key, not a word, path or digest."""
    n = len(token)
    lower = token.upper() != token
    upper = token.lower() != token
    if _HEX.match(token):
        if not (lower and upper) or n < 32:
            return False  # digests and commit ids (one case); hex keys are caught by context
        flips = len(_CASE_FLIPS.findall(token)) + len(_DIGIT_FLIPS.findall(token))
        return flips >= n / 3  # mixed-case hex, mixed through: not a digest
    digits = _DIGIT.search(token) is not None
    # One case and digits: the digits mixed through (not a word + 42).
    if not (lower and upper) and (
            not digits or n < 24 or len(_DIGIT_FLIPS.findall(token)) < n / 6):
        return False
    if len(set(token)) < 14:
        return False  # too few distinct characters for >= 3.9 bits each
    parts = [p for p in _SEPARATORS.split(token.rstrip("=")) if p]
    if all(_WORDLIKE.fullmatch(p) for p in parts):
        return False  # words, versions and ids joined by separators (a slug, a file name)
    h = shannon_entropy(token)
    if lower and upper and digits:  # random, not CamelCaseWords2 (few case/digit changes)
        case_flips = len(_CASE_FLIPS.findall(token))
        flips = case_flips + len(_DIGIT_FLIPS.findall(token))
        # In a random mixed-case token the case changes all along it (a quarter of its
        # length, median; under a tenth in 1 of 1,000 random 40-character ones); a long run
        # with its capitals only near the ends is one-case data with pieces joined to it
        ok = h >= 4.2 and flips >= n / 4 and (n < 40 or case_flips >= n / 16)
    elif digits:  # one case and digits (mixed through: checked above)
        ok = h >= 4.0
    else:  # mixed case without digits: random, not CamelCaseWords
        ok = n >= 24 and h >= 4.2 and len(_CASE_FLIPS.findall(token)) >= n / 4
    return ok and not base64_of_text(token)


def encodings(value: str) -> set[str]:
    """Return the forms a held value is matched in: raw, base64 (3 alignments), hex, URL-encoded."""
    raw = value.encode()
    out = {value, raw.hex(), raw.hex().upper(), quote(value, safe=""), quote_plus(value)}
    for pad in range(3):
        # The value's bytes at offset ``pad`` of a longer base64 stream: keep only the
        # characters that depend on the value alone (drop the edges that mix with neighbours).
        enc = base64.b64encode(b"\0" * pad + raw).decode().rstrip("=")
        lead = {0: 0, 1: 2, 2: 3}[pad]
        tail = (len(raw) + pad) % 3
        core = enc[lead: len(enc) - (1 if tail else 0)]
        if len(core) >= MIN_HELD_LEN:
            out.add(core)
            out.add(core.replace("+", "-").replace("/", "_"))
    out.add(base64.b64encode(raw).decode())
    out.add(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    return {o for o in out if len(o) >= MIN_HELD_LEN}


class SecretScanner:
    """Finds secrets in text; thread-safe; held values can be added at any time."""

    def __init__(
        self,
        known_values: Iterable[str] = (),
        *,
        policy: Policy = "redact",
        entropy: bool = True,
        rules: Iterable[Rule] = RULES,
    ) -> None:
        self.policy: Policy = policy
        self.entropy = entropy
        self.rules = list(rules)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._owner: dict[str, str] = {}  # matchable form -> the held value it encodes
        self.version = 0  # bumped when held values change (caches of results key on it)
        self._held_re: re.Pattern[str] | None = None
        # One pass over the text finds which keywords occur; only their rules then run.
        self._by_kw: dict[str, list[Rule]] = {}
        self._by_kw_nocase: dict[str, list[Rule]] = {}
        for rule in self.rules:
            table = self._by_kw_nocase if rule.nocase else self._by_kw
            for kw in rule.keywords:
                table.setdefault(kw.lower() if rule.nocase else kw, []).append(rule)
        for kw in ASSIGNMENT_KEYWORDS:
            self._by_kw_nocase.setdefault(kw, [])
        self._kw = list(self._by_kw.items())
        self._kw_nocase = list(self._by_kw_nocase.items())
        # Which case-sensitive rules can match: one search for all of a rule's keywords (a
        # regex alternation finds any of them several times faster than an ``in`` test each).
        self._cased = [(r, _keyword_regex(r.keywords),
                         any(k in _SHORT_KEYWORDS for k in r.keywords))
                        for r in self.rules if not r.nocase]
        for value in known_values:
            self.add_known(value)

    # ---- held values -------------------------------------------------------------------------
    def add_known(self, value: str) -> None:
        """Also match this exact value (and its encodings) wherever it appears."""
        if not value or len(value) < MIN_HELD_LEN:
            return
        forms = encodings(value)
        with self._lock:
            if forms <= self._held:
                return
            self._held |= forms
            for form in forms:
                self._owner.setdefault(form, value)
            self.version += 1
            alts = sorted(self._held, key=len, reverse=True)
            self._held_re = re.compile("|".join(re.escape(a) for a in alts))

    @property
    def held_count(self) -> int:
        """Return how many matchable forms of held values there are."""
        return len(self._held)

    def held_spans(self, text: str) -> list[tuple[int, int, str]]:
        """Return ``(start, end, held value)`` for each held value (in any encoding) in ``text``.

        Only the secrets bastion holds, never format or entropy guesses: this is what is
        masked in what approvers and the audit log see, so an attacker's payload that merely
        looks random stays visible.
        """
        held = self._held_re
        if held is None or len(text) < MIN_HELD_LEN:
            return []
        return [(m.start(), m.end(), self._owner.get(m.group(), m.group()))
                for m in held.finditer(text)]

    # ---- scanning ----------------------------------------------------------------------------
    def scan(self, text: str) -> list[Finding]:
        """Return the secrets in ``text`` (non-overlapping, in order)."""
        if not text or len(text) < MIN_HELD_LEN:
            return []
        found: list[Finding] = []
        held = self._held_re
        # one substring test per held form (fast) before the alternation (a slow scan)
        if held is not None and any(form in text for form in self._held):
            found.extend(Finding("held_value", m.start(), m.end()) for m in held.finditer(text))
        # Every format token has a run of >= 16 token characters; most texts have none, and
        # then only the URL-password rule (short passwords) can match.
        long_run = _LONG_RUN.search(text) is not None
        small = len(text) < 4096  # short texts: ``in`` per keyword costs less than a regex call
        for rule, kw_res, short in self._cased:
            if not (long_run or short):
                continue
            if small:
                if not any(k in text for k in rule.keywords):
                    continue
            elif all(p.search(text) is None for p in kw_res):
                continue
            for m in rule.pattern.finditer(text):
                st = m.start()
                if rule.boundary and st and _WORD.match(text, st - 1):
                    continue
                s, e = m.span(rule.group)
                found.append(Finding(rule.name, s, e))
        lower = text.lower()
        present = [kw for kw, _ in self._kw_nocase if kw in lower]
        if present:
            for kw in present:
                for rule in self._by_kw_nocase[kw]:
                    for pos in _word_starts(lower, (kw,)):
                        hit = rule.pattern.match(text, pos)
                        if hit:
                            s, e = hit.span(rule.group)
                            found.append(Finding(rule.name, s, e))
            kws = [kw for kw in present if kw in _ASSIGNMENT_SET]
            if kws:
                found.extend(_assignments(text, lower, kws))
        if "-u" in text:  # ``curl -u user:password`` / ``--user``
            found.extend(_curl_users(text))
        if "ecret" in text and _K8S_SECRET.search(text):  # a Kubernetes Secret's data values
            found.extend(_k8s_secret_data(text))
        if long_run:  # runs of token characters: prefixed vendor tokens, entropy guesses
            urls = "://" in text
            line_paths: dict[int, list[tuple[int, int]]] = {}  # line start -> its URL paths
            first = _FIRST_CANDIDATE.match(text)
            for m in itertools.chain((first,) if first else (),
                                     _ENTROPY_CANDIDATE.finditer(text)):
                run = m.group("run")
                if run[:3] in _PREFIX3:  # most runs have no known prefix: one set lookup
                    if run.startswith(VENDOR_PREFIXES):
                        st = m.start("run")
                        v = VENDOR_TOKEN.match(text, st)
                        if v is not None and (st == 0 or not _WORD.match(text, st - 1)):
                            found.append(Finding("vendor_token", *v.span()))
                            continue
                    if run.startswith(_FORMAT_PREFIXES):
                        continue  # that issuer's format decides (a near miss is not its key)
                if not self.entropy or len(run) >= _BLOB or _ONE_CASE_HEX.fullmatch(run):
                    continue
                st, en = m.span("run")
                if (_looks_random(run)
                        and not _elided(text, st, en)
                        and _DIGEST_LABEL.search(text, max(0, st - 12), st) is None
                        and _FILE_EXT.match(text, en) is None
                        and not _public_name_before(text, st)
                        and not (urls and _in_url_path(text, st, en, line_paths))):
                    found.append(Finding("high_entropy", st, en))
        if found:
            found = [f for f in found if f.rule in _NOT_CHECKED
                     or (plausible_value(text[f.start:f.end]) if f.rule in _VALUE_CHECKED
                         else not placeholder(text[f.start:f.end]))]
            # ``://user:${PASSWORD}@``, ``://<user>:<password>@``: filled in elsewhere; a PEM
            # private-key header with no key (a string constant, ``...``, ``<key here>``)
            found = [f for f in found
                     if (f.rule != "url_password" or text[f.start] not in "$%<{[(")
                     and (f.rule != "private_key" or not _keyless_pem(text[f.start:f.end]))
                     and (f.rule != "basic_auth" or _basic_credential(text[f.start:f.end]))
                     and (f.rule != "openai_key" or not _slug(text[f.start + 3:f.end]))]
        if found and ("secret://" in text or "sha256/" in text
                      or any(h in text for h in PUBLIC_HINTS)):
            found = _drop_public(text, found)
        return _merge(found)

    def redact(self, text: str) -> str:
        """Return ``text`` with every finding masked."""
        return self.apply(text, "redact").text

    def apply(self, text: str, policy: Policy | None = None) -> ScanResult:
        """Scan ``text`` and apply ``policy`` (default: the scanner's)."""
        findings = self.scan(text)
        if not findings:
            return ScanResult(text, ())
        if (policy or self.policy) == "block":
            rules = ", ".join(dict.fromkeys(f.rule for f in findings))
            return ScanResult(f"[WITHHELD: output contained a secret ({rules})]",
                              tuple(findings), blocked=True)
        parts: list[str] = []
        pos = 0
        for f in findings:
            parts.append(text[pos:f.start])
            parts.append(MASK)
            pos = f.end
        parts.append(text[pos:])
        return ScanResult("".join(parts), tuple(findings))


def _keyword_regex(keywords: tuple[str, ...]) -> list[re.Pattern[str]]:
    """Regexes that together find any of ``keywords``: one per first character.

    ``g(?:lpat|ldt|...)-`` lets the regex engine skip to each ``g`` (a literal prefix); an
    alternation that starts with different characters is tried at every position (4-5x
    slower on long texts).
    """
    groups: dict[str, list[str]] = {}
    for k in keywords:
        groups.setdefault(k[:1], []).append(k)
    return [re.compile(re.escape(p) + "(?:" + "|".join(re.escape(k[1:]) for k in ks) + ")"
                       if len(ks) > 1 else re.escape(ks[0])) for p, ks in groups.items()]


def _public_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _PIN.finditer(text)] if "sha256/" in text else []
    for hints, shape, not_after in PUBLIC_SHAPES:  # SSH/PGP public keys, certificates ...
        if any(h in text for h in hints):
            spans.extend(m.span() for m in shape.finditer(text)
                         if not (not_after and m.start()
                                 and not_after.match(text, m.start() - 1)))
    for m in _REFERENCE.finditer(text):
        names = re.split(r"[/#.]", m.group()[len("secret://"):])
        if not any(len(n) >= 16 and _looks_random(n) for n in names):  # names, not a key
            spans.append(m.span())
    return spans


def _drop_public(text: str, found: list[Finding]) -> list[Finding]:
    """Drop guessed findings inside a secret reference, a key pin or a public key/digest."""
    spans = _public_spans(text)
    if not spans:
        return found
    return [f for f in found if f.rule not in _GUESSES
            or not any(s <= f.start and f.end <= e for s, e in spans)]


def _word_starts(lower: str, keywords: tuple[str, ...]) -> list[int]:
    """Positions where a keyword occurs at the start of a word."""
    out: list[int] = []
    for kw in keywords:
        pos = lower.find(kw)
        while pos != -1:
            if pos == 0 or not lower[pos - 1].isalnum():
                out.append(pos)
            pos = lower.find(kw, pos + 1)
    return out


def _assignments(text: str, lower: str,
                 keywords: Iterable[str] = ASSIGNMENT_KEYWORDS) -> list[Finding]:
    """Return values given to identifiers that name a secret.

    ``password = ...``, ``"apiKey": ...``, ``<password>...</password>``,
    ``setProperty("DB_PASSWORD", "...")``, ``--api-key ...``, ``"..." == token``.
    """
    out: list[Finding] = []
    done = -1
    n = len(text)
    hits: list[int] = []
    for kw in keywords:  # str.find loops: twice as fast as one alternation regex
        p = lower.find(kw)
        while p != -1:
            hits.append(p)
            p = lower.find(kw, p + 1)
    hits.sort()
    for pos in hits:
        if pos < done:
            continue  # another keyword of an identifier already looked at
        start = pos
        while start > 0 and lower[start - 1] in _IDENT_SET:
            start -= 1
        end = done = _IDENT_CHARS.match(text, pos).end()  # type: ignore[union-attr]
        first = start
        while start < end and text[start] in ".-":
            start += 1
        while end > start and text[end - 1] in ".-":
            end -= 1
        name = text[start:end]
        if end <= start or not names_secret(name):  # cached: most hits end here
            continue
        if first > 0 and text[first - 1] == "/":
            continue  # a path segment (``/forgot-password``, ``.../reset-password":``)
        if _DOC_FIELD.search(text, max(0, first - 12), first):
            continue  # a docstring's field (``:param token: the token to send``)
        cli = text.startswith("--", first) or (
            first >= 4 and text.find("ENV", max(0, first - 16), first) != -1
            and _DOCKER_ENV.search(text, max(0, first - 16), first) is not None)
        # Cheap test first: what follows (or precedes) must be able to give a value.
        after = end
        while after < n and text[after] in " \t)]":
            after += 1
        before = start - 1
        while before >= 0 and text[before] in " \t\"'`(":
            before -= 1
        if not ((after < n and text[after] in _VALUE_OPENERS) or cli
                or (before >= 0 and text[before] in "=<")):
            continue
        if start > 4 and text[start - 1] == ":" and _in_arn(text, start):
            continue  # ``arn:aws:secretsmanager:...:secret:NAME``: a resource name
        hit = _assigned_value(text, start, end, cli)
        if hit is None:
            continue
        value = text[hit[0]:hit[1]]
        if _ALNUM_ONLY.sub("", value).lower() in {
                _ALNUM_ONLY.sub("", n).lower() for n in (name, name.rsplit(".", 1)[-1])}:
            continue  # ``apiKey: apiKey``, ``this.addPassword = "#add-password"``: the name
        if names_weak_key(name) and not key_material(value):
            continue  # ``routingKey = "orders.created.v2"``: a key, not a secret one
        out.append(Finding("password_assignment", *hit))
    return out


def _in_arn(text: str, start: int) -> bool:
    """Tell whether the identifier at ``start`` (after a ``:``) is a field of an ARN."""
    ws = max(text.rfind(c, 0, start) for c in " \t\n\"'`=")
    return text.startswith("arn:", ws + 1)


def _assigned_value(text: str, start: int, end: int, cli: bool) -> tuple[int, int] | None:
    """Return the span of the value given to the identifier ``text[start:end]``, if plausible."""
    if start > 0 and text[start - 1] == "<" and text.startswith(">", end):  # XML element
        close = text.find("</", end + 1)
        if close == -1 or close - end > 300:
            return None
        raw = text[end + 1:close]
        value = raw.strip()
        if not value or "\n" in value or "<" in value or not plausible_value(value):
            return None
        s = end + 1 + raw.index(value)
        return s, s + len(value)
    if text.startswith(('">', "'>"), end) and _ATTR_NAME.search(text, max(0, start - 12), start):
        # ``<entry key="db.password">VALUE</entry>``, ``<param name="token">VALUE</param>``
        close = text.find("<", end + 2)
        raw = text[end + 2:close] if 0 < close - end <= 300 else ""
        value = raw.strip()
        if not value or "\n" in value or not plausible_value(value):
            return None
        s = end + 2 + raw.index(value)
        return s, s + len(value)
    m = _AFTER_NAME.match(text, end)
    if m is None and cli and text.startswith(" ", end):  # ``--api-key VALUE``
        pos, op = end + 1, " "
    elif m is None:
        back = _REVERSED.search(text, max(0, start - 320), start)
        if back and plausible_value(back.group(2)):
            return back.span(2)
        return None
    else:
        pos, op = m.end(), m.group("op")
        if op == ":" and (block := _YAML_BLOCK.match(text, pos)) is not None:
            pos = block.end()
        elif op == ":" and text.endswith("${", 0, start):
            if not text.startswith(("-", "="), pos):
                return None  # ``${NAME:?message}``, ``${NAME:offset}``
            pos += 1  # ``${NAME:-default}``: the default (a hard-coded value when plausible)
    if pos >= len(text):
        return None
    q = text[pos]
    if op == "," and (start == 0 or text[start - 1] not in "\"'`"
                      or text.rfind("[", max(0, start - 200), start)
                      > text.rfind("(", max(0, start - 200), start)):
        # ``f("NAME", "value")`` needs a quoted name (``#password", "x"`` is not one) inside
        # a call's arguments, not a list's items (``["security", "secret", "scanner"]``)
        return None
    if not op and (q == "`" or start > 0 and text[start - 1] == q):
        # the quote closes the name itself (``getenv("API_TOKEN") and ...``); a backtick
        # after a bare word quotes code in prose (``we pass `flag=False` ``)
        return None
    if q in _QUOTED:
        qm = _QUOTED[q].match(text, pos)
        if qm:
            if text.startswith(":", qm.end()) and op not in ("==", "===", "!=", "!=="):
                # ``"password", "version": 3``: the next key, not a value (after a
                # comparison the colon opens a block: ``if password == "x":``)
                return None
            if op == "," and _LOWER_WORD.fullmatch(qm.group(1)):
                return None  # the next word of a list (``'token', 'triple', 'true'``)
            return qm.span(1) if plausible_value(qm.group(1)) else None
        pos += 1  # an unclosed quote: the value runs to the end of the token
    if not op or op == ",":
        return None  # without an operator (or between call arguments) only a quoted value
    if _code_value(text, pos, op):
        return None  # a type (``auth: AuthStorage | None = None``), a call, an index: code
    if (op == ":" and len(name_words(text[start:end])) > 1
            and _YAML_KEY_START.search(text, max(0, start - 40), start)):
        # A YAML plain scalar runs to the end of its line (a passphrase has spaces). Only
        # under a compound key (``aws_secret_access_key:``): ``Password: the one you chose``
        # and ``token: 12 tokens used`` are prose and log lines.
        ym = _YAML_PLAIN.match(text, pos)
        if ym is not None and " " in ym.group() and _prose(ym.group()):
            return None  # a description, not a value
        if (ym is not None and " " in ym.group() and not ym.group()[0].isdigit()
                and plausible_value(ym.group())):
            return ym.span()
    um = _UNQUOTED.match(text, pos)
    if um is None:
        return None
    if "authorization" in name_words(text[start:end]):
        sm = _SCHEME_THEN.match(text, pos)
        if sm is not None:  # ``Token token="..."``: the parameter's value
            cs, ce = sm.span("cred")
            if (eq := _AUTH_PARAM.match(text, cs, ce)) is not None:
                cs = eq.end()
            cs += len(text[cs:ce]) - len(text[cs:ce].lstrip("\\\"'"))
            ce = cs + len(text[cs:ce].rstrip("\\\"'"))
            return (cs, ce) if plausible_value(text[cs:ce]) else None
    value = um.group().rstrip(")]}>")
    if value != um.group() and not plausible_value(um.group()):
        return None  # ``{token}``, ``<token>``: the brackets belong to the reference
    if _LOWER_WORD.fullmatch(value) and not _dotenv(text, start, end):
        return None  # a lower-case word after ``password:`` in prose, not a password
    if not plausible_value(value):
        return None
    return pos, pos + len(value)


def _code_value(text: str, pos: int, op: str) -> bool:
    """Tell whether the unquoted value at ``pos`` is code: a type, a generic, a call, an index."""
    if _CODE_VALUE.match(text, pos):
        return True
    tm = _TYPE_NAME.match(text, pos) if op == ":" else None
    if tm is None:
        return False
    after = text[tm.end():tm.end() + 1]  # a type name ends there; a value would go on
    return not after.isalnum() and after not in _VALUE_CHARS


def _prose(value: str) -> bool:
    """Tell whether a plain scalar with spaces is a sentence (a docstring's description).

    ``api_key: The API key for the service.``, ``check: Function that verifies it.``: three or
    more words, the first capitalised, one of them a function word. A passphrase is kept.
    """
    words = value.split()
    return (len(words) >= 3 and words[0][:1].isupper()
            and any(w.lower().strip(".,;:()`'\"") in _FUNCTION_WORDS for w in words))


def _dotenv(text: str, start: int, end: int) -> bool:
    """Tell whether ``NAME=`` at ``text[start:end]`` is a dotenv/shell line's assignment.

    ``DB_PASSWORD=hunter``, ``export API_TOKEN=abc``, ``# SMTP_PASS=xyz`` (commented out):
    an upper-case name at the start of its line, ``=`` right after it. There the value is a
    literal (a program's variable would be ``$NAME``), even a lower-case word.
    """
    if not text.startswith("=", end) or not _UPPER_NAME.fullmatch(text, start, end):
        return False
    return _LINE_START.search(text, max(0, start - 24), start) is not None


def _curl_users(text: str) -> list[Finding]:
    """Return the password of ``curl -u user:password`` / ``--user user:password``."""
    out: list[Finding] = []
    for m in _CURL_USER.finditer(text):
        if m.start() and not text[m.start() - 1].isspace():
            continue
        user, password = m.group(1).strip("<>[](){}"), m.group(2).strip("<>[](){}")
        if password != user and plausible_value(password):
            out.append(Finding("curl_user_password", *m.span(2)))
    return out


def _k8s_secret_data(text: str) -> list[Finding]:
    """Return the values under ``data:`` of a Kubernetes ``kind: Secret`` manifest.

    They are base64 of the secret; a value of fewer than 6 bytes (``YmFyCg==``) or a template
    (``{{ .Values.x }}``) is not reported.
    """
    out: list[Finding] = []
    docs = [0, *(m.end() for m in _YAML_DOC.finditer(text)), len(text)]
    for a, b in zip(docs, docs[1:], strict=False):
        if _K8S_SECRET.search(text, a, b):
            out.extend(_k8s_data_values(text, a, b))
    return out


def _k8s_data_values(text: str, a: int, b: int) -> list[Finding]:
    out: list[Finding] = []
    for block in _K8S_DATA_OR_STRING.finditer(text, a, b):
        plain = block.group("kind") == "stringData"
        line_re = _K8S_PLAIN if plain else _K8S_LINE
        indent = None
        pos = block.end()
        while (line := line_re.match(text, pos, b)) is not None and line.end() > pos:
            pos = line.end()
            if indent is None:
                indent = line.group("indent")
            elif line.group("indent") != indent:
                break
            value = line.group("value")
            if plain:
                if value and plausible_value(value):
                    out.append(Finding("k8s_secret_data", *line.span("value")))
            elif value and len(value.rstrip("=")) * 3 // 4 >= 6 and not placeholder(value):
                out.append(Finding("k8s_secret_data", *line.span("value")))
            elif line.group("block"):  # ``key: |`` then lines indented deeper
                while (sub := _K8S_BLOCK_LINE.match(text, pos, b)) is not None and len(
                        sub.group("indent").expandtabs()) > len(indent.expandtabs()):
                    pos = sub.end()
                    if not placeholder(sub.group("value")):
                        out.append(Finding("k8s_secret_data", *sub.span("value")))
    return out


_PEM_HEADER = re.compile(r"-----BEGIN [A-Z0-9 ]+-----")
_PEM_FOOTER = re.compile(r"-----END [A-Z0-9 ]+-----")
# What may sit between a header and its body: escaped or real line breaks, quotes, spaces
_PEM_GLUE = re.compile(r"(?:\\[nr]|[\s\"'`])+")
_PEM_STANDIN = re.compile(r"\.{3,}|\u2026|<[^<>\n]*>|\$\{[^}\n]*\}|\{\{[^}\n]*\}\}|\$[A-Z_]+")


def _keyless_pem(block: str) -> bool:
    """Tell whether a private-key PEM block holds no key: only its header, or a stand-in.

    ``PEM_HEADER = "-----BEGIN RSA PRIVATE KEY-----"`` (the header closed as a string),
    ``...``, ``<your key here>``, ``${PRIVATE_KEY}``, a run of ``X``: nothing to steal. A body
    of anything else, words included, is kept (a key in the making is still reported).
    """
    head = _PEM_HEADER.match(block)
    if head is None:
        return False
    rest = block[head.end():]
    foot = _PEM_FOOTER.search(rest)
    if foot is None:
        # the header closed as a string (``"-----BEGIN ... KEY-----")``): a constant
        return rest[:1] in ("\"", "'", "`") and not rest[1:2].isalnum()
    raw = _PEM_STANDIN.sub("", rest[:foot.start()])
    body = _PEM_GLUE.sub("", raw)
    if not body:
        return True
    if " " in raw.strip():
        return False  # words with spaces are kept (a key in the making is still reported)
    # one unbroken placeholder (``MHcCAQEEIXXXX...``, ``***``, ``xxx``: no key is under 16
    # characters), or base64 of printable text: a key's body is binary (DER, openssh-key-v1)
    return len(body) < 16 or placeholder(body) or _base64_printable(body)


def _slug(body: str) -> bool:
    """Tell whether ``body`` is lower-case words joined by separators (``toggleable__label``).

    A CSS class (``sk-toggleable__label-arrow``) after an ``sk-``: an OpenAI key's body has
    capitals and digits all through it.
    """
    return body == body.lower() and all(p.isalpha() for p in _SEPARATORS.split(body) if p)


def _basic_credential(token: str) -> bool:
    """Tell whether ``token`` (after ``Basic``) is base64 of ``user:password``, as it must be.

    ``Basic authentication``, ``basic feasible solution``: a word after "basic" is prose.
    """
    user, colon, _ = (b64decode_loose(token) or b"").partition(b":")
    return bool(colon) and all(32 <= b < 127 for b in user)


def _base64_printable(body: str) -> bool:
    """Tell whether ``body`` is base64 of printable ASCII (no key's bytes are)."""
    raw = b64decode_loose(body)
    return bool(raw) and all(32 <= b < 127 for b in raw or b"")


def _in_url_path(text: str, start: int, end: int,
                 cache: dict[int, list[tuple[int, int]]]) -> bool:
    """Tell whether ``text[start:end]`` ends inside a URL path that only names a resource.

    A URL never spans lines: only the run's own line is looked at (once per line).
    """
    ls = text.rfind("\n", 0, start) + 1
    paths = cache.get(ls)
    if paths is None:
        le = text.find("\n", end)
        paths = cache[ls] = _url_paths(text, ls, len(text) if le == -1 else le)
    return any(a < end <= b for a, b in paths)


def _url_paths(text: str, pos: int = 0, endpos: int | None = None) -> list[tuple[int, int]]:
    """Return the spans of URL paths and queries that only name resources.

    A random-looking part of a URL's path or query (a document id, an encrypted image
    reference, a cache key) is how that resource is named, not a credential: guesses inside
    it are dropped. Kept: a URL whose path or query names a secret (``/webhooks/``,
    ``/bot<token>/``, ``?access_token=``, ``&key=``), user:password in its authority, and
    every known token format and held value (they are not guesses).
    """
    out: list[tuple[int, int]] = []
    for m in _URL.finditer(text, pos, len(text) if endpos is None else endpos):
        path = m.group("path")
        low = path.lower()
        if any(w in low for w in _URL_SECRET_PARTS):
            continue
        if any(names_secret(k) for k in _QUERY_KEY.findall(path)):
            continue
        out.append(m.span("path"))
    return out


def _elided(text: str, start: int, end: int) -> bool:
    """Tell whether the run is cut by an ellipsis: a shortened display (``sk-abc...``)."""
    return (text.startswith(("...", "\u2026"), end)
            or text.endswith("...", max(0, start - 3), start)
            or (start > 0 and text[start - 1] == "\u2026"))


def _public_name_before(text: str, pos: int) -> bool:
    """Return True if the value at ``pos`` is given to a public or descriptive name.

    Public: ``public_key=``, ``csrf_token:``; about a secret: ``secretName:``, ``token_url=``;
    descriptive: ``sumOfExposures =`` (see ``names_descriptive``).
    """
    m = _NAME_BEFORE.search(text, max(0, pos - 360), pos)
    if m is None:
        return False
    name = m.group(1) or m.group(2)
    return names_public(name) or names_metadata(name) or names_descriptive(name)


def _merge(found: list[Finding]) -> list[Finding]:
    """Sort findings and merge overlaps, keeping the first rule name of each merged span."""
    if len(found) <= 1:
        return found
    found.sort(key=lambda f: (f.start, -f.end))
    out = [found[0]]
    for f in found[1:]:
        last = out[-1]
        if f.start < last.end:
            if f.end > last.end:
                out[-1] = Finding(last.rule, last.start, f.end)
        else:
            out.append(f)
    return out
