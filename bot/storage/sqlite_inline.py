"""SQLite without a thread hop per call.

aiosqlite runs every call (open a cursor, execute, fetch, close the cursor) in the
connection's own thread and wakes the event loop for each result: four hand-overs, each a
GIL switch and a loop wake-up, for one indexed lookup that SQLite itself answers in
microseconds. Measured with bench/e2e.py, those hand-overs were most of the server's CPU.

``InlineConnection`` keeps aiosqlite's interface (so SQLAlchemy's aiosqlite dialect drives
it unchanged) but runs calls on the calling thread; only a commit, which waits for the
disk (``synchronous=FULL``), and closing still go to the connection's thread.

This is safe because nothing in this process waits on SQLite's locks: in WAL mode readers
never block, and every write transaction holds ``Database``'s write lock, so a statement
never waits behind another connection of ours (``busy_timeout`` is kept short for the
case where another process writes, such as an operator's ``sqlite3`` shell).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite


class InlineConnection(aiosqlite.Connection):
    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        conn = self._connection
        if not self._running or conn is None:
            raise ValueError("Connection closed")
        if fn == conn.commit or fn == conn.close:
            return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        return fn(*args, **kwargs)


def connector(path: str) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine``: a connection to the file at
    ``path``, used from the loop's thread and (for commits) from its own."""

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, check_same_thread=False)

    async def create() -> InlineConnection:
        conn = InlineConnection(connect, 64)
        conn._thread.daemon = True
        await conn
        return conn

    return create
