"""The layers of ``docs/ARCHITECTURE.md``, enforced: no upward import, no import cycle.

An AST walk over ``src/bastion`` collects every ``import`` of a bastion module: at module top,
inside functions, under ``TYPE_CHECKING`` alike (a function-local import is still a dependency;
it only moves the failure to run time). Two rules:

1. A module may import its own package, and packages in lower layers. A package in the same
   layer (siblings written ``a | b``) or a higher one is an error.
2. The module graph has no cycle (``a`` imports ``b`` ... imports ``a``), function-local edges
   included.

The layer order is read from the ``layers`` block in ``docs/ARCHITECTURE.md``, so the page and the
code cannot drift apart. Known violations live in ``KNOWN`` below, each with its reason; an entry
that no longer occurs fails the test, so the list can only shrink.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "bastion"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

# The one place for known violations: (importer module, imported module) -> why it is still there.
KNOWN: dict[tuple[str, str], str] = {
    ("bastion.security.hitl._python", "bastion.security.hitl._shell"): (
        "mutual recursion by design: python code runs shell commands (subprocess) and a shell runs "
        "`python -c`; each classifier analyses the code embedded in the other's"
    ),
}


def layers() -> list[list[str]]:
    """The layer block of docs/ARCHITECTURE.md, top first; each layer a list of unit names."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- layers:begin -->\s*```\n(.*?)```\s*<!-- layers:end -->", text, re.S)
    assert block, "docs/ARCHITECTURE.md lost its <!-- layers:begin --> block"
    rows = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [[u.strip() for u in row.split("|")] for row in rows if row]


def module_name(path: Path) -> str:
    """Dotted name of a source file (``bastion.llm`` for ``llm/__init__.py``)."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module under src/bastion by dotted name."""
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported bastion module, line) for every import statement anywhere in the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.startswith("bastion"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.split(".")[0] != "bastion":
                continue
            for alias in node.names:  # `from bastion.llm import store` imports a module
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def unit(module: str) -> str:
    """The layer unit a module belongs to: its top package, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, dict[str, int]]:
    """importer -> {imported: first line} over all bastion modules."""
    mods = modules()
    edges: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        out = edges.setdefault(name, {})
        for target, line in imports(name, path, set(mods)):
            if target != name:
                out.setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges.get(start, {})))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            nxt = next((t for t in it if t in edges), None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(edges.get(nxt, {}))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def violations() -> tuple[list[str], set[tuple[str, str]]]:
    """Upward/sideways imports and cycles not in KNOWN, and the KNOWN entries seen."""
    rank = {u: i for i, row in enumerate(layers()) for u in row}
    edges = graph()
    bad: list[str] = []
    seen: set[tuple[str, str]] = set()
    for src, targets in sorted(edges.items()):
        for dst, line in sorted(targets.items()):
            a, b = unit(src), unit(dst)
            if a == b or a not in rank or b not in rank or rank[b] > rank[a]:
                continue
            if (src, dst) in KNOWN:
                seen.add((src, dst))
                continue
            where = "the same layer" if rank[a] == rank[b] else "a higher layer"
            bad.append(f"{src}:{line} imports {dst} ({b} is in {where} than {a})")
    for comp in cycles(edges):
        inner = {(s, d) for s in comp for d in edges[s] if d in comp}
        if inner & KNOWN.keys():
            seen |= inner & KNOWN.keys()
            continue
        bad.append("import cycle: " + " -> ".join(comp))
    return bad, seen


def test_every_module_has_a_layer() -> None:
    placed = {u for row in layers() for u in row}
    missing = sorted({unit(m) for m in modules()} - placed)
    assert not missing, f"place {missing} in the layers block of docs/ARCHITECTURE.md"


def test_imports_point_down_and_never_cycle() -> None:
    bad, _ = violations()
    assert not bad, "\n".join(bad)


def test_known_exceptions_still_exist() -> None:
    _, seen = violations()
    stale = sorted(set(KNOWN) - seen)
    assert not stale, f"fixed, so remove from KNOWN in tests/unit/test_layers.py: {stale}"


def test_the_walk_sees_function_local_and_upward_imports(tmp_path: Path) -> None:
    """The checker itself: a function-local upward import and a two-module cycle are found."""
    code = "def f() -> None:\n    from bastion.cli import main\n    from . import base\n"
    path = tmp_path / "bastion" / "tools" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text(code)
    got = [t for t, _ in imports("bastion.tools.x", path, {"bastion.tools.base"})]
    assert got == ["bastion.cli", "bastion.tools.base"]
    assert cycles({"a": {"b": 1}, "b": {"a": 2}, "c": {"a": 3}}) == [["a", "b"]]
