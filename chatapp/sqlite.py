"""SQLite tuning: WAL, a busy timeout, and writers queued in-process instead of by SQLite.

SQLite allows one writer at a time. When a second one finds the database locked, SQLite's busy
handler sleeps in steps of up to 100 ms before trying again, so a burst of sends (each a short
write) turns into seconds of latency. Queueing writers on a Python lock instead hands the database
over the moment the previous writer commits. Other processes still meet SQLite's busy timeout.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, event

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
LOCK_WAIT = 10.0  # seconds; past this, go ahead and let SQLite's own busy timeout decide
HOLDS = "chatapp_holds_write_lock"


def configure(engine: Engine) -> None:
    """Apply the pragmas on every new connection and serialize writers within this process."""
    lock = threading.Lock()

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers go on while an answer is written
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "before_cursor_execute")
    def _take(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not conn.info.get(HOLDS) and statement.lstrip()[:7].upper().startswith(WRITES):
            conn.info[HOLDS] = lock.acquire(timeout=LOCK_WAIT)

    def _give(info: dict) -> None:
        if info.pop(HOLDS, False):
            lock.release()

    event.listen(engine, "commit", lambda conn: _give(conn.info))
    event.listen(engine, "rollback", lambda conn: _give(conn.info))

    @event.listens_for(engine, "reset")
    def _reset(_dbapi_connection: Any, record: Any, _reset_state: Any) -> None:
        # A connection returned to the pool without commit/rollback (e.g. after an error).
        _give(record.info)
