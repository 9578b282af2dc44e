"""Context for the secret scanner: which names hold secrets, and what only looks like one.

Three kinds of knowledge, each general (none is keyed to a particular value):

- *names*: an identifier split into words (``dbPassword``, ``DB_PASSWORD``, ``db-password``,
  ``spring.datasource.password`` all give ``password``) names a secret when it has a secret
  word (``password``, ``token``, ``api key`` ...) that is not qualified as metadata
  (``password_length``, ``token_url``, ``secret_name``) or as a public/structural key
  (``public_key``, ``primaryKey``, ``csrf_token``, ``page_token``);
- *values that are not secrets*: placeholders (``xxxxxxxx``, ``<your key>``, ``12345678``, a
  vendor's documented ``...EXAMPLE`` key), references (``${VAR}``, ``{{ .Values.x }}``,
  ``os.getenv(...)``, ``var.db_password``), identifiers (``real_secret``) and plain words;
- *public shapes*: SSH and PGP public keys, certificates, Subresource-Integrity digests, text
  that is only base64 of ordinary words.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections import Counter

# ---- names ----------------------------------------------------------------------------------
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
SECRET_WORDS = frozenset({
    "password", "passwd", "pass", "pwd", "pw", "passphrase", "secret", "secrete", "token",
    "apikey", "credential", "credentials", "creds", "auth", "authorization", "privatekey",
    "accesskey", "secretkey", "signingkey", "encryptionkey", "masterkey", "authtoken",
    "psk",  # pre-shared keys (``wpa_psk``)
})
# A word that ends with one of these is a secret word too (``pgpassword``, ``slapikey``).
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "apikey", "accesskey", "secretkey",
                    "privatekey")
# Words after the secret word that make the name metadata about a secret, not the secret.
_METADATA = frozenset({
    "name", "names", "id", "ids", "length", "len", "size", "count", "type", "file", "path",
    "dir", "url", "uri", "endpoint", "field", "label", "hint", "policy", "prompt", "reset",
    "expiry", "expires", "expiration", "ttl", "timeout", "min", "max", "version", "format",
    "header", "param", "env", "var", "ref", "arn", "store", "vault", "manager", "provider",
    "rotation", "required", "enabled", "valid", "validity", "strength", "regex", "pattern",
    "mode", "method", "source", "location", "status", "used", "usage", "limit", "kind",
    "holder", "placeholder", "selector", "input", "box", "icon", "class", "hash", "digest",
    "fingerprint", "checksum", "signature", "algorithm", "alg", "encoding", "spec",
    # key words of UI and data structures (key_alias, keyCode, key_pair, keyPressed, ...)
    "alias", "board", "code", "frame", "mesh", "pair", "press", "pressed", "ring", "stone",
    "storetype", "word", "up", "down", "left", "right", "tab", "event", "events", "map",
    # who/where/what a credential is for, not the credential (auth_user, authDomain, ...)
    "user", "username", "domain", "host", "server", "realm", "scope", "scopes", "issuer",
    "audience", "mechanism", "service", "salt",
    # text about a secret and the programs that fetch one (secret_message, credential_process)
    "message", "msg", "text", "description", "desc", "title", "note", "comment", "question",
    "process", "command", "cmd", "helper", "program", "script", "prefix", "suffix", "template",
    # the code and settings that handle a secret (password.encoder, PASSWORD_HASHERS, ...)
    "encoder", "encoders", "hasher", "hashers", "validator", "validators", "validation",
    "rule", "rules", "strategy", "generator", "complexity", "requirement", "requirements",
    "checker", "handler", "factory", "parser", "callback", "listener", "filename",
    "filepath", "dirname", "folder", "directory",
    # the settings and machinery around a credential in code (token_placement, auth_params,
    # _auth_settings, refresh_api_key_hook, async_auth_flow, OAuthTokenError)
    "placement", "params", "parameters", "settings", "setting", "options", "hook", "hooks",
    "identity", "flow", "info", "methods", "error", "errors", "exception", "warning",
    "streams", "records", "paths",
})
# Words before a secret word that make it a public or structural value.
_PUBLIC = frozenset({
    "public", "pub", "primary", "foreign", "csrf", "xsrf", "authenticity", "sort", "partition",
    "cache", "bucket", "schema", "sequence", "idempotency", "hot", "idx", "natural", "unique",
    "lookup", "next", "page", "continuation", "cursor", "max", "num", "no", "publishable",
    "sitekey", "site", "recaptcha", "fake", "dummy", "example", "sample", "test_only",
    "object", "row", "column", "s3", "item", "record", "entity", "field", "index",
    "authorized",  # ``authorized_keys``: the public keys allowed to log in
    "encrypted", "hashed", "ciphertext",  # ciphertext and hashes of a secret are safe to show
})


def name_words(ident: str) -> list[str]:
    """Split an identifier into lower-case words (camelCase, snake_case, kebab, dotted)."""
    return [w.lower() for w in _WORDS.findall(ident)]


def _is_secret_word(w: str) -> bool:
    return w in SECRET_WORDS or (len(w) > 6 and w.endswith(_SECRET_SUFFIXES))


@functools.lru_cache(maxsize=8192)
def names_secret(ident: str) -> bool:
    """True if an identifier names a secret (see the module docstring)."""
    words = name_words(ident)
    last = -1
    for i, w in enumerate(words):
        if _is_secret_word(w):
            last = i
        elif (w == "key" and i > 0 and words[i - 1] not in _PUBLIC and len(words[i - 1]) > 1
              and not words[i - 1].isdigit()):
            # ``signing_key``, ``iam_key``, ``MASTER_KEY`` (a bare ``key`` is not, nor a
            # variable's ``e.key`` or ``t._key``)
            last = i
    if last < 0:
        return False
    if any(w in _METADATA for w in words[last + 1:]):
        return False
    if last > 0 and words[last - 1] in _PUBLIC:
        return False
    return not (words[last] == "key" and last > 1 and words[last - 2] in _PUBLIC)


_DIGEST_SUFFIXES = ("sha1", "sha256", "sha512", "md5", "shasum", "hash", "digest", "checksum")


# Words that may name a credential without being a secret word themselves (gitleaks' generic
# keywords and the places credentials live): a name with one of them is never "descriptive".
_CREDENTIAL_HINTS = frozenset({
    "key", "keys", "sig", "sign", "signing", "hook", "webhook", "bot", "session", "cookie",
    "salt", "seed", "private", "cert", "login", "client", "access", "api", "app", "sid", "jwt",
    "bearer", "oauth", "dsn", "conn", "connection", "license", "pat", "account", "user",
    "admin", "root", "master", "encryption", "encrypt", "cipher", "hmac", "otp", "totp",
})


# Words before ``key`` that make ``<word> key`` a credential (``api_key``, ``signing_key``,
# ``storage_key``). Any other ``<word> key`` (``routingKey``, ``cache_key``, ``build_key``,
# ``license_key``) may hold anything a program keys on: it is reported only when its value is
# key material (see ``key_material``).
_KEY_QUALIFIERS = _CREDENTIAL_HINTS | frozenset({
    "secret", "consumer", "service", "server", "storage", "subscription", "shared", "deploy",
    "ssh", "gpg", "pgp", "rsa", "aes", "crypto", "write", "read", "ingest", "integration",
    "iam", "auth", "secure", "security", "decrypt", "decryption", "verify", "verification",
})


@functools.lru_cache(maxsize=4096)
def names_weak_key(ident: str) -> bool:
    """True if a secret-naming identifier is only ``<word> key`` with an ordinary word.

    ``routingKey``, ``bucket_key``, ``build_key``: such a name names a secret only when its
    value is key material; ``api_key``, ``signing_key``, ``db_password`` name one whatever
    the value.
    """
    words = name_words(ident)
    if any(_is_secret_word(w) for w in words):
        return False
    return not any(w == "key" and i > 0 and words[i - 1] in _KEY_QUALIFIERS
                   for i, w in enumerate(words))


_KEY_PARTS = re.compile(r"[-_.~/+:=@,]")
# A part of a value that is a word (words run together in lower case too: a package name
# such as ``modelcontextprotocol``), a number, a short id or a short hex run (a path's file
# name, a version, a label): not key material.
_WORD_PART = re.compile(
    r"[a-z]{1,32}|[a-z]{1,16}(?:[A-Z][a-z]{1,15}){1,3}|[A-Za-z]{1,16}[0-9]{0,6}"
    r"|[0-9]{1,12}[A-Za-z]{0,3}|[0-9a-fA-F]{1,15}")
# A file path with a file name (``keys/private.pem``, ``C:\\secrets\\db.txt``)
_FILE_PATH = re.compile(r"[^\s]*[/\\][^\s/\\]+\.[A-Za-z][A-Za-z0-9]{0,4}")


def key_material(value: str) -> bool:
    """Could ``value`` be key material (random bytes in some encoding), not a name or label?

    Words, numbers, versions, file paths and short ids joined by separators are not; a long
    hex or random-looking part is.
    """
    v = value.strip()
    if len(v) < 12 or any(c.isspace() for c in v):
        return False
    if _VERSION.fullmatch(v) or _FILE_PATH.fullmatch(v):
        return False
    parts = [p for p in _KEY_PARTS.split(v) if p]
    return not all(_WORD_PART.fullmatch(p) for p in parts)


_PLAIN_NAME = re.compile(
    r"[A-Za-z][a-z]*(?:[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[_.-][A-Za-z]+|[0-9]{1,2})*")


@functools.lru_cache(maxsize=4096)
def names_descriptive(ident: str) -> bool:
    """True for a name of several ordinary words none of which hints at a credential.

    ``sumOfExposures``, ``accessibility_option_id``: a random-looking value given to such a
    name is data the name describes, not a credential (code stores credentials under names
    that say so: token, key, secret, password, auth, api, client ...). Known token formats
    and held values are found whatever the name.
    """
    if len(ident) > 40 or not _PLAIN_NAME.fullmatch(ident):
        return False  # not a name a person wrote (a token's own ``=``-separated part)
    words = [w for w in name_words(ident) if not w.isdigit()]
    return 2 <= len(words) <= 6 and not any(
        _is_secret_word(w) or w in _CREDENTIAL_HINTS or w in SECRET_WORDS for w in words)


@functools.lru_cache(maxsize=4096)
def names_metadata(ident: str) -> bool:
    """True if a name is about a secret, not the secret (``secretName``, ``token_url``)."""
    words = name_words(ident)
    for i, w in enumerate(words):
        if (_is_secret_word(w) or w == "key") and any(x in _METADATA for x in words[i + 1:]):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def names_public(ident: str) -> bool:
    """True if an identifier names a value that is public or structural (not a secret)."""
    words = name_words(ident)
    while words and words[-1].isdigit():
        words.pop()  # ``x-amz-id-2``, ``sha_1``: the numbered name's kind decides
    return bool(words) and (
        words[-1].endswith(_DIGEST_SUFFIXES)  # ``base64sha256``, ``shasum``, ``filehash``
        or any(w in _PUBLIC for w in words[-2:])
        or words[-1] in {"id", "uuid", "guid", "hash", "sha", "md5", "digest", "checksum",
                         "integrity", "etag", "tag", "commit", "rev", "revision", "nonce",
                         "signature", "version", "fingerprint", "sha1", "sha256", "sha512",
                         "kid", "keyid", "thumbprint", "salt", "iv", "state", "ref",
                         "ciphertext"})


# ---- values that are not secrets -------------------------------------------------------------
# runs of the characters people type as filler (``AGE-SECRET-KEY-1QQQ...`` is a key's shape)
_RUN = re.compile(r"([xXzZaA01*#.-])\1{3,}")
_ALNUM16 = re.compile(r"[A-Za-z0-9]{16,}")
# Substrings of the lower-cased value that mark a stand-in (plain ``in`` tests: fast).
_PLACEHOLDER_PARTS = (
    "xxxxxx", "****", "####", "....", "fake", "dummy", "example", "sample", "placeholder",
    "redacted", "changeme", "insert_", "insert-", "replace_me", "replaceme", "replace_with",
    "replace-with", "your_", "your-",
    "yourapi", "yourkey", "yourtoken", "yoursecret", "yourpass", "here", "todo",
) + tuple(seq[i:i + 8] for seq in ("0123456789", "abcdefghijklmnopqrstuvwxyz")
          for i in range(len(seq) - 7))  # ascending runs: 12345678, abcdefgh, ...
_REFERENCE = re.compile(
    r"^(?:[$%#]\{|\{\{|\$\()|^\\?\$[A-Za-z_]|^%[A-Za-z_(]|^<[^>]*>$|^\[[A-Za-z_ ]+\]$|"
    r"^[A-Za-z_][\w.]*\(|^[A-Za-z_]+\d?(?:\.[A-Za-z_]+\d?)+$|^(?:process\.env|os\.environ)"
    r"|^[A-Za-z_][\w.]*\[(?:[\"'$]|$)"  # a lookup: ``request.form['password']``
    # an index (``tokens[i]``), a tuple or list expression (``(username, password)``), a path
    # relative to home or the working directory (``~/.password-store``)
    r"|^[A-Za-z_][\w.]*\[[A-Za-z_0-9.+-]+\]?$|^[(\[][A-Za-z_]|^(?:~|\.{1,2})/"
    # a symbol, a format field, a command substitution, an unclosed tag
    r"|^:[A-Za-z_]\w*$|^\{[A-Za-z_][\w.]*\}$|^`[^`]*`?$|^<[A-Za-z_][\w .-]*>?$"
    # references into secret stores and templates: vault:, ref+vault://, op://, GCP Secret
    # Manager paths, CloudFormation intrinsics
    r"|^(?:vault|ref\+[a-z0-9]+|awssm|gcpsm|azkv|op|bw|doppler|sops|ssm|secretsmanager):"
    r"|^projects/[^/\s]+/secrets/|^Fn::|^!(?:Ref|Sub|GetAtt|ImportValue|FindInMap)\b"
    # an ARN names a resource (a Secrets Manager secret, a KMS key), it is not one; a YAML
    # tag alone (``!vault |``, ``!secret db_password``) and an Ansible Vault blob are
    # references or ciphertext
    r"|^arn:[a-z-]+:|^![A-Za-z_][\w-]*(?:\s|$)|^\$ANSIBLE_VAULT;|^<%"
    # template markers and parameters (``__TOKEN__``, ``@@KEY@@``, ``@token``) and string
    # concatenation (``'+ token +'``): the value is put there by something else
    r"|^(__|@@|%%)\w+\1$|^@[a-z_][a-z0-9_.]*$|^[\"']\s*\+|\+\s*[\"']$"
    # the code between two string literals (``"a: " + getPassword() + ","``), a label
    # (``"Password:"``, ``"application:" + appKey``) and an absolute URL path
    r"|^\s*[+,]|[+,]\s*$|:$|^/[\w.@%-]+(?:/[\w.@%#-]*)+$")
# A version (``2.14.1``, ``20241105.3+gab12cd3``, ``v1.2.3-rc.1``): never a secret
_VERSION = re.compile(r"v?\d+(?:\.\d+){1,3}(?:[-+~][0-9A-Za-z.+~-]*)?")
# Interpolations: the value is (partly) filled in elsewhere
# (each well formed: ``${NAME}``, ``${NAME:-x}``, ``{{ expr }}``, ``$(cmd)``, ``%NAME%``,
# ``#{expr}``, ``$NAME``, ``<%= expr %>``; a password may hold braces and dollars itself)
_INTERPOLATION = re.compile(
    r"\$\{[A-Za-z_][\w.]*(?:[:?+-][^{}\n]*)?\}|\{\{[^{}\n]+\}\}|\$\([^()\n]+\)"
    r"|%[A-Za-z_]\w*%|#\{[A-Za-z_][^{}\n]*\}|\$[A-Z_][A-Z0-9_]{2,}\b|<%=?[^%\n]*%>"
    # Python's format fields (``{token}``, ``{password!r}``, ``{key:>10}``) and printf's
    # conversions (``Bearer %s``)
    r"|\{[A-Za-z_][\w.]*(?:\[[^\]{}\n]*\])?(?:![rsa])?(?::[^{}\n]*)?\}"
    r"|%[-#0 +]*\d*(?:\.\d+)?[sdrif]\b")
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "oauth", "ssws", "apikey",
                           "negotiate", "hmac"})
_LITERAL_PARTS = re.compile(r"[^\s:/@;,\"']+")
# Values that are public keys or certificates (``ssh_authorized_key = "ssh-rsa AAAA..."``)
# (and PEM blocks of any kind: the private-key rule judges those, with their body)
_PUBLIC_KEY_PREFIXES = ("ssh-rsa ", "ssh-dss ", "ssh-ed25519 ", "ecdsa-sha2-", "sk-ssh-",
                        "sk-ecdsa-", "-----BEGIN")
# A password hash in crypt(3) / PHC form (``$2b$12$...``, ``user:$apr1$...``): what a
# server stores to check a password, not the password
_CRYPT_HASH = re.compile(r"(?:^|:)\$(?:1|2[abxy]?|5|6|7|y|gy|apr1|argon2(?:id|i|d)|scrypt"
                         r"|pbkdf2(?:-sha\d+)?)\$")
_IDENTIFIER = re.compile(r"_*[a-z]+(?:_[a-z]+)+|[A-Z]+(?:_[A-Z]+)+")
_COMMON = frozenset({
    "true", "false", "null", "none", "nil", "undefined", "required", "optional", "string",
    "password", "passwd", "secret", "token", "empty", "bearer", "basic", "digest", "default",
    "changeit", "username", "private", "public", "hidden", "masked", "unset", "disabled",
    # encodings (``Buffer.from(accountKey, "base64")``, ``key.encode("utf-8")``)
    "base64", "base64url", "base32", "hex", "utf8", "utf-8", "latin1", "binary", "ascii",
})
# Documented example keys (AWS IAM and CLI guides); any value with "EXAMPLE" is one too.
VENDOR_EXAMPLES = frozenset({
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
})


def placeholder(value: str) -> bool:
    """True for a stand-in: ``xxxxxxxx``, ``<your key>``, a run of one filler character
    (``x z a 0 1 * # . -``) covering much of it, an ascending run of 8+ characters
    (``12345678``, ``abcdefgh``), ``EXAMPLE``."""
    if value in VENDOR_EXAMPLES or "EXAMPLE" in value:
        return True
    if value.endswith(("...", "\u2026")) or value.startswith(("...", "\u2026")):
        return True  # a shortened display (``ghp_abc...``), not a usable value
    low = value.lower()
    for part in _PLACEHOLDER_PARTS:
        if part in low and _placeholder_part(low, part):
            return True
    if "<" in value and re.search(r"<[a-z_ -]+>", low):
        return True
    if _sequences_only(low):
        return True
    if _RUN.search(value) is None:
        return False
    if sum(len(m.group()) for m in _RUN.finditer(value)) * 2 <= len(value):
        return False
    # mostly runs, unless what is left still holds a random part of its own (a Slack token
    # with repeated digits in its ids and a random tail is a token, ``AKIAZZZZ...`` is not)
    return not any(len(set(p)) >= 10 for p in _ALNUM16.findall(_RUN.sub("", value)))


# Runs along the alphabet, the digits or a keyboard row, either way (``abc123``,
# ``AbCeFG123``, ``qwerty123``, ``987654321``)
_SEQUENCES = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_STEPS = frozenset((s[i], s[i + 1]) for seq in _SEQUENCES for s in (seq, seq[::-1])
                   for i in range(len(s) - 1))


def _sequences_only(low: str) -> bool:
    """True if ``low`` (6+ letters and digits) is at most four runs of 3+ along a sequence."""
    chars = [c for c in low if c.isalnum()]
    if len(chars) < 6 or len(chars) > 40:
        return False
    runs = [1]
    for a, b in zip(chars, chars[1:], strict=False):
        if (a, b) in _STEPS:
            runs[-1] += 1
        else:
            runs.append(1)
            if len(runs) > 4:
                return False
    if len(runs) == 4:  # ``abc123def456``; four runs that repeat (``abcd1234abcd1234``) are not
        pieces, pos = set(), 0
        for r in runs:
            pieces.add("".join(chars[pos:pos + r]))
            pos += r
        if len(pieces) < 4:
            return False
    return all(r >= 3 for r in runs)


def _placeholder_part(low: str, part: str) -> bool:
    """Confirm a placeholder substring where it must be a whole word (here, todo, your)."""
    if part in ("here", "todo"):
        return re.search(rf"(?<![a-z]){part}(?![a-z])|_{part}|{part}$", low) is not None
    if part in ("your_", "your-"):
        return re.search(r"your[_-](?:api|key|token|secret|pass)", low) is not None
    return True


# A name: words joined by separators (``api-key``, ``DB_PASSWORD``, ``vault.token``) or
# camelCase (``apiKey``); a CamelCase or single word (``SuperSecret``) may be a weak password
# and stays plausible.
_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}(?:[0-9a-fA-F]{2})?")
_NAME_SHAPED = re.compile(r"[A-Za-z]+(?:[_.-][A-Za-z]+)+|[a-z]+(?:[A-Z][a-z]+)+")


def plausible_value(value: str) -> bool:
    """Could this assigned value be a working secret (not a reference, word or stand-in)?"""
    v = value.strip()
    if len(v) < 6 or not any(c.isalnum() for c in v):
        return False
    if _NAME_SHAPED.fullmatch(v) and names_secret(v):
        return False  # the name of a secret (``secretKey: api-key``), not its value
    if v.isdigit():
        return len(v) >= 12  # ports, counts and ids are short; numeric tokens are long
    if _COLOUR.fullmatch(v):
        return False  # a style's colour (``Token: "#ddd0c0"``)
    if v.startswith(("http://", "https://")) and "@" not in v and not key_material(
            v.split("://", 1)[1].split("?", 1)[0]):
        return False  # an address (``.. _`Bearer Token`: https://tools.ietf.org/...``)
    if v.lower() in _COMMON or _REFERENCE.search(v) or _IDENTIFIER.fullmatch(v):
        return False
    if (v.startswith(_PUBLIC_KEY_PREFIXES) or _VERSION.fullmatch(v) or _FILE_PATH.fullmatch(v)
            or ("$" in v and _CRYPT_HASH.search(v))):
        return False
    if _INTERPOLATION.search(v):
        # ``Bearer ${TOKEN}``, ``{{ prefix }}-{{ env }}``: what is filled in is not here; the
        # literal rest is a secret only if a part of it is one on its own
        rest = _INTERPOLATION.sub(" ", v)
        # (a lower-case word left over is a path's or a template's word: ``/config/identity``)
        return any(len(p) >= 8 and p.lower() not in _AUTH_SCHEMES
                   and not (p.isalpha() and p.islower()) and plausible_value(p)
                   for p in _LITERAL_PARTS.findall(rest))
    return not placeholder(v)


# ---- public shapes ---------------------------------------------------------------------------
# Each shape with the literals (hints) one of which it contains: a shape's regex runs only on
# texts holding one of its hints (one alternation of all of them cost ~0.3 s per 2 MB).
_B64 = r"(?<![A-Za-z0-9+/])"
_LEADING_NOT = re.compile(r"\(\?<!(\[[^\]]+\])\)")


def _shape(rx: str) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
    """Compile a shape; a leading ``(?<![...])`` becomes a class the caller checks itself.

    A leading look-behind defeats the regex engine's literal-prefix search (~40x slower on
    a 2 MB text): the scanner tests the character before each match instead.
    """
    m = _LEADING_NOT.match(rx)
    if m is None:
        return re.compile(rx), None
    return re.compile(rx[m.end():]), re.compile(m.group(1))


# (hints, shape, class the character before a match must not be in)
PUBLIC_SHAPES: tuple[tuple[tuple[str, ...], re.Pattern[str], re.Pattern[str] | None], ...] = tuple(
    (hints, *_shape(rx)) for hints, rx in (
        (("ssh-", "ecdsa-"), r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)|"
                    r"sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) AAAA[A-Za-z0-9+/]+=*"),
        # OpenSSH public key blobs also without their type word (the blob names the type)
        (("AAAA",), _B64 + r"AAAA(?:B3NzaC1yc2E|B3NzaC1kc3M|C3NzaC1lZDI1NTE5"
                    r"|E2VjZHNhLXNoYTIt|GnNrLXNzaC1lZDI1NTE5|InNrLWVjZHNhLXNoYTIt)[A-Za-z0-9+/]*=*"),
        # PEM blocks that hold no private key: public keys, certificates, requests, CRLs,
        # signatures, parameters, PGP messages (every label without PRIVATE)
        (("-----BEGIN",), r"-----BEGIN ((?!PRIVATE)[A-Z0-9]+(?: (?!PRIVATE)[A-Z0-9]+)*)-----"
                          r"[\s\S]*?(?:-----END \1-----|\Z)"),
        # a DER X.509 certificate in base64 without its PEM lines (SEQUENCE, SEQUENCE, [0] v3)
        (("gAwIBAgI",), _B64 + r"MII[A-Za-z0-9+/]{5,12}gAwIBAgI[A-Za-z0-9+/]+=*"),
        # base64 of a PEM certificate or public key (a Kubernetes ca.crt/tls.crt, a caBundle)
        (("LS0tLS1CRUdJTi",), _B64 + r"LS0tLS1CRUdJTi(?:BDRVJUSUZJQ0FURS0tLS0t"
                              r"|BQVUJMSUMgS0VZLS0tLS)[A-Za-z0-9+/]*=*"),
        # a DER SubjectPublicKeyInfo in base64 (RSA, EC, Ed25519 public keys without PEM lines)
        (("BAQEFAAO", "KoZIzj0CAQ", "K2VwAyEA"),
         _B64 + r"(?:MII[A-Za-z0-9+/]{3}ANBgkqhkiG9w0BAQEFAAO"
         r"|M[A-Za-z0-9+/]{3}[EQ][A-Za-z0-9+/]YHKoZIzj0CAQY|MCowBQYDK2VwAyEA)[A-Za-z0-9+/]*=*"),
        # Subresource-Integrity digests
        (("sha256-", "sha384-", "sha512-"),
         r"(?<![A-Za-z0-9])sha(?:256|384|512)-[A-Za-z0-9+/]{43,86}={0,2}"),
        (("pk_",), r"(?<![A-Za-z0-9_])pk_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe publishable
        # an age recipient (``age1`` + 58 bech32 characters): the public half of an age key
        (("age1",), r"(?<![A-Za-z0-9_])age1[02-9ac-hj-np-z]{58}(?![A-Za-z0-9_])"),
        # Ciphertext: sops values (PGP messages are a PEM block above): encrypted, safe to show
        (("ENC[",), r"ENC\[[A-Z0-9_]+,data:[^\]\s]*\]"),
        # OpenSSL ``enc`` output (base64 of ``Salted__`` + salt + ciphertext)
        (("U2FsdGVkX1",), _B64 + r"U2FsdGVkX1[A-Za-z0-9+/]+=*"),
        # password hashes (crypt(3) and PHC strings): stored to check a password, not one
        (("$",), r"\$(?:1|2[abxy]?|5|6|apr1|argon2(?:id|i|d)|scrypt)\$[^\s:\"'`]+"),
        # Ansible Vault and Bitnami SealedSecret values: ciphertext
        (("$ANSIBLE_VAULT",), r"\$ANSIBLE_VAULT;[^\n]*(?:\n[ \t]*[0-9a-fA-F]+)+"),
        (("encryptedData:",), r"encryptedData:[ \t]*\n(?:[ \t]+[^\n]*(?:\n|$))+"),
    ))
PUBLIC_HINTS = tuple(dict.fromkeys(h for hints, _, _ in PUBLIC_SHAPES for h in hints))


def b64decode_loose(token: str) -> bytes | None:
    """Decode base64 (padding optional; URL-safe when it has ``-`` or ``_``), else None."""
    t = token.rstrip("=")
    try:
        return base64.b64decode(t + "=" * (-len(t) % 4), altchars=b"-_" if (
            "-" in t or "_" in t) else None, validate=True)
    except (binascii.Error, ValueError):
        return None


def base64_of_text(token: str) -> bool:
    """True if ``token`` is base64 of ordinary text (words and spaces, or a stand-in), not of
    random bytes."""
    t = token.rstrip("=")
    if len(t) < 16 or len(t) % 4 == 1:
        return False
    raw = b64decode_loose(t)
    try:
        text = raw.decode("ascii") if raw else ""
    except ValueError:
        return False
    if not text or not text.isprintable():
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    # words, or a stand-in written in base64 (``abcdefghijklmnopqrstuvwxyz``)
    return " " in text and letters >= 0.85 * len(text) or placeholder(text)


def shannon_entropy(text: str) -> float:
    """Return the Shannon entropy of ``text`` in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())
