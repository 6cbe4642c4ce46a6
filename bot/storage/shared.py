"""What several replicas share besides the work itself: leases (work that one replica does
at a time) and the pacing state of each destination. Repositories: they never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.models import Lease, RateLimit


class LeaseRepository:
    async def acquire(
        self, s: AsyncSession, name: str, holder: str, now: float, ttl: float
    ) -> bool:
        """Take ``name`` (or renew it) until ``now + ttl``: yes when nobody holds it, its
        holder is ``holder``, or the holder's time is up."""
        ins = (pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert)(Lease)
        stmt = (
            ins.values(name=name, holder=holder, until=now + ttl)
            .on_conflict_do_update(
                index_elements=["name"],
                set_={"holder": ins.excluded.holder, "until": ins.excluded.until},
                where=or_(Lease.holder == holder, Lease.until < now),
            )
            .returning(Lease.holder)
        )
        return (await s.scalar(stmt)) == holder

    async def release(self, s: AsyncSession, name: str, holder: str) -> None:
        """Let go of ``name`` if ``holder`` has it: another replica may take it at once."""
        await s.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))

    async def holder(self, s: AsyncSession, name: str, now: float) -> str | None:
        """Who holds ``name`` now, if anyone."""
        return await s.scalar(select(Lease.holder).where(Lease.name == name, Lease.until >= now))


class RateLimitRepository:
    """PostgreSQL only: rows locked until the caller's transaction ends."""

    async def lock(self, s: AsyncSession, keys: Sequence[str]) -> list[tuple[RateLimit, float]]:
        """The rows of ``keys`` that exist, locked in key order (so that two transactions
        asking for overlapping keys never deadlock), each with the database's clock."""
        result = await s.execute(
            select(RateLimit, func.extract("epoch", func.clock_timestamp()))
            .where(RateLimit.key.in_(keys))
            .order_by(RateLimit.key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return [(row, float(now)) for row, now in result.all()]

    async def create(self, s: AsyncSession, keys: Sequence[str]) -> None:
        """Rows for keys never used before (a concurrent creator wins quietly)."""
        if keys:
            await s.execute(
                pg_insert(RateLimit)
                .values([{"key": k, "tat": 0.0, "sent": []} for k in keys])
                .on_conflict_do_nothing()
            )
