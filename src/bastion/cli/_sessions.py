"""Session names and ids for commands that read records keyed by session (audit, undo).

Tool calls and their audit and undo records carry the id a session is stored under; users
name sessions. These helpers read the conversation store (never creating it) to go from one
to the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from bastion.memory.store import SessionStore


@contextmanager
def _session_store() -> Iterator[SessionStore | None]:
    """The conversation store, if this home keeps one (nothing is created)."""
    from bastion.config.loader import load
    from bastion.errors import BastionError
    from bastion.memory.persistent import memory_root

    try:  # names are a convenience: an unreadable config or store leaves ids as they are
        cfg = load().memory
        path = memory_root(cfg) / "memory.db" if cfg.enabled else None
        store = SessionStore(path) if path is not None and path.is_file() else None
    except BastionError:
        store = None
    if store is None:
        yield None
        return
    try:
        yield store
    finally:
        store.close()


def record_keys(session: str) -> str | tuple[str, ...]:
    """Return what the records of session ``session`` (a name or an id) carry.

    Its stored id, and for records written before sessions were audited by id, the name.
    """
    with _session_store() as store:
        return store.record_keys(session) if store is not None else session


def pick_key(session: str, has_records: Callable[[str], bool]) -> str:
    """Return the first of ``session``'s record keys that ``has_records`` (else its id)."""
    keys = record_keys(session)
    if isinstance(keys, str):
        return keys
    return next((k for k in keys if has_records(k)), keys[0])


def session_names(ids: Iterable[str | None]) -> dict[str, str]:
    """Map stored session ids to their current names (the ones this home knows)."""
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    with _session_store() as store:
        return store.session_names(wanted) if store is not None else {}
