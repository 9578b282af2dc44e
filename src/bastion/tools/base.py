"""The ``Tool`` seam: a typed async function with a derived JSON schema and a risk level.

Tools never import ``security``. The gateway hands each call a :class:`ToolContext`; a tool
can only touch the world through what that context holds (workspace, sandboxed process
runner, egress-bound HTTP client, secret handles).
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, get_type_hints, runtime_checkable

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from bastion.errors import ToolArgumentsError
from bastion.messages import ToolSpec

#: Workspace entries that programs on the HOST execute or obey later (git hooks and
#: ``core.fsmonitor``, direnv, editor tasks). The workspace is untrusted: sandboxes mount
#: the ones that exist read-only and ``write_file`` refuses to write into them.
CONTROL_ENTRIES = frozenset({".git", ".envrc", ".vscode", ".idea", ".devcontainer"})

class Risk(enum.IntEnum):
    """How much harm a call could do; the gateway asks a human at or above a threshold."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Risk:
        """Parse ``low``/``medium``/``high``/``critical``."""
        return cls[text.upper()]


@dataclass(slots=True)
class ProcessResult:
    """Outcome of a process run by a :class:`ProcessRunner`."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    killed_reason: str | None = None  # "timeout", "memory", "output" ...
    duration_ms: float = 0.0


@runtime_checkable
class ProcessRunner(Protocol):
    """Runs a command with the workspace as its working directory (a sandbox, in practice)."""

    async def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> ProcessResult:
        """Run ``argv`` and return its result; never raises for a non-zero exit."""
        ...


@runtime_checkable
class HttpFetcher(Protocol):
    """Fetches a URL under the egress policy the gateway bound it to."""

    max_chars: int  # the most characters of text a tool may ask for

    async def get(self, url: str, *, max_bytes: int) -> tuple[int, str, str]:
        """Return (status, content type, text)."""
        ...


@runtime_checkable
class BrowserAccess(Protocol):
    """The browser the gateway lends a call: one isolated session per agent session.

    The implementation (``bastion.security.browser``) enforces the network policy, logs in
    to configured sites and refuses typing into password fields; tools only call it.
    Element ``ref`` values come from the last snapshot of the session's page.
    """

    async def navigate(self, session_id: str | None, url: str) -> str:
        """Open ``url``; return the page's snapshot."""
        ...

    async def click(self, session_id: str | None, ref: str) -> str:
        """Click the element ``ref``; return the page's snapshot afterwards."""
        ...

    async def type(self, session_id: str | None, ref: str, text: str, submit: bool) -> str:
        """Fill ``text`` into the element ``ref`` (and press Enter when ``submit``)."""
        ...

    async def read(self, session_id: str | None) -> str:
        """Return the page's accessibility snapshot with element refs."""
        ...

    async def screenshot(self, session_id: str | None, full_page: bool) -> bytes:
        """Return a PNG of the session's page."""
        ...

    async def close(self, session_id: str | None) -> bool:
        """Close the session's browser context; False when there was none."""
        ...


@dataclass(slots=True)
class ToolContext:
    """Everything a tool may use, handed to it by the gateway for one call."""

    workspace: Path
    runner: ProcessRunner | None = None
    http: HttpFetcher | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)
    session_id: str | None = None
    browser: BrowserAccess | None = None


@dataclass(slots=True)
class ToolOutput:
    """A tool's result: text for the model, optional structured data."""

    text: str
    data: Any = None
    is_error: bool = False


@runtime_checkable
class Tool(Protocol):
    """Something the agent can call through the gateway."""

    name: str
    description: str
    parameters: dict[str, Any]
    risk: Risk
    sandboxed: bool

    def spec(self) -> ToolSpec:
        """Return what the model is told about the tool."""
        ...

    async def __call__(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        """Validate ``args`` and run the tool."""
        ...


ToolFn = Callable[..., Awaitable[Any]]


def _first_doc_line(doc: str | None) -> str:
    return inspect.cleandoc(doc or "").split("\n\n")[0].replace("\n", " ").strip()


def _param_docs(doc: str | None) -> dict[str, str]:
    """Parse Google-style ``Args:`` sections into {name: description}."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    in_args = False
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        if stripped in {"Args:", "Arguments:", "Parameters:"}:
            in_args = True
            continue
        if in_args:
            if stripped.endswith(":") and " " not in stripped:
                break  # next section
            if not stripped:
                current = None
                continue
            head, sep, rest = stripped.partition(":")
            name = head.split(" ")[0].strip()
            if sep and name.isidentifier() and line.startswith((" ", "\t")) and (
                len(line) - len(line.lstrip()) <= 4 or current is None
            ):
                current = name
                out[name] = rest.strip()
            elif current:
                out[current] += " " + stripped
    return out


class FunctionTool:
    """A :class:`Tool` made from a typed async function ``fn(ctx, **params)``.

    The schema comes from the signature through pydantic (so ``int | None``, ``list[str]``,
    enums and nested models are all correct); descriptions come from the docstring.
    """

    def __init__(
        self,
        fn: ToolFn,
        *,
        name: str | None = None,
        description: str | None = None,
        risk: Risk = Risk.LOW,
        sandboxed: bool = False,
        read_only: bool = False,
        egress: bool = True,
    ) -> None:
        self.fn = fn
        # it can send data off the machine; a tool that does not say otherwise is assumed to
        # (the gateway lends HTTP only then; a tainted session's calls to it ask a human)
        self.egress = egress
        self.name = name or fn.__name__
        self.description = description or _first_doc_line(fn.__doc__)
        self.risk = risk
        self.sandboxed = sandboxed
        self.read_only = read_only  # never changes the workspace (no undo snapshot needed)
        self._model = self._build_model(fn)
        self._adapter: TypeAdapter[BaseModel] = TypeAdapter(self._model)
        self.parameters = self._schema()

    def _build_model(self, fn: ToolFn) -> type[BaseModel]:
        hints = get_type_hints(fn, include_extras=True)
        docs = _param_docs(fn.__doc__)
        fields: dict[str, Any] = {}
        params = list(inspect.signature(fn).parameters.values())
        for param in params[1:]:  # first parameter is the ToolContext
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {self.name}: *args/**kwargs are not supported")
            annotation = hints.get(param.name, Any)
            default = ... if param.default is inspect.Parameter.empty else param.default
            from pydantic import Field

            fields[param.name] = (annotation, Field(default, description=docs.get(param.name)))
        return create_model(
            f"{self.name}_args", __config__=ConfigDict(extra="forbid"), **fields
        )

    def _schema(self) -> dict[str, Any]:
        schema = self._adapter.json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        return schema

    def spec(self) -> ToolSpec:
        """Return what the model is told about the tool."""
        return ToolSpec(self.name, self.description, self.parameters)

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Validate arguments against the signature, raising :class:`ToolArgumentsError`."""
        try:
            model = self._adapter.validate_python(dict(args))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            # from None: it quotes arguments (resolved secrets)
            raise ToolArgumentsError(
                f"invalid arguments for {self.name}: {problems}",
                fix=f"call {self.name} with arguments matching its schema",
            ) from None
        return {k: getattr(model, k) for k in type(model).model_fields}

    async def __call__(self, args: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        """Validate ``args`` and run the tool."""
        result = await self.fn(ctx, **self.validate(args))
        if isinstance(result, ToolOutput):
            return result
        if isinstance(result, str):
            return ToolOutput(result)
        import json

        return ToolOutput(json.dumps(result, ensure_ascii=False, default=str), data=result)


def tool(
    *,
    name: str | None = None,
    risk: Risk = Risk.LOW,
    sandboxed: bool = False,
    description: str | None = None,
    read_only: bool = False,
    egress: bool = True,
) -> Callable[[ToolFn], FunctionTool]:
    """Decorate ``async def fn(ctx: ToolContext, ...)`` into a :class:`FunctionTool`.

    ``read_only=True`` promises the tool never changes the workspace; every other tool is
    snapshotted before it runs so what it changes can be undone. ``egress=False`` promises the
    tool cannot send data off the machine: it gets no HTTP client, URLs in its arguments are
    not egress, and a tainted session may still call it without asking. The default (True)
    treats a tool that does not say so as one that can.
    """

    def wrap(fn: ToolFn) -> FunctionTool:
        return FunctionTool(fn, name=name, risk=risk, sandboxed=sandboxed,
                            description=description, read_only=read_only, egress=egress)

    return wrap
