"""Engine, sessions and migrations.

SQLite allows one writer at a time; in WAL mode readers never block. Every write transaction
of this process goes through ``Database.write()``, which for SQLite also holds an asyncio lock,
so that two of our own transactions never race for the write lock (SQLite answers such a race
with an immediate "database is locked" instead of waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from bot.storage import sqlite_inline
from bot.storage.jobs import forget_queued_jobs, insert_queued_jobs

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
MMAP_SIZE = 256 << 20  # bytes of the SQLite file mapped into memory, at most
# pg_advisory_xact_lock's key for schema upgrades (any constant no other code uses)
MIGRATION_LOCK = 0x7061_6765_6465_736B  # "pagedesk"


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def set_up(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in _pragmas(synchronous):
            cur.execute(pragma)
        cur.close()

    return set_up


def _pragmas(synchronous: str) -> list[str]:
    return [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={synchronous}",
        "PRAGMA busy_timeout=10000",
        "PRAGMA foreign_keys=ON",
        # Pages read through a shared mapping of the file, not copied into each
        # connection's 2 MB cache: lookups in a large database stay cheap.
        f"PRAGMA mmap_size={MMAP_SIZE}",
    ]


class JobSession(Session):
    """A session that inserts the outbox jobs queued in a transaction as it commits, in
    one statement (``OutboxRepository.add``)."""


event.listen(JobSession, "before_commit", insert_queued_jobs)
event.listen(JobSession, "after_soft_rollback", forget_queued_jobs)


class _WriteLock:
    """One writer at a time; when it ends, a waiting urgent writer (a durable write,
    someone waits for it) goes before the others, whenever it began to wait."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(),
            deque(),
        )

    @asynccontextmanager
    async def held(self, urgent: bool) -> AsyncIterator[None]:
        if self._held:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue = self._waiting[0 if urgent else 1]
            queue.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # handed the lock as it was cancelled: pass it on
                elif turn in queue:
                    queue.remove(turn)
                raise
        self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in self._waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the lock passes to that writer, still held
                    return
        self._held = False


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        path = make_url(url).database if self.is_sqlite else None
        # a SQLite file (not in memory): pooled inline connections, a durable engine, and
        # the intake's thread (``run_durably``)
        self._path = path if path and path != ":memory:" else None
        if self._path is not None:
            kwargs["async_creator"] = sqlite_inline.connector(self._path)
            kwargs["module"] = sqlite_inline.DBAPI
            # Connections stay open: a new one costs a thread and its pragmas, and the
            # outbox's 16 lanes with the inbox and the intake read at once.
            kwargs.update(pool_size=24, max_overflow=24)
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=JobSession
        )
        self._durable_engine: AsyncEngine | None = None
        self._durable_sessions = self.sessions
        if self.is_sqlite:
            # SQLite, WAL. A durable write (``write(durable=True)``: an answer marked as
            # being sent, before its call; the intake's batches, before their 200, go
            # through ``run_durably``) is on disk when it commits, power loss included
            # (synchronous=FULL), through connections of its own. Other writes are not
            # flushed on their own (NORMAL): a crashed process loses none of them, a crashed
            # machine may lose the last ones, which then run again; each durable commit
            # flushes them too, as it flushes the WAL.
            full = self._path is not None
            event.listen(
                self.engine.sync_engine, "connect", _sqlite_pragmas("NORMAL" if full else "FULL")
            )
            if full:
                kwargs.update(pool_size=2, max_overflow=4)
                self._durable_engine = create_async_engine(url, **kwargs)
                event.listen(self._durable_engine.sync_engine, "connect", _sqlite_pragmas("FULL"))
                self._durable_sessions = async_sessionmaker(
                    self._durable_engine, expire_on_commit=False, sync_session_class=JobSession
                )
        self._write_lock = _WriteLock() if self.is_sqlite else None
        self._thread: ThreadPoolExecutor | None = None
        self._thread_conn: sqlite3.Connection | None = None
        self._closed = False

    @property
    def writes_in_thread(self) -> bool:
        """A SQLite file: ``run_durably`` is there."""
        return self._path is not None

    async def run_durably(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """SQLite file: ``fn`` on a ``sqlite3`` connection of its own, in autocommit mode
        (a statement is a transaction; ``fn`` begins one for several) with
        ``synchronous=FULL`` (on disk when it commits), in a thread of its own, holding
        the write lock before every other writer that waits (as ``write(durable=True)``).

        For the intake: statement, commit and its flush cost the event loop nothing, so
        acknowledgements are read and answered while the batch before them is written.
        (SQLAlchemy's session and the connection's hand-overs cost the loop about 0.4 ms
        a batch, and its insert 25 µs a row.) Each call into SQLite lets go of the GIL and
        then waits to take it back from the loop's thread, up to its switch interval
        (5 ms) when that thread is busy: one statement is one such wait."""
        if self._path is None or self._write_lock is None:
            raise RuntimeError("run_durably: a SQLite file only")
        loop = asyncio.get_running_loop()
        async with self._write_lock.held(True):
            if self._closed:
                raise RuntimeError("the database is closed")
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-durable")
            done = loop.run_in_executor(self._thread, self._in_thread, fn)
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                # the write lock is held until the thread has finished with the file
                while not done.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait({done})
                raise

    def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._thread_conn
        if conn is None:
            assert self._path is not None
            conn = sqlite3.connect(self._path, isolation_level=None)
            for pragma in _pragmas("FULL"):
                conn.execute(pragma)
            self._thread_conn = conn
        try:
            return fn(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _close_thread_conn(self) -> None:
        if self._thread_conn is not None:
            self._thread_conn.close()
            self._thread_conn = None

    @asynccontextmanager
    async def write(self, *, durable: bool = False) -> AsyncIterator[AsyncSession]:
        """A transaction that commits on success and rolls back on error. ``durable``: on
        disk when it commits (see above; on PostgreSQL every commit is); someone waits for
        it, so it goes before the writers that have not started waiting yet."""
        if self._write_lock is not None:
            sessions = self._durable_sessions if durable else self.sessions
            async with self._write_lock.held(durable), sessions() as s, s.begin():
                yield s
        else:
            async with self.sessions() as s, s.begin():
                yield s

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as s:
            yield s

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self) -> None:
        """Bring the schema up to date (Alembic ``upgrade head``) on this engine.

        Replicas starting together on PostgreSQL would race on the same DDL (two
        ``CREATE TABLE``, or one reading the version while the other changes it): the
        upgrade runs under a transaction-level advisory lock, so the first one migrates and
        the others, once they get the lock, find the schema at head and do nothing. The
        lock goes with the transaction, also when the process dies holding it."""

        def _upgrade(conn: Connection) -> None:
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        self._closed = True
        thread, self._thread = self._thread, None
        try:
            if thread is not None:
                # after the thread's last write: it holds the write lock while it writes
                assert self._write_lock is not None
                async with self._write_lock.held(True):
                    await asyncio.get_running_loop().run_in_executor(
                        thread, self._close_thread_conn
                    )
        finally:
            if thread is not None:
                thread.shutdown(wait=False)
            await self._dispose()

    async def _dispose(self) -> None:
        await self.engine.dispose()
        if self._durable_engine is not None:
            await self._durable_engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
