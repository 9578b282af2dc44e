"""The conversation-memory seam the agent uses, and the in-process default (no persistence)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bastion.errors import MemoryStoreError
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
    """Keeps sessions in this process only; the context is the whole history."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Message]] = {}
        self._owners: dict[str, str] = {}  # session -> the user whose request made it

    def owner_of(self, key: str) -> str | None:
        """Return the owner of session ``key`` whoever asks (``None``: no such session)."""
        return self._owners.get(key)

    def _visible(self, session_id: str) -> bool:
        who = owner_filter()
        return who is None or self._owners.get(session_id, who) == who

    async def open_session(self, key: str) -> str:
        """Return ``key``: here a session's name is its id."""
        return key

    async def history(self, session_id: str) -> list[Message]:
        """Return the session's messages (none of another user's)."""
        if not self._visible(session_id):
            return []
        return list(self._sessions.get(session_id, []))

    async def append(self, session_id: str, message: Message) -> None:
        """Keep ``message`` in memory (never in another user's session)."""
        if not self._visible(session_id):
            raise MemoryStoreError(f"no session {session_id}", fix="use a new session id")
        self._owners.setdefault(session_id, owner_name())
        self._sessions.setdefault(session_id, []).append(message)

    async def transcript(
        self, session_id: str, offset: int = 0, limit: int = 100
    ) -> tuple[int, list[Message]]:
        """Return the total count and one page of the session's messages."""
        msgs = self._sessions.get(session_id, []) if self._visible(session_id) else []
        return len(msgs), list(msgs[offset : offset + limit])

    async def build_context(
        self, session_id: str, system: Message, history: Sequence[Message], query: str
    ) -> list[Message]:
        """Return system prompt + full history."""
        return [system, *history]

    def clear(self, session_id: str) -> None:
        """Forget a session."""
        self._sessions.pop(session_id, None)
        self._owners.pop(session_id, None)

    async def aclose(self) -> None:
        """Nothing to flush: the sessions live in this process only."""
