"""Every finding of the December 2026 security review (issue 14) keeps its breach test.

Findings F1..F22 each need at least one ``tests/security/test_fNN_<slug>.py`` that defines a
test function, and at least one of those files must be linked from the README's promises
(so a finding cannot be fixed silently or its proof dropped). The issue's "Also" items and
item 4 (undo) have named breach files of their own.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_readme_security_links import README, ROOT, defined_tests, links, section

SECURITY = ROOT / "tests" / "security"
FINDINGS = range(1, 23)  # F1..F22
# Findings whose breach tests have not landed yet; each is listed here, with who works on it,
# and taken out once its test_fNN_*.py is on main. Empty: all 22 have landed.
PENDING: dict[int, str] = {}
ALSO = {  # issue 14's "Also" items and item 4
    "native parsers in a limited subprocess": "test_parser_isolation.py",
    "injected tool output never changes risk": "test_injected_output_risk.py",
    "MCP tool descriptions are untrusted": "test_mcp_untrusted_descriptions.py",
    "destruction in the workspace is undoable": "test_undo_destruction.py",
}


def breach_files(n: int) -> list[Path]:
    """Return finding ``n``'s breach test files that define at least one test."""
    return [p for p in sorted(SECURITY.glob(f"test_f{n:02d}_*.py")) if defined_tests(p)]


def test_every_finding_has_a_breach_test() -> None:
    missing = [f"F{n}" for n in FINDINGS if n not in PENDING and not breach_files(n)]
    assert missing == [], f"no tests/security/test_fNN_*.py with a test for {missing}"


def test_pending_findings_are_really_pending() -> None:
    landed = [f"F{n}" for n in PENDING if breach_files(n)]
    assert landed == [], f"{landed} landed: take them out of PENDING and add their promises"


def test_also_items_have_breach_tests() -> None:
    missing = [what for what, name in ALSO.items()
               if not (SECURITY / name).exists() or not defined_tests(SECURITY / name)]
    assert missing == []


def test_every_finding_is_a_promise_in_the_readme() -> None:
    linked = {link.target for link in links(section(README.read_text()))}
    unlinked = [f"F{n}" for n in FINDINGS if n not in PENDING
                and not any(str(p.relative_to(ROOT)) in linked for p in breach_files(n))]
    unlinked += [name for name in ALSO.values() if f"tests/security/{name}" not in linked]
    assert unlinked == [], f"the README's promises link no breach test of {unlinked}"
