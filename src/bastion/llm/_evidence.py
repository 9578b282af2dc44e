"""Concrete argument values a request carries, matched to parameters by their type and docs.

A request that names a value a tool's parameter takes is asking to run that tool even when it
shares no word with the tool's name ("show me the last 20 lines of syslog.txt" for a tool
whose ``command`` parameter takes a command line). This module finds such values and says
which parameters take them, judged from each parameter's schema (type, name, description),
never from a tool's name:

* a **command line** (a utility followed by an option, a pipe, a back-quoted command, or a
  utility the request says to run/use) for a string parameter documented as a command;
  a **file name** also counts for such a parameter and for one that takes a program, since a
  command or a program is how a file's content gets counted, searched or parsed -- unless
  the request names the command itself ("count the words in essay.txt using wc"): the file
  is then that command's operand, not a reason to write a program;
* a **number with a unit** (``10 minutes``, ``40 %``, ``21 degrees``) for a number parameter
  whose name or description names that unit;

Paths and web addresses are judged in :mod:`._constrained` (``argument_fit``).
"""

from __future__ import annotations

import re
from typing import Any

from bastion.llm import _relevance

# Utilities of POSIX and of a usual Linux userland whose names are not English words: the
# request naming one is a command-line request. Names that are also words ("sort", "find",
# "free", "date", "head") count only in a command's shape (an option follows, a pipe joins,
# back-quoted, or after "run"/"use"/"with"/"using"/"via").
_UTILITIES = frozenset(
    ["awk", "grep", "egrep", "sed", "ls", "wc", "df", "uname", "uptime", "git", "docker",
     "podman", "curl", "wget", "tar", "gzip", "gunzip", "unzip", "journalctl", "systemctl",
     "chmod", "chown", "mkdir", "rmdir", "rm", "cp", "mv", "xargs", "uniq", "lsblk", "lscpu",
     "lsof", "pwd", "whoami", "hostname", "ifconfig", "netstat", "ping", "nslookup", "md5sum",
     "sha256sum", "jq", "htop", "dmesg", "crontab", "nproc", "ssh", "scp", "rsync", "npm",
     "gcc", "python3"]
)  # fmt: skip
_WORD_UTILITIES = frozenset(
    ["sort", "find", "free", "date", "head", "tail", "cut", "top", "who", "kill", "touch",
     "echo", "file", "env", "which", "time", "watch", "less", "more", "split", "join", "sleep",
     "test", "type", "id", "cal", "bc", "seq", "basename", "dirname", "history", "cat", "ip",
     "ss", "make", "node", "zip", "dig", "du", "ps", "pip", "stat", "diff", "tr", "tee", "ln"]
)  # fmt: skip
_RUN_WORDS = frozenset(["run", "use", "using", "with", "via", "execute", "exec", "try", "call"])
_TOKEN = re.compile(r"--?[A-Za-z][\w-]*|[A-Za-z][\w.+-]*|\||`")
_OPTION = re.compile(r"^--?[A-Za-z][\w-]*$")
_BACKQUOTED = re.compile(r"`([^`\n]{1,200})`")

_COMMAND_WORDS = frozenset(["command", "cmd", "cmdline", "commandline", "shell"])
_PROGRAM_WORDS = frozenset(["code", "program", "script", "source"])

_FILE_NAME = re.compile(r"(?<![\w/.@-])(?:~?[\w.-]*/)*[\w-]+\.[a-z][a-z0-9]{0,4}(?![\w/@-])")
_NOT_FILE = re.compile(r"(?i)^(?:e\.g|i\.e|etc|vs|mr|dr|st)$|^[\d.]+$")

_NUMBER_UNIT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(%|°|[A-Za-z]{3,})")
_SYMBOL_UNITS = {"%": "percent", "°": "degree"}


def _name_parts(name: str) -> set[str]:
    return set(re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name.lower())) - {""}


def _doc_words(prop: dict[str, Any]) -> set[str]:
    return set(re.findall(r"[a-z]+", str(prop.get("description", "")).lower()))


def _plain_string(prop: dict[str, Any]) -> bool:
    return prop.get("type") in (None, "string") and not any(
        k in prop for k in ("enum", "const", "format", "pattern")
    )


def takes_command(name: str, prop: dict[str, Any]) -> bool:
    """Whether a string parameter takes a command line (by its name or description)."""
    if not _plain_string(prop):
        return False
    return bool(_name_parts(name) & _COMMAND_WORDS) or "command" in _doc_words(prop)


def takes_program(name: str, prop: dict[str, Any]) -> bool:
    """Whether a string parameter takes a program or a command (by its name or description)."""
    if not _plain_string(prop):
        return False
    if takes_command(name, prop):
        return True
    return bool(_name_parts(name) & _PROGRAM_WORDS) or bool(
        _doc_words(prop) & {"program", "script"}
    )


def command_shapes(text: str) -> list[str]:
    """Return the utilities ``text`` names in the shape of a command line.

    ``grep``, ``wc``, ``du`` count wherever they occur; a utility name that is also an
    English word counts when an option follows it (``tail -n 20``), a pipe joins it, it is
    back-quoted, or a word like "run"/"using" precedes it.
    """
    found: list[str] = []
    for inner in _BACKQUOTED.findall(text):
        first = inner.split()[0] if inner.split() else ""
        if first:
            found.append(first)
    toks = _TOKEN.findall(text)
    for i, tok in enumerate(toks):
        w = tok.lower()
        if w in _UTILITIES:
            found.append(w)
        elif w in _WORD_UTILITIES:
            nxt = toks[i + 1] if i + 1 < len(toks) else ""
            prev = toks[i - 1].lower() if i > 0 else ""
            if _OPTION.match(nxt) or nxt == "|" or prev in ("|", *_RUN_WORDS):
                found.append(w)
    return list(dict.fromkeys(found))


def path_shaped(value: str) -> bool:
    """Whether a value the request gives looks like a path by itself: a folder separator, a
    home folder or a file extension, and no space outside a folder path. A quoted phrase
    ("commit with message 'update docs'") or a bare word is a path only where a parameter
    takes a file or folder name and the request says so ("the notes folder")."""
    if " " in value and "/" not in value:
        return False
    return "/" in value or value.startswith("~") or bool(file_names(value))


def file_names(text: str) -> list[str]:
    """Return the file names ``text`` gives (a name with an extension, maybe with folders)."""
    out: list[str] = []
    for m in _FILE_NAME.finditer(re.sub(r"(?i)\b[a-z][a-z+.-]*://\S+", " ", text)):
        tok = m.group(0).rstrip(".")
        if "." in tok and not _NOT_FILE.match(tok):
            out.append(tok)
    return list(dict.fromkeys(out))


def unit_numbers(text: str) -> list[tuple[str, str]]:
    """Return the ``(number, unit stem)`` pairs of ``text``: ``10 minutes`` -> (10, minute)."""
    out: list[tuple[str, str]] = []
    for num, unit in _NUMBER_UNIT.findall(text):
        word = _SYMBOL_UNITS.get(unit, unit.lower())
        out.append((num, _stem(word)))
    return out


def _stem(word: str) -> str:
    w = _relevance._stem(word)
    return w[:-1] if w.endswith("s") and len(w) > 3 else w


def takes_unit(name: str, prop: dict[str, Any], unit: str) -> bool:
    """Whether a number parameter is named for ``unit`` (a stem): ``minutes``,
    ``duration_minutes``. (A unit only in the docs -- "height in meters" -- is weaker
    evidence than the request needs: it measured calls on off-topic requests.)"""
    if prop.get("type") not in ("integer", "number"):
        return False
    return unit in {_stem(w) for w in _name_parts(name) if len(w) >= 3}


def hits(props: dict[str, dict[str, Any]], query: str, used: set[str]) -> dict[str, float]:
    """Return the parameters (not in ``used``) ``query`` gives a concrete value for, with
    the weight of that evidence: 1 for a command line or a file name for a program (not when
    the request names a command line: the file is then its operand), 0.5 for a number in the
    parameter's unit (a measured quantity is often only talked about).

    Each number with a unit is credited to one parameter only. A quoted string is not
    evidence: requests quote words they ask about ("what does 'ephemeral' mean?").
    """
    out: dict[str, float] = {}
    shapes = command_shapes(query)
    files = file_names(query)
    units = unit_numbers(query)
    for k, v in props.items():
        if k in used or not isinstance(v, dict):
            continue
        command = takes_command(k, v)
        if (command and shapes) or (takes_program(k, v) and files and (command or not shapes)):
            out[k] = 1.0
        else:
            unit = next((u for _, u in units if takes_unit(k, v, u)), None)
            if unit is not None:
                units = [p for p in units if p[1] != unit]
                out[k] = 0.5
    return out
