"""Shell commands parsed with tree-sitter-bash and classified by what they would do.

See :mod:`bastion.security.hitl._code` for the levels; ``analyze_shell`` is the entry.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bastion.security.hitl import _python
from bastion.security.hitl._code import (
    _DEVNULL,
    _MAX_DEPTH,
    SANDBOX_WORKSPACE,
    Finding,
    _existing_file,
    _inside,
)
from bastion.tools.base import Risk


@lru_cache(maxsize=1)
def _parser() -> Any:
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))


_SHELLS = {"sh", "bash", "zsh", "dash", "ksh", "ash", "mksh", "fish", "rbash"}
_PYTHON = re.compile(r"^(python|pypy)(\d+(\.\d+)?)?$")
_OTHER_INTERP = {"node", "nodejs", "perl", "ruby", "php", "lua", "deno", "bun", "osascript"}
_ROOT = {"sudo", "doas", "su", "pkexec", "run0"}
# wrappers that run the command in their arguments: {name: options that take a value}
_WRAPPERS: dict[str, set[str]] = {
    "env": {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"},
    "nice": {"-n", "--adjustment"}, "ionice": {"-c", "-n", "-p", "-t"},
    "nohup": set(), "time": {"-f", "-o"}, "command": set(), "builtin": set(), "exec": {"-a"},
    "setsid": set(), "stdbuf": {"-i", "-o", "-e"}, "busybox": set(), "chrt": set(),
    "taskset": set(), "unbuffer": set(), "flock": {"-w", "-E"}, "caffeinate": set(),
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t"}, "doas": {"-u", "-C"},
    "pkexec": {"--user"}, "run0": {"-u", "--user"},
}
_DESTROY = {"shred", "wipefs", "blkdiscard", "fdisk", "sfdisk", "parted", "mke2fs", "mkswap",
            "truncate"}
_POWER = {"shutdown", "reboot", "halt", "poweroff"}


# ---- shell ----------------------------------------------------------------------------------
@dataclass
class _Cmd:
    name: str | None
    args: list[str | None]
    stdin: str | None = None  # "pipe" | "heredoc:<body>" | "herestring" | "file"


@dataclass
class _ShellState:
    workspace: Path
    findings: list[Finding] = field(default_factory=list)
    consts: dict[str, str] = field(default_factory=dict)
    downloads: bool = False
    depth: int = 0
    stdin: dict[int, str] = field(default_factory=dict)  # command node id -> its stdin

    def add(self, level: Risk, reason: str) -> None:
        self.findings.append(Finding(level, reason))


def _unescape_word(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text.replace("\\\n", ""))


def _static(node: Any, st: _ShellState) -> str | None:
    """Return the word's value as the shell would see it, or None when it is not static."""
    t = node.type
    text: str = node.text.decode("utf-8", "replace")
    if t == "word" or t == "number":
        return _unescape_word(text)
    if t == "raw_string":
        return text[1:-1]
    if t == "ansi_c_string":
        try:
            return codecs.decode(text[2:-1], "unicode_escape")
        except (UnicodeDecodeError, ValueError):
            return None
    if t == "string":
        parts = []
        for c in node.children:
            if c.type == '"':
                continue
            if c.type == "string_content":
                parts.append(re.sub(r'\\([$`"\\])', r"\1", c.text.decode("utf-8", "replace")))
            else:
                v = _static(c, st)
                if v is None:
                    return None
                parts.append(v)
        return "".join(parts)
    if t == "concatenation":
        vals = [_static(c, st) for c in node.children]
        return None if any(v is None for v in vals) else "".join(v or "" for v in vals)
    if t in ("simple_expansion", "expansion"):
        names = [c for c in node.children if c.type == "variable_name"]
        if len(names) == 1 and len(node.children) <= 4:  # $x / ${x}, no operators
            return st.consts.get(names[0].text.decode())
        return None
    return None


def _flags(args: Sequence[str | None]) -> tuple[set[str], set[str]]:
    """Return (long options, short option letters) of ``args``."""
    long: set[str] = set()
    short: set[str] = set()
    for a in args:
        if a is None or a == "--":
            continue
        if a.startswith("--"):
            long.add(a.split("=", 1)[0])
        elif a.startswith("-") and len(a) > 1:
            short.update(a[1:])
    return long, short


def _positionals(args: Sequence[str | None]) -> list[str | None]:
    out: list[str | None] = []
    rest = False
    for a in args:
        if a is None or rest:
            out.append(a)
        elif a == "--":
            rest = True
        elif not a.startswith("-") or a == "-":
            out.append(a)
    return out


def analyze_shell(source: str, workspace: Path, *, depth: int = 0) -> list[Finding]:
    """Return the findings for a shell command line (empty: nothing risky found)."""
    st = _ShellState(workspace, depth=depth)
    _shell_into(source, st)
    return st.findings


def _shell_into(source: str, st: _ShellState) -> None:
    if st.depth > _MAX_DEPTH:
        st.add(Risk.HIGH, "shell code nested too deep to analyse")
        return
    tree = _parser().parse(source.encode("utf-8", "surrogatepass"))
    root = tree.root_node
    if root.has_error:
        st.add(Risk.HIGH, "shell command does not parse (unknown meaning)")
    piped: set[int] = set()
    _walk(root, st, piped)


def _walk(node: Any, st: _ShellState, piped: set[int]) -> None:
    t = node.type
    if t == "pipeline":
        cmds = [c for c in node.children if c.is_named]
        for c in cmds[1:]:
            for sub in _commands_of(c):
                piped.add(sub.id)
    elif t == "variable_assignment":
        name = node.child_by_field_name("name")
        value = node.child_by_field_name("value")
        if name is not None:
            v = _static(value, st) if value is not None else ""
            if v is None:
                st.consts.pop(name.text.decode(), None)
            else:
                st.consts[name.text.decode()] = v
    elif t == "command":
        _command(node, st, piped)
    elif t == "redirected_statement":
        _redirects(node, st)
    for c in node.children:
        _walk(c, st, piped)


def _commands_of(node: Any) -> Iterator[Any]:
    """The commands a pipeline element starts with (a command, or the first in a group)."""
    if node.type == "command":
        yield node
    elif node.type in ("redirected_statement", "subshell", "compound_statement"):
        for c in node.children:
            if c.is_named:
                yield from _commands_of(c)
                break


def _redirects(node: Any, st: _ShellState) -> None:
    body = node.child_by_field_name("body")
    stdin: str | None = None
    for c in node.children:
        if c.type == "heredoc_redirect":
            hb = next((x for x in c.children if x.type == "heredoc_body"), None)
            dynamic = hb is not None and any(x.is_named and x.type != "heredoc_content"
                                             for x in hb.children)
            text = hb.text.decode("utf-8", "replace") if hb is not None else ""
            stdin = "herestring" if dynamic else "heredoc:" + text
        elif c.type == "herestring_redirect":
            stdin = "herestring"
        elif c.type == "file_redirect":
            op = next((x.text.decode() for x in c.children if not x.is_named), "")
            target = c.child_by_field_name("destination") or next(
                (x for x in reversed(c.children) if x.is_named
                 and x.type != "file_descriptor"), None)
            dest = _static(target, st) if target is not None else None
            if op.startswith("<") and op != "<>":
                stdin = "file"
                continue
            if dest is None or op in (">&", "<&", "&>>", ">>") and dest.isdigit():
                continue
            if dest.startswith("/dev/") and dest not in _DEVNULL:
                st.add(Risk.CRITICAL, f"writes to a device ({dest})")
            elif not _inside(dest, st.workspace):
                st.add(Risk.HIGH, f"redirect writes outside the workspace: {dest}")
            elif op in (">", ">|", "&>", ">&") and _existing_file(dest, st.workspace):
                st.add(Risk.HIGH, f"redirect overwrites an existing file: {dest}")
    if body is not None and stdin is not None:
        for cmd in _commands_of(body):
            st.stdin[cmd.id] = stdin  # read by _command when the walk reaches it


def _command(node: Any, st: _ShellState, piped: set[int]) -> None:
    name_node = node.child_by_field_name("name")
    args: list[str | None] = []
    for c in node.children:
        if c.type in ("variable_assignment", "command_name", "file_redirect",
                      "herestring_redirect", "heredoc_redirect") or not c.is_named:
            continue
        if c.type in ("comment",):
            continue
        args.append(_static(c, st))
    stdin = st.stdin.pop(node.id, None)
    if node.id in piped:
        stdin = "pipe"
    if name_node is None:
        return
    inner = name_node.children[0] if name_node.children else name_node
    name = _static(inner, st)
    _analyze_cmd(_Cmd(name, args, stdin), st)


def _analyze_cmd(cmd: _Cmd, st: _ShellState) -> None:  # noqa: C901 - one table of commands
    name, args = cmd.name, list(cmd.args)
    if name is None:
        st.add(Risk.HIGH, "command name is computed at run time (variable or substitution)")
        return
    base = name.rsplit("/", 1)[-1]
    # look through wrappers: sudo env nice xargs timeout ...
    while True:
        if base in _ROOT:
            st.add(Risk.CRITICAL, f"runs as root ({base})")
        if base in _WRAPPERS or base == "timeout" or base == "xargs" or base == "chroot":
            takes = _WRAPPERS.get(base, {"-s", "-k", "--signal", "--kill-after", "-I", "-n",
                                         "-P", "-d", "-E", "-L", "-a", "--userspec"})
            i = 0
            while i < len(args):
                a = args[i]
                if a is None:
                    break
                if base == "env" and "=" in a and not a.startswith("-"):
                    i += 1
                    continue
                if a.startswith("-") and a != "-":
                    i += 2 if a in takes else 1
                    continue
                break
            if base in ("timeout", "chroot") and i < len(args):
                i += 1  # the duration / the new root
            rest = args[i:]
            if base == "busybox" and not rest:
                return
            if base in ("su",) and "-c" in args:
                k = args.index("-c")
                _nested_shell(args[k + 1] if k + 1 < len(args) else None, st, f"{base} -c")
                return
            if not rest:
                return
            nxt = rest[0]
            if nxt is None:
                st.add(Risk.HIGH, f"{base} runs a command computed at run time")
                return
            extra: list[str | None] = [None] if base == "xargs" else []
            name, args = nxt, [*rest[1:], *extra]
            base = name.rsplit("/", 1)[-1]
            continue
        break
    pos = _positionals(args)
    long, short = _flags(args)
    if base in ("rm", "unlink", "rmdir"):
        if base == "rm" and ({"--recursive", "--force"} & long or {"r", "R", "f"} & short):
            st.add(Risk.CRITICAL, "rm -r/-f deletes files without asking")
        elif any(p is None or any(ch in p for ch in "*?[") for p in pos):
            st.add(Risk.HIGH, f"{base} of a glob or of paths computed at run time")
        elif any(p is not None and not _inside(p, st.workspace) for p in pos):
            st.add(Risk.HIGH, f"{base} outside the workspace")
    elif base == "find":
        if "-delete" in args:
            st.add(Risk.CRITICAL, "find -delete")
        for k, a in enumerate(args):
            if a in ("-exec", "-execdir", "-ok", "-okdir") and k + 1 < len(args):
                end = next((j for j in range(k + 1, len(args)) if args[j] in (";", "+")),
                           len(args))
                sub = [None if x is not None and "{}" in x else x for x in args[k + 2:end]]
                _analyze_cmd(_Cmd(args[k + 1], sub), st)
    elif base in _DESTROY or base.startswith("mkfs"):
        st.add(Risk.CRITICAL, f"{base} destroys data")
    elif base == "dd" and any(a is None or a.startswith("of=") for a in args):
        st.add(Risk.CRITICAL, "dd of= overwrites its target")
    elif base in _POWER or (base in ("init", "telinit") and {"0", "6"} & set(pos)):
        st.add(Risk.CRITICAL, f"{base} stops the machine")
    elif base in ("kill", "pkill", "killall") and ("-1" in pos or "-1" in args and
                                                   base == "kill" and "-9" in args):
        st.add(Risk.CRITICAL, "kills every process")
    elif base == "git":
        _git(args, st)
    elif base in ("mv", "cp", "ln", "install", "rsync", "scp", "tee"):
        if base == "mv" and any(p is None for p in pos):
            st.add(Risk.HIGH, "mv of paths computed at run time")
        targets = pos if base == "tee" else pos[-1:] if len(pos) > 1 else []
        if base == "mv" and len(pos) > 1:
            sources = pos[:-1]
            if any(p is not None and not _inside(p, st.workspace) for p in targets) or any(
                    p is not None and os.path.normpath(p) in (".", SANDBOX_WORKSPACE)
                    for p in sources):
                st.add(Risk.HIGH, "mv moves files out of the workspace")
                return
        for p in targets:
            if p is not None and not _inside(p, st.workspace):
                st.add(Risk.HIGH, f"{base} writes outside the workspace: {p}")
    elif base in ("chmod", "chown", "chgrp"):
        if "--recursive" in long or "R" in short:
            st.add(Risk.HIGH, f"{base} -R changes a whole tree")
        mode = pos[0] if pos else None
        if base == "chmod" and mode is not None and (
                re.fullmatch(r"0*[2467][0-7]{3}", mode) or re.search(r"[+=][rwx]*s", mode)):
            st.add(Risk.HIGH, "chmod sets a setuid/setgid bit")
    elif base == "eval":
        st.add(Risk.HIGH, "eval runs a string as code")
        if all(a is not None for a in args):
            _nested_shell(" ".join(a for a in args if a is not None), st, "eval")
    elif base in ("source", "."):
        pass  # a script file in the workspace: as opaque as running it, like `sh file`
    elif base in _SHELLS:
        _interp(base, args, cmd.stdin, st, shell=True)
    elif _PYTHON.match(base):
        _interp(base, args, cmd.stdin, st, shell=False)
    elif base in _OTHER_INTERP:
        if any(a in ("-e", "-c", "--eval", "-p", "-E", "-r") for a in args) and any(
                a is None for a in args):
            st.add(Risk.HIGH, f"{base} runs code computed at run time")
        elif cmd.stdin in ("pipe", "herestring") and not pos:
            st.add(Risk.HIGH, f"code is piped into {base}")
    elif base in ("curl", "wget", "fetch", "aria2c"):
        st.downloads = True
    elif base in ("crontab", "at", "batch", "systemctl", "launchctl"):
        st.add(Risk.HIGH, f"{base} schedules or changes services")
    elif base == ":" or base == "true":
        pass


def _git(args: list[str | None], st: _ShellState) -> None:
    i = 0
    while i < len(args):  # global options before the subcommand
        a = args[i]
        if a in ("-C", "-c", "--git-dir", "--work-tree", "--namespace"):
            if a == "-c" and i + 1 < len(args):
                _git_config([args[i + 1]], st)
            i += 2
        elif a is not None and a.startswith("-"):
            i += 1
        else:
            break
    if i >= len(args):
        return
    sub, rest = args[i], args[i + 1:]
    if sub is None:
        st.add(Risk.HIGH, "git subcommand computed at run time")
        return
    long, short = _flags(rest)
    pos = _positionals(rest)
    if sub == "push" and (
            {"--force", "--force-with-lease", "--mirror", "--delete", "--prune",
             "--force-if-includes"} & long or {"f", "d"} & short
            or any(p is not None and p.startswith(("+", ":")) for p in pos[1:])):
        st.add(Risk.CRITICAL, "git push that overwrites or deletes remote history")
    elif sub == "reset" and "--hard" in long:
        st.add(Risk.CRITICAL, "git reset --hard discards changes")
    elif sub == "clean" and ("--force" in long or "f" in short):
        st.add(Risk.CRITICAL, "git clean -f deletes untracked files")
    elif sub == "branch" and ("D" in short or "--delete" in long and "--force" in long):
        st.add(Risk.CRITICAL, "git branch -D deletes unmerged work")
    elif sub in ("filter-branch", "filter-repo"):
        st.add(Risk.CRITICAL, f"git {sub} rewrites history")
    elif sub in ("checkout", "restore", "switch") and (
            "--force" in long or "f" in short or "." in pos):
        st.add(Risk.HIGH, f"git {sub} discards local changes")
    elif sub == "stash" and pos[:1] in (["drop"], ["clear"]):
        st.add(Risk.HIGH, "git stash drop/clear discards saved work")
    elif sub == "config":
        _git_config(pos, st)


_GIT_EXEC_KEYS = re.compile(r"(?i)^(core\.(fsmonitor|hookspath|sshcommand|pager|editor|"
                            r"askpass)|alias\.|.*\.(command|cmd|helper|textconv|clean|smudge|"
                            r"process)$)")


def _git_config(items: Sequence[str | None], st: _ShellState) -> None:
    for it in items:
        key = (it or "").split("=", 1)[0]
        if it is None or _GIT_EXEC_KEYS.match(key):
            st.add(Risk.HIGH, f"git config sets a command git will run ({key or '?'})")
            return


def _nested_shell(code: str | None, st: _ShellState, what: str) -> None:
    if code is None:
        st.add(Risk.HIGH, f"{what} runs a script computed at run time")
        return
    st.depth += 1
    try:
        _shell_into(code, st)
    finally:
        st.depth -= 1


def _interp(base: str, args: list[str | None], stdin: str | None, st: _ShellState,
            *, shell: bool) -> None:
    flag = "-c"
    for k, a in enumerate(args):
        if a is None:
            continue
        if a == flag or (shell and a.startswith("-") and not a.startswith("--")
                         and a.endswith("c") and len(a) > 1):
            code = args[k + 1] if k + 1 < len(args) else None
            if shell:
                _nested_shell(code, st, f"{base} -c")
            elif code is None:
                st.add(Risk.HIGH, f"{base} -c runs code computed at run time")
            else:
                st.findings.extend(_python.analyze_python(code, st.workspace, depth=st.depth + 1))
            return
        if not shell and a == "-m":
            return
        if a == "-" or not a.startswith("-"):
            if a != "-":  # a script file
                if st.downloads:
                    st.add(Risk.HIGH, f"{base} runs a file downloaded in the same command")
                return
            break
    # code comes from stdin
    if stdin is not None and stdin.startswith("heredoc:"):
        body = stdin[len("heredoc:"):]
        if shell:
            _nested_shell(body, st, base)
        else:
            st.findings.extend(_python.analyze_python(body, st.workspace, depth=st.depth + 1))
    elif stdin in ("pipe", "herestring", "file") or any(a is None for a in args):
        st.add(Risk.HIGH, f"code is piped into {base} (its content is not known)")
