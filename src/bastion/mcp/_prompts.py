"""MCP prompts: bastion's small prompt library, with argument completion.

Each prompt names what it needs as arguments; a prompt about a file or an audit record
embeds that resource, read through the gateway like any resource read (policy, secret
scan, audit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Argument:
    """One prompt argument; ``complete`` says what its values are (for completion)."""

    name: str
    description: str
    required: bool = True
    complete: str | None = None  # "path" | "event" | "session" | None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptDef:
    """A prompt: its instructions and which argument names a resource to embed."""

    name: str
    title: str
    description: str
    arguments: tuple[Argument, ...] = ()
    text: str = ""
    embed: str | None = None  # the argument whose resource is embedded
    embed_as: str = "path"  # how that argument becomes a URI: path | event | session

    def argument(self, name: str) -> Argument | None:
        """Return the argument called ``name``."""
        return next((a for a in self.arguments if a.name == name), None)


FOCUS = ("correctness", "security", "readability", "performance")

PROMPTS: tuple[PromptDef, ...] = (
    PromptDef(
        name="review_file",
        title="Review a workspace file",
        description="Review a file from bastion's workspace (the file is embedded as a "
                    "resource; secrets in it are redacted).",
        arguments=(
            Argument("path", "File path relative to the workspace", complete="path"),
            Argument("focus", "What to look at most: " + ", ".join(FOCUS), required=False,
                     choices=FOCUS),
        ),
        text="Review the file {path} below with a focus on {focus}. List concrete problems "
             "with line references, most important first, and suggest a fix for each. Say "
             "so plainly if you find nothing worth changing.",
        embed="path",
    ),
    PromptDef(
        name="explain_audit_event",
        title="Explain an audit event",
        description="Explain one record of bastion's audit log: what was called, what the "
                    "security gateway decided and why (the record is embedded).",
        arguments=(Argument("event_id", "The audit event id (see bastion://audit/recent)",
                            complete="event"),),
        text="Explain audit event {event_id} of bastion's security gateway below in plain "
             "words: which tool was called with what, by whom, what was decided (allowed, "
             "denied, approved by whom) and why, and whether anything looks suspicious.",
        embed="event_id",
        embed_as="event",
    ),
    PromptDef(
        name="summarize_session",
        title="Summarize a session's tool activity",
        description="Summarize what happened in one session, from its audit trail (every "
                    "tool call and gateway decision; embedded).",
        arguments=(Argument("session_id", "The session id", complete="session"),),
        text="Summarize session {session_id} from its audit trail below: what was attempted, "
             "what ran, what the gateway refused or needed approval for, and any errors. "
             "Keep it short; end with open problems if there are any.",
        embed="session_id",
        embed_as="session",
    ),
)

BY_NAME = {p.name: p for p in PROMPTS}


def render(prompt: PromptDef, args: dict[str, str]) -> str:
    """Return the prompt's instruction text with ``args`` filled in (defaults for the rest)."""
    values = {a.name: args.get(a.name) or (a.choices[0] if a.choices else "") for a in
              prompt.arguments}
    return prompt.text.format(**values)


def missing(prompt: PromptDef, args: dict[str, str]) -> list[str]:
    """Return the required arguments ``args`` lacks."""
    return [a.name for a in prompt.arguments if a.required and not args.get(a.name)]
