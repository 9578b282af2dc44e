"""The model seam and its backends."""

from bastion.llm.base import Model
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)

__all__ = [
    "ChatSettings",
    "Finish",
    "Message",
    "Model",
    "ModelEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolSpec",
    "Usage",
]
