"""The outbox's table: jobs queued in a session and inserted as it commits, lane heads
claimed, ended jobs recorded, old ones pruned. Like every repository, it never commits."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from bot.storage.models import OutboxJob

# Statements built once: building one costs SQLAlchemy about as much as running it.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)


def _head_ids() -> Select[int]:
    """The oldest pending job of each lane, where it is due and nobody holds it (a lane
    runs in id order), but for the ``busy`` lanes. One pass over ``ix_outbox_state_lane``
    (pending jobs only)."""
    first = select(func.min(OutboxJob.id)).where(OutboxJob.state == "pending")
    now: BindParameter[float] = bindparam("now")
    return (
        select(OutboxJob.id)
        .where(
            OutboxJob.id.in_(first.group_by(OutboxJob.lane)),
            OutboxJob.next_attempt_at <= now,
            or_(OutboxJob.claimed_until.is_(None), OutboxJob.claimed_until < now),
            OutboxJob.lane.not_in(bindparam("busy", expanding=True)),
        )
        .order_by(OutboxJob.id)
        .limit(bindparam("limit"))
    )


def _claim_heads(for_update: bool) -> ExecutableReturnsRows:
    """Claim the heads until ``until``: the claim repeats the head's conditions, so of two
    replicas that read the same head only one gets it."""
    ids: Select[int] = _head_ids()
    if for_update:
        # PostgreSQL may run a LIMIT … SKIP LOCKED subquery of an UPDATE more than once and
        # claim more than the limit: the heads are taken once, in a materialized CTE
        heads = ids.with_for_update(skip_locked=True).cte("heads").prefix_with("MATERIALIZED")
        ids = select(heads.c.id)
    now: BindParameter[float] = bindparam("now")
    return (
        select(OutboxJob)
        .from_statement(
            update(OutboxJob)
            .where(
                OutboxJob.id.in_(ids),
                OutboxJob.state == "pending",
                or_(OutboxJob.claimed_until.is_(None), OutboxJob.claimed_until < now),
            )
            .values(claimed_until=bindparam("until"))
            .returning(OutboxJob)
        )
        .execution_options(populate_existing=True)
    )


_HEAD_IDS = _head_ids()
_CLAIM_HEADS = _claim_heads(for_update=False)
_CLAIM_HEADS_PG = _claim_heads(for_update=True)


_FOLLOWING = (
    select(OutboxJob.id, OutboxJob.kind, OutboxJob.payload)
    .where(
        OutboxJob.lane == bindparam("lane"),
        OutboxJob.state == "pending",
        OutboxJob.id > bindparam("after"),
    )
    .order_by(OutboxJob.id)
    .limit(bindparam("limit"))
)
_COMPLETE = (
    update(OutboxJob)
    .where(OutboxJob.id.in_(bindparam("ids", expanding=True)), OutboxJob.state == "pending")
    .values(state="done")
    .execution_options(synchronize_session=False)
)


_NEXT_DUE = select(func.min(OutboxJob.next_attempt_at)).where(OutboxJob.state == "pending")
_OUTBOX_BACKLOG = select(func.count()).select_from(OutboxJob).where(OutboxJob.state == "pending")
# pruning the outbox (OutboxRepository.prune)
_DELETE_JOBS = (
    delete(OutboxJob).where(OutboxJob.id.in_(_IDS)).execution_options(synchronize_session=False)
)
PRUNE_CHUNK = 5000  # ids a statement deletes at most


QUEUED_JOBS = "pagedesk.queued_jobs"
_INSERT_JOBS = insert(OutboxJob)  # run on the connection: Core

# A queued job: its row, and the savepoint it was queued in (None: the transaction itself)
Queued = tuple[dict[str, Any], SessionTransaction | None]


def insert_queued_jobs(session: Session) -> None:
    """Before a commit (``Database``'s sessions): the jobs ``OutboxRepository.add`` queued,
    in one statement, in the order they were queued. A savepoint released keeps its jobs
    queued: they go in with the transaction's."""
    if session.in_nested_transaction():
        return  # a savepoint is being released
    queued: list[Queued] | None = session.info.pop(QUEUED_JOBS, None)
    if queued:
        session.connection().execute(_INSERT_JOBS, [row for row, _ in queued])


def _within(savepoint: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is ended:
            return True
        savepoint = savepoint.parent
    return False


def forget_queued_jobs(session: Session, transaction: SessionTransaction) -> None:
    """A transaction rolled back takes its queued jobs with it; a savepoint rolled back,
    the jobs queued in it (and in the savepoints it held). A failed flush rolls back the
    savepoint it ran in, or the transaction, as SQLAlchemy does."""
    ended: SessionTransaction | None = transaction
    while ended is not None and not ended.nested and ended.parent is not None:
        ended = ended.parent  # a flush's own: what it rolled back is the one around it
    if ended is None or ended.parent is None:
        session.info.pop(QUEUED_JOBS, None)
    else:
        queued: list[Queued] = session.info.get(QUEUED_JOBS, [])
        queued[:] = [(row, sp) for row, sp in queued if not _within(sp, ended)]


class OutboxRepository:
    def add(
        self, s: AsyncSession, lane: str, kind: str, payload: dict[str, Any], delay: float = 0.0
    ) -> None:
        """Queue a job, inserted as the transaction commits: a transaction's jobs go in one
        statement (``insert_queued_jobs``), not one flush each. One queued in a savepoint
        goes if the savepoint is rolled back (``forget_queued_jobs``)."""
        row = {
            "lane": lane,
            "kind": kind,
            "payload": payload,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": time.time() + delay,
        }
        session = s.sync_session
        queued: list[Queued] = session.info.setdefault(QUEUED_JOBS, [])
        queued.append((row, session.get_nested_transaction()))

    async def claim_heads(
        self, s: AsyncSession, now: float, lease: float, limit: int, busy: Collection[str]
    ) -> list[OutboxJob]:
        """Claim up to ``limit`` lane heads for ``lease`` seconds in one statement, skipping
        the ``busy`` lanes (running here). The claim repeats the head's conditions, so of two
        replicas that read the same head only one gets it."""
        pg = s.get_bind().dialect.name == "postgresql"
        result = await s.scalars(
            _CLAIM_HEADS_PG if pg else _CLAIM_HEADS,
            {"now": now, "until": now + lease, "limit": limit, "busy": list(busy)},
        )
        return sorted(result, key=lambda job: job.id)

    async def any_head(self, s: AsyncSession, now: float, busy: Collection[str]) -> bool:
        """Is a lane head due that nobody holds? (A read, before claiming in a write.)"""
        params = {"now": now, "limit": 1, "busy": list(busy)}
        return (await s.scalar(_HEAD_IDS, params)) is not None

    async def finish_many(self, s: AsyncSession, ran: Sequence[tuple[int, int]]) -> None:
        """Jobs that ran, as (id, attempts): done, with their claims given up."""
        await s.execute(
            update(OutboxJob),
            [
                {"id": job_id, "attempts": attempts, "state": "done", "claimed_until": None}
                for job_id, attempts in ran
            ],
        )

    async def extend(self, s: AsyncSession, job_ids: Sequence[int], until: float) -> None:
        """Renew the claims on jobs still running."""
        await s.execute(
            update(OutboxJob)
            .where(
                OutboxJob.id.in_(job_ids),
                OutboxJob.state == "pending",
                OutboxJob.claimed_until.is_not(None),
            )
            .values(claimed_until=until)
        )

    async def postpone(self, s: AsyncSession, job_id: int, until: float) -> None:
        """Give a claimed job back to run at ``until`` (its destination's limit is reached)."""
        await s.execute(
            update(OutboxJob)
            .where(OutboxJob.id == job_id)
            .values(claimed_until=None, next_attempt_at=until)
        )

    async def release_all(self, s: AsyncSession) -> None:
        """At the start of the only process (SQLite): leases of a dead process end now."""
        await s.execute(
            update(OutboxJob).where(OutboxJob.claimed_until.is_not(None)).values(claimed_until=None)
        )

    async def following(
        self, s: AsyncSession, lane: str, after_id: int, limit: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """The pending jobs queued behind ``after_id`` in its lane: (id, kind, payload)."""
        rows = await s.execute(_FOLLOWING, {"lane": lane, "after": after_id, "limit": limit})
        return [(row[0], row[1], row[2]) for row in rows]

    async def complete(self, s: AsyncSession, job_ids: Sequence[int]) -> None:
        """Jobs whose work another job did (a digest of several relays)."""
        if job_ids:
            await s.execute(_COMPLETE, {"ids": list(job_ids)})

    async def next_due(self, s: AsyncSession) -> float | None:
        value = await s.scalar(_NEXT_DUE)
        return float(value) if value is not None else None

    async def backlog(self, s: AsyncSession) -> int:
        return int(await s.scalar(_OUTBOX_BACKLOG) or 0)

    async def prune(self, s: AsyncSession, created_before: datetime) -> int:
        """Forget jobs done before then; failed and pending ones stay.

        Ids grow with the time a job was created: the first job created since then bounds
        what goes, and only the rows before it are read, by id. (``created_at`` has no
        index, and ``state`` leads two: a filter on them read every done job, 0.37 s on
        the loop's thread with 1,000,000, every 10 minutes.)"""
        first_kept = await s.scalar(
            select(OutboxJob.id)
            .where(OutboxJob.created_at >= created_before)
            .order_by(OutboxJob.id)
            .limit(1)
        )
        older = select(OutboxJob.id, OutboxJob.state)
        if first_kept is not None:
            older = older.where(OutboxJob.id < first_kept)
        else:
            older = older.where(OutboxJob.created_at < created_before)
        done = [job_id for job_id, state in await s.execute(older) if state == "done"]
        for at in range(0, len(done), PRUNE_CHUNK):
            await s.execute(_DELETE_JOBS, {"ids": done[at : at + PRUNE_CHUNK]})
        return len(done)
