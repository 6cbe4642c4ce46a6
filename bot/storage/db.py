"""Engine, sessions and migrations.

SQLite allows one writer at a time; in WAL mode readers never block. Every write transaction
of this process goes through ``Database.write()``, which for SQLite also holds an asyncio lock,
so that two of our own transactions never race for the write lock (SQLite answers such a race
with an immediate "database is locked" instead of waiting).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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
from bot.storage.repositories import forget_queued_jobs, insert_queued_jobs

MIGRATIONS = Path(__file__).parent / "migrations"
MMAP_SIZE = 256 << 20  # bytes of the SQLite file mapped into memory, at most
# pg_advisory_xact_lock's key for schema upgrades (any constant no other code uses)
MIGRATION_LOCK = 0x7061_6765_6465_736B  # "pagedesk"


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def set_up(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        # Pages read through a shared mapping of the file, not copied into each
        # connection's 2 MB cache: lookups in a large database stay cheap.
        cur.execute(f"PRAGMA mmap_size={MMAP_SIZE}")
        cur.close()

    return set_up


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
        if path and path != ":memory:":
            kwargs["async_creator"] = sqlite_inline.connector(path)
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
            # SQLite, WAL. A durable write (``write(durable=True)``: the intake's, before
            # its 200, and an answer marked as being sent, before its call) is on disk when
            # it commits, power loss included (synchronous=FULL), through connections of
            # its own. Other writes are not flushed on their own (NORMAL): a crashed
            # process loses none of them, a crashed machine may lose the last ones, which
            # then run again; each durable commit flushes them too, as it flushes the WAL.
            full = path is not None and path != ":memory:"
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
        await self.engine.dispose()
        if self._durable_engine is not None:
            await self._durable_engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
