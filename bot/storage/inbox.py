"""The inbox's table: deliveries stored by the intake (in a session, or on a ``sqlite3``
connection of its own), read, claimed by lane and marked handled. It never commits."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import BindParameter

from bot.storage.models import InboxItem

# Statements built once: building one costs SQLAlchemy about as much as running it.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)


_INBOX_PENDING = (
    select(InboxItem)
    .where(InboxItem.processed_at.is_(None), InboxItem.next_attempt_at <= bindparam("now"))
    .order_by(InboxItem.id)
    .limit(bindparam("limit"))
)
_MARK_PROCESSED = (
    update(InboxItem)
    .where(InboxItem.id.in_(_IDS))
    .values(processed_at=bindparam("at"), error=None)
    .execution_options(synchronize_session=False)
)
_INBOX_BACKLOG = select(func.count()).select_from(InboxItem).where(InboxItem.processed_at.is_(None))


_INBOX = cast(Table, InboxItem.__table__)
# Core, on the table: the ORM's bulk insert costs 30 us a row, Core's 25
_INBOX_ADD_PG = pg_insert(_INBOX).on_conflict_do_nothing(index_elements=["source", "dedupe_key"])
_INBOX_ADD_SQLITE = sqlite_insert(_INBOX).on_conflict_do_nothing(
    index_elements=["source", "dedupe_key"]
)
# A delivery as the intake hands it in: these columns, in this order.
INBOX_COLUMNS = ("source", "dedupe_key", "payload", "lane", "received_at")
_INBOX_FRESH = {"processed_at": None, "attempts": 0, "next_attempt_at": 0.0}
_INBOX_APPEND = (
    f"INSERT INTO {InboxItem.__tablename__} "
    f"({', '.join(INBOX_COLUMNS)}, processed_at, attempts, next_attempt_at) VALUES "
)
_INBOX_APPEND_ROW = f"({', '.join('?' * len(INBOX_COLUMNS))}, NULL, 0, 0.0)"
_INBOX_APPEND_END = " ON CONFLICT (source, dedupe_key) DO NOTHING"
APPEND_MAX = 1000  # rows in one INSERT, at most (5,000 parameters)


@functools.lru_cache(maxsize=64)
def _inbox_append(rows: int) -> str:
    return _INBOX_APPEND + ", ".join([_INBOX_APPEND_ROW] * rows) + _INBOX_APPEND_END


class InboxRepository:
    """Durable intake. ``add_many`` ignores repeats of (source, dedupe_key)."""

    async def add_many(self, s: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        postgres = s.get_bind().dialect.name == "postgresql"
        await s.execute(_INBOX_ADD_PG if postgres else _INBOX_ADD_SQLITE, list(rows))

    async def add_fresh(self, s: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
        """New deliveries, each ``INBOX_COLUMNS``' values."""
        await self.add_many(
            s, [dict(zip(INBOX_COLUMNS, row, strict=True), **_INBOX_FRESH) for row in rows]
        )

    @staticmethod
    def append_fresh(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """``add_fresh`` on a ``sqlite3`` connection in autocommit mode
        (``Database.run_durably``), all or nothing: one statement for up to
        ``APPEND_MAX`` rows, or as many as the build's limit on parameters allows (999
        before SQLite 3.32). (``executemany`` runs a statement a row, and each lets go of
        the GIL and takes it back from the event loop's thread.)"""
        if not rows:
            return
        most = min(
            APPEND_MAX,
            conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(INBOX_COLUMNS),
        )
        if len(rows) <= most:
            conn.execute(_inbox_append(len(rows)), [v for row in rows for v in row])
            return
        conn.execute("BEGIN IMMEDIATE")
        for start in range(0, len(rows), most):
            chunk = rows[start : start + most]
            conn.execute(_inbox_append(len(chunk)), [v for row in chunk for v in row])
        conn.execute("COMMIT")

    async def pending(self, s: AsyncSession, limit: int, now: float) -> list[InboxItem]:
        return list(await s.scalars(_INBOX_PENDING, {"now": now, "limit": limit}))

    async def claim_lanes(
        self, s: AsyncSession, now: float, until: float, lanes: int, per_lane: int
    ) -> list[InboxItem]:
        """Several replicas (PostgreSQL): take up to ``lanes`` lanes that nobody holds, with
        up to ``per_lane`` of each lane's deliveries from its oldest on, until ``until``.

        A lane is held while any of its deliveries is taken: so one replica at a time
        handles a lane, in the order its deliveries were stored. A delivery waiting for a
        retry steps aside (its lane goes on). Deliveries without a lane have no order.
        """
        head, other = aliased(InboxItem, name="head"), aliased(InboxItem, name="other")
        heads = (
            select(head.id)
            .where(
                head.processed_at.is_(None),
                head.next_attempt_at <= now,
                or_(head.claimed_until.is_(None), head.claimed_until < now),
                ~select(other.id)
                .where(
                    other.lane == head.lane,
                    other.processed_at.is_(None),
                    or_(
                        and_(other.next_attempt_at <= now, other.id < head.id),
                        other.claimed_until >= now,
                    ),
                )
                .exists(),
            )
            .order_by(head.id)
            .limit(lanes)
            .with_for_update(skip_locked=True)
        )
        taken = list(await self._take(s, InboxItem.id.in_(heads), now, until))
        held = {item.lane for item in taken if item.lane is not None}
        if held and per_lane > 1:
            behind = aliased(InboxItem, name="behind")
            numbered = (
                select(
                    behind.id,
                    func.row_number().over(partition_by=behind.lane, order_by=behind.id).label("n"),
                )
                .where(
                    behind.lane.in_(held),
                    behind.processed_at.is_(None),
                    behind.next_attempt_at <= now,
                    or_(behind.claimed_until.is_(None), behind.claimed_until < now),
                )
                .subquery()
            )
            first = select(numbered.c.id).where(numbered.c.n < per_lane)
            taken += await self._take(s, InboxItem.id.in_(first), now, until)
        return sorted(taken, key=lambda item: item.id)

    @staticmethod
    async def _take(
        s: AsyncSession, which: ColumnElement[bool], now: float, until: float
    ) -> Sequence[InboxItem]:
        result = await s.scalars(
            select(InboxItem).from_statement(
                update(InboxItem)
                .where(
                    which,
                    or_(InboxItem.claimed_until.is_(None), InboxItem.claimed_until < now),
                )
                .values(claimed_until=until)
                .returning(InboxItem)
            ),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def release(self, s: AsyncSession, item_ids: Sequence[int], until: float) -> None:
        """Give back deliveries taken until ``until`` and not handled (a replica stopping,
        or a batch that took long): another replica may take them at once."""
        if item_ids:
            await s.execute(
                update(InboxItem)
                .where(
                    InboxItem.id.in_(item_ids),
                    InboxItem.claimed_until == until,
                    InboxItem.processed_at.is_(None),
                )
                .values(claimed_until=None)
            )

    async def renew(
        self, s: AsyncSession, item_ids: Sequence[int], until: float, new_until: float
    ) -> int:
        """Extend a claim made until ``until``; how many of the deliveries were still ours."""
        if not item_ids:
            return 0
        result = await s.execute(
            update(InboxItem)
            .where(InboxItem.id.in_(item_ids), InboxItem.claimed_until == until)
            .values(claimed_until=new_until)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def mark_processed(self, s: AsyncSession, item_id: int, error: str | None = None) -> None:
        await s.execute(
            update(InboxItem)
            .where(InboxItem.id == item_id)
            .values(processed_at=time.time(), error=error)
        )

    async def mark_processed_many(self, s: AsyncSession, ids: Sequence[int]) -> None:
        """Deliveries handled together, in the transaction that carried them out."""
        await s.execute(_MARK_PROCESSED, {"ids": list(ids), "at": time.time()})

    async def backlog(self, s: AsyncSession) -> int:
        return int(await s.scalar(_INBOX_BACKLOG) or 0)

    async def prune(self, s: AsyncSession, processed_before: float) -> int:
        """Forget deliveries handled without error before then; failed ones stay."""
        result = await s.execute(
            delete(InboxItem).where(
                InboxItem.processed_at < processed_before, InboxItem.error.is_(None)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
