"""The scripted model now ships as :mod:`bastion.testing` (re-exported for the tests)."""

from bastion.testing.model import Reply, ScriptedModel, SeenCall, call, say

__all__ = ["Reply", "ScriptedModel", "SeenCall", "call", "say"]
