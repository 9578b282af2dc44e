"""The README's security section cannot rot: every link in it points at something on disk.

``## Security: threat model and promises`` links each promise to the test that attacks it.
This test parses that section and fails when a linked file is gone, when a linked test
function (the link text, ``test_name`` or ``Class::test_name``) is no longer defined in its
file, when a ``#anchor`` names no README heading, or when a promise has no test link at all.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Security: threat model and promises"
PROMISES = "### Promises"
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_TEST_NAME = re.compile(r"^`?((?:Test\w+::)?test_\w+)`?$")


@dataclass(frozen=True)
class Link:
    """One markdown link of the section: its text, its target and the line it is on."""

    text: str
    target: str
    line: int


def section(text: str) -> list[tuple[int, str]]:
    """Return the (line number, line) pairs of the security section, up to the next ``## ``."""
    lines = text.splitlines()
    start = lines.index(SECTION)  # ValueError = the section is gone: that is a failure too
    out: list[tuple[int, str]] = []
    for i, line in enumerate(lines[start + 1:], start + 2):
        if line.startswith("## "):
            break
        out.append((i, line))
    return out


def links(lines: list[tuple[int, str]]) -> list[Link]:
    """Return every markdown link in ``lines``."""
    return [Link(m.group(1), m.group(2), n) for n, line in lines for m in _LINK.finditer(line)]


def promises(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Return the bullets of the ``### Promises`` list (one bullet is one promise)."""
    inside = False
    out: list[tuple[int, str]] = []
    for n, line in lines:
        if line.startswith("### "):
            inside = line == PROMISES
        elif inside and line.startswith("- "):
            out.append((n, line))
    return out


def defined_tests(path: Path) -> set[str]:
    """Return the test functions ``path`` defines: ``test_x`` and ``TestY::test_x``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{m.name}" for m in node.body
                         if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef))
    return {n for n in names if n.split("::")[-1].startswith("test_")}


def slug(heading: str) -> str:
    """Return GitHub's anchor for a heading's text."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Return the anchors of every README heading (outside code blocks)."""
    out: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6} (.+)$", line)):
            out.add(slug(m.group(1)))
    return out


def problems(text: str, root: Path) -> list[str]:
    """Return what is wrong with the security section of README ``text`` (empty = fine)."""
    lines = section(text)
    found: list[str] = []
    heads = anchors(text)
    for link in links(lines):
        where = f"README.md:{link.line}"
        if link.target.startswith(("http://", "https://")):
            continue
        if link.target.startswith("#"):
            if link.target[1:] not in heads:
                found.append(f"{where}: no heading has the anchor {link.target}")
            continue
        path = root / link.target.split("#")[0]
        if not path.exists():
            found.append(f"{where}: {link.target} does not exist")
            continue
        name = _TEST_NAME.match(link.text)
        if name and name.group(1) not in defined_tests(path):
            found.append(f"{where}: {link.target} defines no {name.group(1)}")
    for n, bullet in promises(lines):
        tests = [m for m in _LINK.finditer(bullet)
                 if _TEST_NAME.match(m.group(1)) and m.group(2).startswith("tests/")]
        if not tests:
            found.append(f"README.md:{n}: this promise links no test function")
    return found


def test_every_link_of_the_security_section_exists() -> None:
    text = README.read_text()
    assert len(promises(section(text))) >= 20, "the promises list is (nearly) gone"
    assert problems(text, ROOT) == []


def test_the_check_catches_a_rotten_link(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_real() -> None:\n    pass\n")
    text = "\n".join([
        "# x", SECTION, "See [ok](#x) and [gone](#nowhere).", PROMISES,
        "- Holds ([`test_real`](tests/test_x.py)).",
        "- Renamed ([`test_renamed`](tests/test_x.py)).",
        "- Deleted ([`test_real`](tests/test_gone.py)).",
        "- Unproven, with only a [section](#x) link.",
        "## next", "- not a promise",
    ])
    assert problems(text, tmp_path) == [
        "README.md:3: no heading has the anchor #nowhere",
        "README.md:6: tests/test_x.py defines no test_renamed",
        "README.md:7: tests/test_gone.py does not exist",
        "README.md:8: this promise links no test function",
    ]
