"""A recording process runner for unit tests of tools that need ``ctx.runner``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion.tools.base import ProcessResult


@dataclass
class RecordingRunner:
    """Returns ``result`` for every run and records what it was asked to run."""

    result: ProcessResult = field(default_factory=lambda: ProcessResult(0, "ok\n", ""))
    calls: list[dict[str, object]] = field(default_factory=list)
    name: str = "recording"

    async def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> ProcessResult:
        self.calls.append({"argv": argv, "stdin": stdin, "env": env, "timeout_s": timeout_s})
        return self.result
