"""The agent loop and its events."""

from bastion.agent.events import AgentEvent, ToolFinished, ToolStarted, TurnDone, TurnError
from bastion.agent.loop import Agent, AgentOptions

__all__ = ["Agent", "AgentEvent", "AgentOptions", "ToolFinished", "ToolStarted", "TurnDone",
           "TurnError"]
