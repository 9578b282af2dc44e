"""The built-in tools' schemas come from their typed signatures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bastion.errors import ToolArgumentsError, ToolError
from bastion.tools.base import ProcessResult, Risk, ToolContext
from bastion.tools.builtin import builtin_tools
from bastion.tools.registry import ToolRegistry, load_entry_point_tools
from tests.fakes.runner import RecordingRunner


def by_name() -> dict[str, object]:
    return {t.name: t for t in builtin_tools()}


def test_names_risks_and_sandbox_flags() -> None:
    tools = {t.name: t for t in builtin_tools()}
    node = ["node"] if shutil.which("node") else []  # offered only where Node.js is installed
    assert sorted(tools) == sorted(
        ["list_files", "python", "read_file", "shell", "web_fetch", "write_file", *node]
    )
    assert all(tools[n].sandboxed for n in ["shell", "python", *node])
    assert not tools["read_file"].sandboxed and not tools["web_fetch"].sandboxed
    assert tools["read_file"].risk is Risk.LOW and tools["shell"].risk is Risk.MEDIUM


def test_schemas_are_derived() -> None:
    tools = {t.name: t for t in builtin_tools()}
    ls = tools["list_files"].parameters
    assert ls["properties"]["pattern"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "default": None,
        "description": 'Only show names matching this glob, e.g. "*.py".',
    }
    assert ls["properties"]["recursive"]["type"] == "boolean"
    assert "required" not in ls
    assert tools["write_file"].parameters["required"] == ["path", "content"]
    assert tools["shell"].parameters["additionalProperties"] is False
    spec = tools["web_fetch"].spec().to_openai()
    assert spec["function"]["parameters"]["properties"]["max_chars"]["type"] == "integer"


def test_entry_point_or_fallback_registers_all() -> None:
    reg = ToolRegistry(builtin_tools())
    load_entry_point_tools(reg)  # idempotent with the installed entry point
    assert {"shell", "web_fetch"} <= set(reg.names())


async def test_shell_refuses_without_runner(tmp_path: Path) -> None:
    tools = {t.name: t for t in builtin_tools()}
    with pytest.raises(ToolError, match="only inside a sandbox"):
        await tools["shell"]({"command": "ls"}, ToolContext(workspace=tmp_path))


async def test_shell_and_python_go_through_the_runner(tmp_path: Path) -> None:
    tools = {t.name: t for t in builtin_tools()}
    runner = RecordingRunner(ProcessResult(3, "out\n", "warn\n"))
    ctx = ToolContext(workspace=tmp_path, runner=runner)
    out = await tools["shell"]({"command": "ls -la", "timeout_s": 5}, ctx)
    assert runner.calls[0]["argv"] == ["/bin/sh", "-c", "ls -la"]
    assert runner.calls[0]["timeout_s"] == 5
    assert out.text == "exit_code: 3\nstdout:\nout\nstderr:\nwarn"
    await tools["python"]({"code": "print(1)"}, ctx)
    assert runner.calls[1]["argv"] == ["python3", "-I", "-"]
    assert runner.calls[1]["stdin"] == b"print(1)"


async def test_killed_run_is_an_error_result(tmp_path: Path) -> None:
    tools = {t.name: t for t in builtin_tools()}
    runner = RecordingRunner(ProcessResult(-9, "", "", timed_out=True, killed_reason="timeout"))
    out = await tools["shell"]({"command": "sleep 99"}, ToolContext(tmp_path, runner=runner))
    assert out.is_error and "killed: timeout" in out.text


async def test_bad_arguments_and_timeout_bounds(tmp_path: Path) -> None:
    tools = {t.name: t for t in builtin_tools()}
    ctx = ToolContext(workspace=tmp_path, runner=RecordingRunner())
    with pytest.raises(ToolArgumentsError, match="command"):
        await tools["shell"]({}, ctx)
    with pytest.raises(ToolError, match="timeout_s"):
        await tools["shell"]({"command": "x", "timeout_s": 10_000}, ctx)
