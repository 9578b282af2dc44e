"""Risk classification of tool calls by tool, arguments and context, from rules in config.

Code arguments (``shell``'s command, ``python``'s code) are classified semantically
(:mod:`bastion.security.hitl._code`: a real shell parser and Python's ``ast``); the old
destructive-command regex stays as an advisory extra over every string argument. The
classifier also keeps per-session state that only the gateway's own observations change,
never a tool's output: the domains a session reached and its *taint* (a secret was injected
into one of its calls, or it read a private file); once tainted, every later egress-capable
call of the session asks a human.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bastion.security.gateway import CallRequest, Next, ToolResult
from bastion.security.hitl._code import Finding
from bastion.security.hitl._python import analyze_python
from bastion.security.hitl._shell import analyze_shell
from bastion.tools.base import Risk

Condition = Literal["destructive_shell", "risky_code", "outside_workspace", "overwrite_file",
                    "new_egress_domain", "secret_use", "tainted_egress"]
# A named extra condition (e.g. ``browser:click-destructive``): returns why it holds, or None.
ConditionFn = Callable[[Any, Mapping[str, Any], str | None], str | None]

DESTRUCTIVE = re.compile(
    r"(?ix)"
    r"\brm\s+(-[a-z]*[rf][a-z]*\s+)+|"  # rm -rf / rm -r -f
    r"\bmkfs(\.\w+)?\b|\bdd\s+[^|;]*\bof=/dev/|>\s*/dev/(sd|nvme|hd|vd)|"
    r"\b(shutdown|reboot|halt|poweroff)\b|\binit\s+[06]\b|"
    r"\bchmod\s+(-[a-z]*R[a-z]*\s+)?0?777\s+/|\bchown\s+-R\s+\S+\s+/(\s|$)|"
    r":\(\)\s*\{\s*:\|:&\s*\};:|"  # fork bomb
    r"\bgit\s+push\s+[^|;]*(--force|-f\b)|\bgit\s+reset\s+--hard|\bgit\s+clean\s+-[a-z]*f|"
    r"\b(drop\s+(table|database|schema)|truncate\s+table)\b|\bdelete\s+from\s+\w+\s*(;|$)|"
    r"\b(curl|wget)\b[^|;]*\|\s*(sudo\s+)?(ba|z|da)?sh\b|"
    r"\bkill(all)?\s+-9\s+(-1|1)\b|\bsudo\b|\bshred\b|\bwipefs\b"
)
_PATH_ARG = re.compile(r"(?i)^(path|file|filename|file_path|dest|destination|target|dir|"
                       r"directory|output|out|to|src|source)$")
_WRITE_TOOL = re.compile(r"(?i)(write|edit|delete|remove|move|copy|mkdir|save|patch|append|"
                         r"create|rm|mv|cp|put|upload)")
# The arguments naming where a writing tool writes (not ``src``/``source``: read, not written).
_TARGET_ARG = re.compile(r"(?i)^(path|file|filename|file_path|filepath|dest|destination|"
                         r"target|output|out|to)$")
_APPEND_MODES = frozenset(["a", "append", "ab", "a+"])
_REDIRECT = re.compile(r"(?:>>?|\btee\s+(?:-a\s+)?)\s*(['\"]?)([~/][^\s'\";|&]*)\1")
_URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s'\"<>]+", re.I)


@dataclass(slots=True)
class RiskRule:
    """Raise a call to ``level`` when every given condition holds.

    ``tools``: glob patterns of tool names; ``match``: a regex searched in the string
    arguments (only ``argument`` when given); ``when``: a context condition.
    """

    name: str
    level: Risk
    tools: list[str] = field(default_factory=lambda: ["*"])
    match: str | None = None
    argument: str | None = None
    when: Condition | str | None = None  # a str names a condition added to the classifier
    _re: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._re = re.compile(self.match) if self.match else None


def builtin_rules() -> list[RiskRule]:
    """Return the default rules (config can add more or switch them off).

    Every level is at or above the default threshold (HIGH), so each of them asks.
    """
    return [
        RiskRule("destructive-shell", Risk.CRITICAL, when="destructive_shell"),
        RiskRule("risky-code", Risk.HIGH, when="risky_code"),
        RiskRule("write-outside-workspace", Risk.HIGH, when="outside_workspace"),
        RiskRule("overwrite-existing-file", Risk.HIGH, when="overwrite_file"),
        RiskRule("new-egress-domain", Risk.HIGH, when="new_egress_domain"),
        RiskRule("secret-use", Risk.HIGH, when="secret_use"),
        RiskRule("tainted-egress", Risk.HIGH, when="tainted_egress"),
    ]


# The code arguments of the built-in tools and their language.
CODE_ARGUMENTS: dict[str, dict[str, str]] = {"shell": {"command": "shell"},
                                             "python": {"code": "python"}}
# Files whose content the model is not meant to see; reading one taints the session.
PRIVATE_FILES: tuple[str, ...] = (
    ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.kdbx", "id_rsa*",
    "id_ecdsa*", "id_ed25519*", "id_dsa*", ".netrc", ".git-credentials", ".npmrc", ".pypirc",
    "credentials", "credentials.json", ".htpasswd", "*.keystore",
)
_PRIVATE_DIRS = {".ssh", ".aws", ".gnupg", ".kube", ".docker"}
_TOKEN = re.compile(r"[^\s'\"`;|&<>(){}=,]+")


def tool_egress(tool: Any) -> bool:
    """Whether ``tool`` declares it can reach the network (unknown tools: yes)."""
    return bool(getattr(tool, "egress", True))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


class RiskClassifier:
    """Classify a call: the tool's own risk raised by every matching rule."""

    def __init__(
        self,
        rules: Iterable[RiskRule],
        workspace: Path,
        *,
        secret_use: Callable[[Any], bool] | None = None,
        known_domains: Iterable[str] = (),
        conditions: Mapping[str, ConditionFn] | None = None,
        egress_capable: Callable[[Any], bool] | None = None,
        code_arguments: Mapping[str, Mapping[str, str]] | None = None,
        private_files: Iterable[str] = PRIVATE_FILES,
        known_networks: Iterable[str] = (),
    ) -> None:
        self.rules = list(rules)
        self.egress_capable = egress_capable or tool_egress
        self.code_arguments = {k: dict(v) for k, v in (code_arguments or CODE_ARGUMENTS).items()}
        self.private_files = list(private_files)
        self._taint: dict[str | None, str] = {}
        self.conditions: dict[str, ConditionFn] = dict(conditions or {})
        self.workspace = workspace.resolve()
        self.secret_use = secret_use or (lambda tool: False)
        self.known_domains = {d.lower() for d in known_domains}
        self.known_networks = [ipaddress.ip_network(n, strict=False) for n in known_networks]
        self._seen: dict[str | None, set[str]] = {}

    # ---- conditions ----------------------------------------------------------------------
    def destructive(self, args: Mapping[str, Any]) -> bool:
        """Any string argument looks like a destructive shell command (advisory regex)."""
        return any(DESTRUCTIVE.search(s) for s in _strings(args))

    def analyze(self, tool: Any, args: Mapping[str, Any]) -> list[Finding]:
        """Semantic findings for the tool's code arguments (shell/python), parsed."""
        out: list[Finding] = []
        for arg, language in self.code_arguments.get(tool.name, {}).items():
            code = args.get(arg)
            if not isinstance(code, str):
                continue
            if language == "shell":
                out.extend(analyze_shell(code, self.workspace))
            elif language == "python":
                out.extend(analyze_python(code, self.workspace))
        return out

    def private_reads(self, tool: Any, args: Mapping[str, Any]) -> list[str]:
        """Private files (keys, ``.env``, credentials) named in a non-egress call's arguments."""
        if self.egress_capable(tool) and not self.code_arguments.get(tool.name):
            return []
        found: list[str] = []
        for s in _strings(args):
            for tok in _TOKEN.findall(s):
                parts = [p for p in tok.split("/") if p]
                if not parts:
                    continue
                if _PRIVATE_DIRS & set(parts[:-1]) or any(
                        fnmatch.fnmatchcase(parts[-1], g) for g in self.private_files):
                    found.append(tok)
        return list(dict.fromkeys(found))

    def taint(self, session_id: str | None) -> str | None:
        """Why the session is tainted (a secret was injected, a private file read), or None."""
        return self._taint.get(session_id)

    def mark_tainted(self, session_id: str | None, why: str) -> None:
        """Taint the session: every later egress-capable call of it asks a human."""
        self._taint.setdefault(session_id, why)

    def outside_workspace(self, tool: str, args: Mapping[str, Any]) -> list[str]:
        """Paths a writing tool (or a shell redirect) would write outside the workspace."""
        out: list[str] = []
        if _WRITE_TOOL.search(tool):
            for key, val in args.items():
                if isinstance(val, str) and _PATH_ARG.match(str(key)) and self._outside(val):
                    out.append(val)
        for s in _strings(args):
            out.extend(m.group(2) for m in _REDIRECT.finditer(s)
                       if not m.group(2).startswith("/dev/null") and self._outside(m.group(2)))
        return out

    def overwrites(self, tool: str, args: Mapping[str, Any]) -> list[str]:
        """Existing workspace files a writing tool would replace, truncate or delete.

        The counterpart of the shell's ``>`` over an existing file (risky-code): a
        ``write_file`` of empty or new content over ``config/server.yaml`` destroys what was
        there. Appending (``append: true``, ``mode: "a"``) and creating a new file do not.
        """
        if not _WRITE_TOOL.search(tool) or args.get("append") is True or (
                str(args.get("mode", "")).lower() in _APPEND_MODES):
            return []
        out: list[str] = []
        for key, val in args.items():
            if isinstance(val, str) and val and _TARGET_ARG.match(str(key)):
                p = Path(val).expanduser()
                full = p if p.is_absolute() else self.workspace / p
                try:
                    # lexists: a symbolic link (even a dangling one) is there to be replaced
                    if os.path.lexists(full) and not full.is_dir():
                        out.append(val)
                except OSError:  # a path the OS rejects (too long, NUL): the tool refuses it
                    continue
        return out

    def _outside(self, path: str) -> bool:
        p = Path(path).expanduser()
        full = (p if p.is_absolute() else self.workspace / p).resolve()
        return not full.is_relative_to(self.workspace)

    def new_domains(self, session_id: str | None, args: Mapping[str, Any]) -> list[str]:
        """Hosts in URL arguments this session has not reached before."""
        seen = self._seen.get(session_id, set())
        hosts = []
        for s in _strings(args):
            for m in _URL.finditer(s):
                host = (urlsplit(m.group()).hostname or "").lower()
                if host and host not in seen and not self._known(host):
                    hosts.append(host)
        return list(dict.fromkeys(hosts))

    def _known(self, host: str) -> bool:
        """Tell whether the config names ``host`` (known_domains, egress allowlists, ``*.x``)."""
        if host in self.known_domains or any(
                d.startswith("*.") and host.endswith(d[1:]) for d in self.known_domains):
            return True
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.known_networks)

    def remember_domains(self, session_id: str | None, hosts: Iterable[str]) -> None:
        """Mark ``hosts`` as reached in this session (after an allowed call)."""
        self._seen.setdefault(session_id, set()).update(hosts)

    # ---- classification ------------------------------------------------------------------
    def classify(self, tool: Any, args: Mapping[str, Any], session_id: str | None
                 ) -> tuple[Risk, list[str], list[str], dict[str, Any]]:
        """Return (risk, reasons, names of the rules that matched, context found)."""
        risk = Risk(tool.risk)
        reasons: list[str] = []
        names: list[str] = []
        ctx: dict[str, Any] = {}
        findings: list[Finding] | None = None
        for rule in self.rules:
            if not any(fnmatch.fnmatchcase(tool.name, pat) for pat in rule.tools):
                continue
            if rule._re is not None:
                pool = ([args[rule.argument]] if rule.argument and isinstance(
                    args.get(rule.argument), str) else list(_strings(args)))
                if not any(rule._re.search(s) for s in pool):
                    continue
            why = rule.name
            if rule.when in ("destructive_shell", "risky_code"):
                if findings is None:
                    findings = self.analyze(tool, args)
                level = Risk.CRITICAL if rule.when == "destructive_shell" else Risk.HIGH
                hits = [f.reason for f in findings if f.level == level]
                if rule.when == "destructive_shell" and not hits and self.destructive(args):
                    hits = ["matches the destructive-command pattern"]
                if not hits:
                    continue
                kind = "destructive" if rule.when == "destructive_shell" else "risky code"
                why = f"{kind}: {'; '.join(dict.fromkeys(hits[:3]))}"
            elif rule.when == "outside_workspace":
                paths = self.outside_workspace(tool.name, args)
                if not paths:
                    continue
                why = f"writes outside the workspace: {', '.join(paths[:3])}"
            elif rule.when == "overwrite_file":
                paths = self.overwrites(tool.name, args)
                if not paths:
                    continue
                why = f"replaces an existing file: {', '.join(paths[:3])}"
            elif rule.when == "new_egress_domain":
                hosts = self.new_domains(session_id, args) if self.egress_capable(tool) else []
                if not hosts:
                    continue
                ctx["new_domains"] = hosts
                why = f"new egress domain: {', '.join(hosts[:3])}"
            elif rule.when == "secret_use":
                if not self.secret_use(tool):
                    continue
                why = "uses secrets"
            elif rule.when == "tainted_egress":
                if not self.egress_capable(tool):
                    continue
                taint = self.taint(session_id)
                if taint is None:  # reading a private file and sending in one call counts too
                    own = self.private_reads(tool, args)
                    taint = f"this call reads {own[0]}" if own else None
                if taint is None:
                    continue
                ctx["taint"] = taint
                why = f"can send data out of a tainted session ({taint})"
            elif rule.when is not None:  # an added condition (browser rules ...)
                check = self.conditions.get(rule.when)
                found = check(tool, args, session_id) if check is not None else None
                if found is None:
                    continue
                why = f"{rule.name}: {found}"
            if rule.level > risk:
                risk = rule.level
            reasons.append(f"{why} ({rule.level.name})")
            names.append(rule.name)
        return risk, reasons, names, ctx


class RiskStage:
    """Gateway stage: classify the call and set the session's approval threshold on it."""

    def __init__(self, classifier: RiskClassifier,
                 threshold_for: Callable[[str | None], Risk | None] | None = None) -> None:
        self.classifier = classifier
        self.threshold_for = threshold_for

    async def __call__(self, req: CallRequest, nxt: Next) -> ToolResult:
        """Classify, annotate, continue; then learn domains and taint from what happened.

        Only the gateway's own observations change the session state (a secret it injected,
        a private file the call named, a domain an allowed call reached), never the text a
        tool returned, so an injected instruction in tool output cannot lower a later risk.
        """
        c = self.classifier
        risk, reasons, names, ctx = c.classify(req.tool, req.call.arguments, req.session_id)
        req.risk = max(req.risk, risk)
        req.reasons.extend(reasons)
        if names:
            req.annotations["risk_rules"] = names
        if ctx.get("taint"):  # exfiltration guard: asks even under `allow` or a session rule
            req.needs_approval = True
            req.taint = str(ctx["taint"])
        threshold = self.threshold_for(req.session_id) if self.threshold_for else None
        if threshold is not None:  # a per-session threshold overrides the gateway's default
            req.risk_threshold = threshold
        # Taint before the call runs: the agent runs a turn's calls concurrently, and an
        # egress call started beside this one must already see it (a call that ends up
        # denied still taints: asking once too often is the safe side).
        if not c.taint(req.session_id):
            private = c.private_reads(req.tool, req.call.arguments)
            if c.secret_use(req.tool):
                c.mark_tainted(req.session_id, f"secrets are handed to {req.tool.name}")
            elif private:
                c.mark_tainted(req.session_id, f"{req.tool.name} read {private[0]}")
        result = await nxt(req)
        if result.decision == "allowed" and ctx.get("new_domains"):
            c.remember_domains(req.session_id, ctx["new_domains"])
        if req.annotations.get("secret_env"):  # the secrets stage injected (a backstop)
            names_ = ", ".join(req.annotations["secret_env"][:3])
            c.mark_tainted(req.session_id, f"secret {names_} was injected into {req.tool.name}")
        return result
