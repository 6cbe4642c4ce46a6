"""What one database read costs the server's event loop with SQLAlchemy, on SQLite (the
file, pooled and inline as ``bot serve`` uses it): a session opened and closed, a query
built on each call against one built once, ORM rows against Core rows, and each further
statement in the same session. CPU of this thread (``time.thread_time``), per call, after
a warm-up.

    .venv/bin/python bench/statements.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import Table, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.storage.db import Database
from bot.storage.models import InboxItem

ROUNDS = 500


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/statements.db")
        await db.migrate()
        table: Table = InboxItem.__table__  # type: ignore[assignment]
        prebuilt = (
            select(InboxItem)
            .where(InboxItem.processed_at.is_(None))
            .order_by(InboxItem.id)
            .limit(200)
        )
        core = select(table).where(table.c.processed_at.is_(None)).order_by(table.c.id).limit(200)

        async def session_only() -> None:
            async with db.read():
                pass

        async def orm_built_each_time() -> None:
            async with db.read() as s:
                query = (
                    select(InboxItem)
                    .where(InboxItem.processed_at.is_(None))
                    .order_by(InboxItem.id)
                    .limit(200)
                )
                (await s.scalars(query)).all()

        async def orm_built_once() -> None:
            async with db.read() as s:
                (await s.scalars(prebuilt)).all()

        async def core_rows() -> None:
            async with db.read() as s:
                (await s.execute(core)).all()

        async def core_rows_three() -> None:
            async with db.read() as s:
                for _ in range(3):
                    (await s.execute(core)).all()

        cases: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("a session, opened and closed", session_only),
            ("+ an ORM query built on each call", orm_built_each_time),
            ("+ an ORM query built once", orm_built_once),
            ("+ a Core query built once", core_rows),
            ("+ three Core queries built once", core_rows_three),
        ]
        for name, case in cases:
            for _ in range(ROUNDS // 2):
                await case()
            start = time.thread_time()
            for _ in range(ROUNDS):
                await case()
            print(f"{name:<36} {(time.thread_time() - start) / ROUNDS * 1e6:6.0f} µs", flush=True)
        await db.close()


if __name__ == "__main__":
    asyncio.run(main())
