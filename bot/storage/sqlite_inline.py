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

SQLAlchemy's adapter still awaited each of those calls (open a cursor, execute, fetch,
close: a greenlet switch there and back, and a coroutine, each). ``DBAPI`` gives it a
cursor that calls the ``sqlite3`` cursor directly instead (awaiting once a statement, for
SQLAlchemy's check), and rolls back directly; a commit is still awaited, in the
connection's thread. It builds on SQLAlchemy 2.1's
adapter classes (``pyproject.toml`` keeps to 2.1).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_


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


class InlineCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, calling the ``sqlite3`` cursor without awaiting."""

    __slots__ = ()
    _awaitable_cursor_close = False  # close() calls the sqlite3 cursor's close directly

    def _make_new_cursor(self, connection: Any) -> Any:
        try:
            return connection._conn.cursor()  # the sqlite3 connection's
        except Exception as error:  # closed: "no active connection", as aiosqlite says it
            self._adapt_connection._handle_exception(error)

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        cursor = cast(sqlite3.Cursor, self._cursor)
        try:
            if parameters is None:
                cursor.execute(operation)
            else:
                cursor.execute(operation, parameters)
            if cursor.description:
                self._rows = collections.deque(cursor.fetchall())
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        await_(_done())

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            cast(sqlite3.Cursor, self._cursor).executemany(operation, seq_of_parameters)
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        await_(_done())


async def _done() -> None:
    """Awaited once a statement: ``AsyncConnection.execute`` refuses a statement that
    awaited nothing (``AwaitRequired``), taking the driver for a blocking one."""


class InlineAdaptedConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = InlineCursor

    def rollback(self) -> None:
        conn = self._connection._connection
        if conn is not None:
            try:
                conn.rollback()
            except Exception as error:
                self._handle_exception(error)


class InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DB-API module SQLAlchemy's aiosqlite dialect is given (``module=``): its
    connections are ``connector``'s, adapted by ``InlineAdaptedConnection``."""

    def connect(self, *arg: Any, **kw: Any) -> InlineAdaptedConnection:
        create = kw.pop("async_creator_fn")
        return InlineAdaptedConnection(self, await_(create(*arg, **kw)))


DBAPI = InlineDBAPI(aiosqlite, sqlite3)
