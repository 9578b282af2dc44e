"""Read audit records after an id, from a read-only connection (any process may tail the log)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from bastion.security.audit import AuditEvent, open_reader


def _event(r: tuple[Any, ...]) -> AuditEvent:
    return AuditEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                      json.loads(r[8]) if r[8] else None, r[9], r[10],
                      json.loads(r[11]) if r[11] else None, r[12])


class AuditTail:
    """Yields batches of records with ``id > cursor`` in id order."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = open_reader(self.path)
        return self._db

    def after(self, cursor: int, limit: int = 500) -> list[AuditEvent]:
        """Return up to ``limit`` records after id ``cursor``."""
        rows = self._conn().execute("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?",
                                    (cursor, limit)).fetchall()
        return [_event(r) for r in rows]

    def last_id(self) -> int:
        """Return the newest record's id (0 when empty)."""
        row = self._conn().execute("SELECT MAX(id) FROM events").fetchone()
        return int(row[0] or 0)

    def hash_of(self, rid: int) -> str | None:
        """Return the chain hash of record ``rid`` (None if it is gone)."""
        row = self._conn().execute("SELECT hash FROM events WHERE id = ?", (rid,)).fetchone()
        return str(row[0]) if row else None

    def close(self) -> None:
        """Close the connection."""
        if self._db is not None:
            self._db.close()
            self._db = None
