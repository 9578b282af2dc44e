"""The tool seam, the registry and the built-in tools."""

from bastion.tools.base import (
    FunctionTool,
    ProcessResult,
    ProcessRunner,
    Risk,
    Tool,
    ToolContext,
    ToolOutput,
    tool,
)
from bastion.tools.registry import ToolRegistry, load_entry_point_tools

__all__ = [
    "FunctionTool",
    "ProcessResult",
    "ProcessRunner",
    "Risk",
    "Tool",
    "ToolContext",
    "ToolOutput",
    "ToolRegistry",
    "load_entry_point_tools",
    "tool",
]
