"""The conversation-memory seam the agent uses, and the in-process default (no persistence)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from bastion.messages import Message
from bastion.security.identity import owner_filter, owner_name


class ConversationMemory(Protocol):
    """Where a session's messages live and how the model's context is assembled."""

    async def open_session(self, key: str) -> str:
        """Return the id session ``key`` (a name or an id) is stored under, creating it if new.

        The agent, the gateway and the audit use this id, so a record still names its
        session after a rename.
        """
        ...

    async def history(self, session_id: str) -> list[Message]:
        """Return the session's stored messages, oldest first.

        A persistent backend may return only the newest ones, as many as can fill the
        model's context window; the rest stay stored (and exportable, searchable).
        """
        ...

    async def append(self, session_id: str, message: Message) -> None:
        """Store ``message``; on return it is durable (if the backend persists at all)."""
        ...

    async def transcript(
        self, session_id: str, offset: int = 0, limit: int = 100
    ) -> tuple[int, list[Message]]:
        """Return the total count and one page of the session's whole transcript, oldest first."""
        ...

    async def build_context(
        self, session_id: str, system: Message, history: Sequence[Message], query: str
    ) -> list[Message]:
        """Return the messages to send to the model (windowed, with retrieved knowledge)."""
        ...

    async def aclose(self) -> None:
        """Flush and close the store (a no-op for in-process memory)."""
        ...


class EphemeralMemory:
    """Keeps sessions in this process only; the context is the whole history.

    As in the persistent store, a session's name is unique per owner: each user's ``main``
    is their own, and another user's names and ids are not there for them.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, list[Message]] = {}  # id -> messages
        self._owners: dict[str, str] = {}  # id -> the user whose request made it
        self._ids: dict[tuple[str, str], str] = {}  # (owner, name) -> id

    def owner_of(self, session_id: str) -> str | None:
        """Return the owner of the session with id ``session_id`` (``None``: no such one)."""
        return self._owners.get(session_id)

    def _id(self, key: str, *, create: bool = False) -> str | None:
        """Return the id of the caller's session named ``key`` (or with id ``key``)."""
        who = owner_filter()
        owner = owner_name() if who is None else who
        sid = self._ids.get((owner, key))
        if sid is None and key in self._owners and who in (None, self._owners[key]):
            sid = key
        if sid is None and create:
            sid = key if key not in self._owners else uuid.uuid4().hex[:12]
            self._ids[(owner, key)] = sid
            self._owners[sid] = owner
        return sid

    def session_id(self, key: str) -> str | None:
        """Return the id of the caller's session ``key`` (a name or an id; ``None``: none)."""
        return self._id(key)

    async def open_session(self, key: str) -> str:
        """Return the id of the caller's session ``key`` (a new name: the name itself)."""
        sid = self._id(key, create=True)
        assert sid is not None
        return sid

    async def history(self, session_id: str) -> list[Message]:
        """Return the session's messages (none of another user's)."""
        sid = self._id(session_id)
        return [] if sid is None else list(self._sessions.get(sid, []))

    async def append(self, session_id: str, message: Message) -> None:
        """Keep ``message`` in memory (in the caller's own session of that name)."""
        sid = self._id(session_id, create=True)
        assert sid is not None
        self._sessions.setdefault(sid, []).append(message)

    async def transcript(
        self, session_id: str, offset: int = 0, limit: int = 100
    ) -> tuple[int, list[Message]]:
        """Return the total count and one page of the session's messages."""
        sid = self._id(session_id)
        msgs = [] if sid is None else self._sessions.get(sid, [])
        return len(msgs), list(msgs[offset : offset + limit])

    async def build_context(
        self, session_id: str, system: Message, history: Sequence[Message], query: str
    ) -> list[Message]:
        """Return system prompt + full history."""
        return [system, *history]

    def clear(self, session_id: str) -> None:
        """Forget a session (the caller's, by name or id)."""
        sid = self._id(session_id)
        if sid is None:
            return
        self._sessions.pop(sid, None)
        owner = self._owners.pop(sid, None)
        self._ids = {k: v for k, v in self._ids.items() if v != sid or k[0] != owner}

    async def aclose(self) -> None:
        """Nothing to flush: the sessions live in this process only."""
