"""Python code classified through its ``ast``: deletes, dynamic exec/import, subprocesses.

See :mod:`bastion.security.hitl._code` for the levels; ``analyze_python`` is the entry.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

from bastion.security.hitl import _shell
from bastion.security.hitl._code import _MAX_DEPTH, Finding, _existing_file, _inside
from bastion.tools.base import Risk

# ---- python ---------------------------------------------------------------------------------
_PY_DELETE = {"os.remove", "os.unlink", "os.rmdir", "os.removedirs", "pathlib.Path.unlink",
              "pathlib.Path.rmdir"}
_PY_TREE = {"shutil.rmtree"}
_PY_SHELL_STR = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
                 "asyncio.create_subprocess_shell", "commands.getoutput"}
_PY_ARGV = {"subprocess.run", "subprocess.call", "subprocess.check_call",
            "subprocess.check_output", "subprocess.Popen", "asyncio.create_subprocess_exec",
            "os.execv", "os.execve", "os.execvp", "os.execvpe", "os.execl", "os.execlp",
            "os.execle", "os.execlpe", "os.spawnv", "os.spawnve", "os.spawnvp", "os.spawnl",
            "os.spawnlp", "os.posix_spawn", "os.posix_spawnp", "pty.spawn"}
_PY_EXEC = {"exec", "eval", "compile", "builtins.exec", "builtins.eval", "builtins.compile"}
_PY_IMPORT = {"__import__", "importlib.import_module", "builtins.__import__",
              "runpy.run_path", "runpy.run_module"}
_PY_MOVE = {"shutil.move", "os.rename", "os.replace", "os.renames", "shutil.copy",
            "shutil.copy2", "shutil.copyfile", "shutil.copytree"}
_PY_MODULES = {"os", "shutil", "subprocess", "builtins", "importlib", "pathlib", "pty", "asyncio"}


class _PyVisitor(ast.NodeVisitor):
    def __init__(self, workspace: Path, depth: int) -> None:
        self.workspace = workspace
        self.depth = depth
        self.findings: list[Finding] = []
        self.alias: dict[str, str] = {}
        self.star: list[str] = []
        self.loops = 0

    def add(self, level: Risk, reason: str) -> None:
        self.findings.append(Finding(level, reason))

    # imports -------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        for a in node.names:
            if a.name == "*":
                self.star.append(mod)
            else:
                self.alias[a.asname or a.name] = f"{mod}.{a.name}"

    # names ---------------------------------------------------------------------------------
    def qual(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.alias:
                return self.alias[node.id]
            for mod in self.star:
                if f"{mod}.{node.id}" in _ALL_DANGER:
                    return f"{mod}.{node.id}"
            return node.id
        if isinstance(node, ast.Attribute):
            base = self.qual(node.value)
            if node.attr in ("unlink", "rmdir", "write_text", "write_bytes") and base != "os":
                return f"pathlib.Path.{node.attr}"  # any receiver: a Path made elsewhere
            if base is None:
                return f"?.{node.attr}"
            return f"{base}.{node.attr}"
        if isinstance(node, ast.Call):
            f = self.qual(node.func)
            if f in ("pathlib.Path", "Path", "pathlib.PurePath"):
                return "pathlib.Path"
            if f == "getattr" and len(node.args) >= 2:
                obj = self.qual(node.args[0])
                name = _const_str(node.args[1])
                return f"{obj}.{name}" if name is not None else None
            return None
        return None

    # loops ---------------------------------------------------------------------------------
    def _loop(self, node: ast.AST) -> None:
        self.loops += 1
        self.generic_visit(node)
        self.loops -= 1

    visit_For = visit_AsyncFor = visit_While = _loop
    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _loop

    # references to dangerous functions passed as values (map(os.remove, files)) -----------
    def visit_Attribute(self, node: ast.Attribute) -> None:
        q = self.qual(node)
        if q in _PY_DELETE or q in _PY_TREE:
            parent = getattr(node, "_parent_call", False)
            if not parent:
                self.add(Risk.HIGH, f"{q} passed as a value (deletes files in bulk)")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        node.func._parent_call = True  # type: ignore[attr-defined]
        q = self.qual(node.func)
        args = node.args
        if q is None:
            if isinstance(node.func, ast.Call) and self._is_getattr(node.func):
                self.add(Risk.HIGH, "calls a function looked up by a computed name")
        elif q == "getattr" and len(args) >= 2 and _const_str(args[1]) is None and (
                self.qual(args[0]) in _PY_MODULES):
            self.add(Risk.HIGH, f"looks up a {self.qual(args[0])} function by a computed name")
        elif q in _PY_TREE:
            self.add(Risk.HIGH, f"{q} deletes a directory tree")
        elif q in _PY_DELETE:
            if self.loops:
                self.add(Risk.HIGH, f"{q} in a loop deletes files in bulk")
        elif q in _PY_SHELL_STR or (q in _PY_ARGV and _kw_true(node, "shell")):
            code = _const_str(args[0]) if args else None
            if code is None:
                self.add(Risk.HIGH, f"{q} runs a command built at run time")
            else:
                self.findings.extend(_shell.analyze_shell(code, self.workspace,
                                                          depth=self.depth + 1))
        elif q in _PY_ARGV:
            argv = _const_argv(args[0]) if args else None
            if argv is None:
                self.add(Risk.HIGH, f"{q} runs a command built at run time")
            else:
                self.findings.extend(_shell.analyze_shell(shlex.join(argv), self.workspace,
                                                   depth=self.depth + 1))
        elif q in _PY_EXEC:
            code = _const_str(args[0]) if args else None
            if code is None:
                self.add(Risk.HIGH, f"{q.split('.')[-1]} of code built at run time")
            else:
                self.findings.extend(analyze_python(code, self.workspace, depth=self.depth + 1))
        elif q in _PY_IMPORT:
            if not args or _const_str(args[0]) is None:
                self.add(Risk.HIGH, f"{q} of a name built at run time")
        elif q in _PY_MOVE and len(args) >= 2:
            dest = _const_str(args[1])
            if dest is not None and not _inside(dest, self.workspace):
                self.add(Risk.HIGH, f"{q} to outside the workspace: {dest}")
            elif dest is None and self.loops and q in ("shutil.move", "os.rename", "os.replace"):
                self.add(Risk.HIGH, f"{q} in a loop to paths built at run time")
        elif q in ("open", "io.open", "builtins.open", "codecs.open"):
            self._open(node)
        elif q in ("pathlib.Path.write_text", "pathlib.Path.write_bytes"):
            self._path_write(node)
        elif q in ("os.truncate",):
            self.add(Risk.HIGH, "os.truncate empties a file")
        self.generic_visit(node)

    @staticmethod
    def _is_getattr(node: ast.Call) -> bool:
        return isinstance(node.func, ast.Name) and node.func.id == "getattr"

    def _open(self, node: ast.Call) -> None:
        mode = _const_str(node.args[1]) if len(node.args) > 1 else None
        for kw in node.keywords:
            if kw.arg == "mode":
                mode = _const_str(kw.value)
        path = _const_str(node.args[0]) if node.args else None
        if mode and "w" in mode and path is not None:
            if not _inside(path, self.workspace):
                self.add(Risk.HIGH, f"open(..., {mode!r}) outside the workspace: {path}")
            elif _existing_file(path, self.workspace):
                self.add(Risk.HIGH, f"open(..., {mode!r}) overwrites an existing file: {path}")

    def _path_write(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call) and (
                func.value.args):
            path = _const_str(func.value.args[0])
            if path is not None and (not _inside(path, self.workspace)
                                     or _existing_file(path, self.workspace)):
                self.add(Risk.HIGH, f"{func.attr} overwrites {path}")


_ALL_DANGER = (_PY_DELETE | _PY_TREE | _PY_SHELL_STR | _PY_ARGV | _PY_EXEC | _PY_IMPORT
               | _PY_MOVE | {"os.truncate"})


def _const_str(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and all(isinstance(v, ast.Constant)
                                               for v in node.values):
        return "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
    return None


def _const_argv(node: ast.AST) -> list[str] | None:
    if isinstance(node, (ast.List, ast.Tuple)):
        out = [_const_str(e) for e in node.elts]
        return None if any(v is None for v in out) else [v for v in out if v is not None]
    s = _const_str(node)
    return [s] if s is not None else None


def _kw_true(node: ast.Call, name: str) -> bool:
    return any(kw.arg == name and not (isinstance(kw.value, ast.Constant) and not kw.value.value)
               for kw in node.keywords)


def analyze_python(code: str, workspace: Path, *, depth: int = 0) -> list[Finding]:
    """Return the findings for Python source (empty: nothing risky found)."""
    if depth > _MAX_DEPTH:
        return [Finding(Risk.HIGH, "python code nested too deep to analyse")]
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return [Finding(Risk.HIGH, "python code does not parse (unknown meaning)")]
    v = _PyVisitor(workspace, depth)
    v.visit(tree)
    return v.findings
