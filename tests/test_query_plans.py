"""Every hot-path query uses an index: the SQL the repositories send is explained on each
database (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN with sequential scans priced out,
so a "Seq Scan" left in the plan means no index could serve it)."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.db import Database
from bot.storage.repositories import Repositories

Query = Callable[[AsyncSession, Repositories], Awaitable[Any]]
NOW = time.time()

HOT_PATH: dict[str, Query] = {
    "task by open post": lambda s, r: r.tasks.open_for_post(s, "page", "page_post"),
    "message by fb id": lambda s, r: r.messages.by_fb_id(s, "fb_1"),
    "message by chat id": lambda s, r: r.messages.by_chat_id(s, 1, "42"),
    "latest customer message": lambda s, r: r.messages.latest_customer(s, 1),
    "catch-up: last comment seen on a post": lambda s, r: r.messages.last_seen_on_post(s, "p"),
    "outbox claim heads": lambda s, r: r.outbox.claim_heads(s, NOW, 30.0, 16, ["t:1"]),
    "outbox following": lambda s, r: r.outbox.following(s, "t:1", 1, 24),
    "outbox any head": lambda s, r: r.outbox.any_head(s, NOW, []),
    "relay view": lambda s, r: r.messages.relay_view(s, 1, 1),
    "messages shown": lambda s, r: r.messages.mark_shown(s, [1, 2], "42"),
    "inbox pending": lambda s, r: r.inbox.pending(s, 50, NOW),
    "inbox marked handled": lambda s, r: r.inbox.mark_processed_many(s, [1, 2]),
    "pages by id": lambda s, r: r.pages.by_ids(s, ["page"]),
    "contacts by Facebook id": lambda s, r: r.contacts.by_fb_ids(s, ["u1", "u2"]),
    "stored comment ids": lambda s, r: r.messages.stored_fb_ids(s, ["c1", "c2"]),
    "messages by id": lambda s, r: r.messages.by_ids(s, [1, 2]),
    "outbox next due": lambda s, r: r.outbox.next_due(s),
}
# several replicas (PostgreSQL) take the inbox by lanes
PG_ONLY: dict[str, Query] = {
    "inbox lane claims": lambda s, r: r.inbox.claim_lanes(s, NOW, NOW + 30, 8, 4),
}
FULL_SCAN_SQLITE = re.compile(r"^SCAN (\w+)$")  # a table read row by row, no index


async def statements(db: Database, query: Query) -> list[tuple[str, Any]]:
    """The SQL (and parameters) ``query`` sends."""
    sent: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        async with db.write() as s:
            await query(s, Repositories())
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)
    return [
        (sql, p) for sql, p in sent if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH"))
    ]


async def plan(db: Database, sql: str, parameters: Any) -> list[str]:
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)
            return [str(row[-1]) for row in rows]
        await conn.exec_driver_sql("SET enable_seqscan = off")
        rows = await conn.exec_driver_sql("EXPLAIN " + sql, parameters)
        return [str(row[0]) for row in rows]


def full_scans(db: Database, lines: list[str]) -> list[str]:
    if db.is_sqlite:
        return [line for line in lines if FULL_SCAN_SQLITE.match(line.strip())]
    return [line for line in lines if "Seq Scan" in line]


async def test_hot_path_queries_use_indexes(db_url: str) -> None:
    db = Database(db_url)
    await db.migrate()
    try:
        queries = dict(HOT_PATH)
        if not db.is_sqlite:
            queries.update(PG_ONLY)
        problems: list[str] = []
        for name, query in queries.items():
            sent = await statements(db, query)
            assert sent, f"{name}: no query sent"
            for sql, parameters in sent:
                lines = await plan(db, sql, parameters)
                if bad := full_scans(db, lines):
                    problems.append(f"{name}: {bad}\n  {sql}\n  " + "\n  ".join(lines))
        assert not problems, "\n".join(problems)
    finally:
        await db.close()
