"""Engine, sessions and migrations.

SQLite allows one writer at a time; in WAL mode readers never block. Every write transaction
of this process goes through ``Database.write()``, which for SQLite also holds an asyncio lock,
so that two of our own transactions never race for the write lock (SQLite answers such a race
with an immediate "database is locked" instead of waiting).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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

from bot.storage import sqlite_inline

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock's key for schema upgrades (any constant no other code uses)
MIGRATION_LOCK = 0x7061_6765_6465_736B  # "pagedesk"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we acknowledge a delivery, power loss included
    # (NORMAL in WAL mode survives a crashed process but may lose the last commits of a
    # crashed machine). Group commit in the intake keeps the cost to one fsync per batch.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class _WriteLock:
    """One writer at a time, urgent ones first: while an urgent writer waits, no other
    writer starts waiting for the lock (those already waiting keep their turn)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._urgent = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @asynccontextmanager
    async def held(self, urgent: bool) -> AsyncIterator[None]:
        if urgent:
            self._urgent += 1
            self._clear.clear()
            try:
                await self._lock.acquire()
            finally:
                self._urgent -= 1
                if not self._urgent:
                    self._clear.set()
        else:
            await self._clear.wait()
            await self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        path = make_url(url).database if self.is_sqlite else None
        if path and path != ":memory:":
            kwargs["async_creator"] = sqlite_inline.connector(path)
            # Connections stay open: a new one costs a thread and its pragmas, and the
            # outbox's 16 lanes with the inbox and the intake read at once.
            kwargs.update(pool_size=24, max_overflow=24)
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = _WriteLock() if self.is_sqlite else None

    @asynccontextmanager
    async def write(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        """A transaction that commits on success and rolls back on error. ``urgent``: a
        writer someone waits for (the intake, before its 200) goes before the others that
        have not started waiting yet (SQLite, where writes take turns)."""
        if self._write_lock is not None:
            async with self._write_lock.held(urgent), self.sessions() as s, s.begin():
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


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
