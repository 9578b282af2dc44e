"""Deprecated path: the message vocabulary moved to :mod:`bastion.messages` (the bottom layer).

A thin re-export kept so that branches written against the old path still import; new code imports
``bastion.messages``. Remove once no importer is left (``grep -r bastion.llm.messages``).
"""

from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    Role,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
    new_call_id,
)

__all__ = [
    "ChatSettings",
    "Finish",
    "Message",
    "ModelEvent",
    "Role",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolSpec",
    "Usage",
    "new_call_id",
]
