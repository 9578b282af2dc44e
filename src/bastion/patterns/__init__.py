"""Multi-model collaboration patterns; each is a :class:`~bastion.llm.base.Model` of Models."""

from bastion.patterns.cascade import CascadeModel
from bastion.patterns.draft_verify import DraftVerifyModel
from bastion.patterns.vote import VoteModel

__all__ = ["CascadeModel", "DraftVerifyModel", "VoteModel"]
