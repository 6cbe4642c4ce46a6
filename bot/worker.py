"""Processes stored deliveries in the order they arrived, after they were acknowledged.

SQLite serves one process: it reads the deliveries in id order and handles them one by one.
On PostgreSQL several replicas share the table: each takes whole lanes (a Facebook page, a
Telegram chat, a Slack channel: ``InboxItem.lane``), the oldest delivery of a lane and those
right behind it, under a lease. A lane is handled by one replica at a time, in arrival
order; other lanes run on the other replicas. A replica that dies holding a lane only
delays it until the lease ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from bot.metrics import Metrics
from bot.priority import AcksFirst
from bot.storage.db import Database
from bot.storage.inbox import InboxRepository
from bot.storage.models import InboxItem

log = logging.getLogger(__name__)

Handler = Callable[[InboxItem], Awaitable[None]]
# Marks deliveries handled, in the transaction that carried them out.
Mark = Callable[[AsyncSession, list[int]], Awaitable[None]]
# Handles several deliveries of one source in a few transactions and marks them in the
# transaction that carried them out; when it raises, the deliveries it did not mark (see
# ``PartlyHandled``) are handled again, one by one.
BatchHandler = Callable[[list[InboxItem], Mark], Awaitable[None]]


class PartlyHandled(Exception):
    """A batch failed after some of its deliveries were committed: ``done`` holds those."""

    def __init__(self, done: set[int]) -> None:
        super().__init__(f"{len(done)} deliveries handled before the failure")
        self.done = done


MAX_ATTEMPTS = 8
LEASE = 30.0  # seconds a replica holds the deliveries it took, renewed while it works
LANES = 8  # lanes one replica takes at a time
PER_LANE = 50  # deliveries of one lane taken at a time
BATCH = 50  # deliveries handled in one transaction, at most
TAKE = 200  # deliveries read at a time (SQLite)
METER_EVERY = 1.0  # seconds between two counts of the backlog for /metrics


@dataclass
class _Held:
    until: float
    lost: bool = False


class InboxWorker:
    def __init__(
        self,
        db: Database,
        handlers: dict[str, Handler],
        metrics: Metrics,
        acks: AcksFirst | None = None,
    ) -> None:
        self._db = db
        self._acks = acks if acks is not None else AcksFirst()
        self._repo = InboxRepository()
        self._handlers = handlers
        self._batch: dict[str, BatchHandler] = {}
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._metered = 0.0
        self.lease = LEASE

    def register(self, source: str, handler: Handler, many: BatchHandler | None = None) -> None:
        """``handler`` takes one delivery; ``many``, where given, takes a run of them (first
        attempts in a row, of this source) in one transaction."""
        self._handlers[source] = handler
        if many is not None:
            self._batch[source] = many

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._acks.metered(self._run()), name="inbox-worker")

    async def stop(self) -> None:
        """Finish the item in hand, then stop; the rest stays stored for the next start
        (or, on PostgreSQL, is given back for another replica to take at once)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def take(self, now: float) -> tuple[list[InboxItem], float]:
        """The next deliveries to handle, in order, and until when they are ours."""
        if self._db.is_sqlite:
            async with self._db.read() as s:
                return await self._repo.pending(s, TAKE, now), float("inf")
        until = now + self.lease
        async with self._db.write() as s:
            return await self._repo.claim_lanes(s, now, until, LANES, PER_LANE), until

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._acks.turn()
            try:
                now = time.time()
                items, until = await self.take(now)
                if now - self._metered >= METER_EVERY:
                    async with self._db.read() as s:
                        self._metrics.inbox_backlog.set(await self._repo.backlog(s))
                    self._metered = now
            except Exception:
                log.exception("inbox read failed")
                items, until = [], 0.0
            if items:
                await self._handle_taken(items, until)
            if not items or (self._db.is_sqlite and len(items) < TAKE):
                # nothing more stored than what was read (SQLite: this process is the only
                # one that stores): what came in since has woken the worker
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def _handle_taken(self, items: list[InboxItem], until: float) -> None:
        if until == float("inf"):  # SQLite: nothing taken, nothing to keep or give back
            await self._handle(list(items), lambda: self._stopping)
            return
        left = list(items)
        held = _Held(until)
        keeper = asyncio.create_task(self._keep(left, held))
        try:
            await self._handle(left, lambda: self._stopping or held.lost)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if left and not held.lost:
                # stopping: another replica may take the rest at once
                async with self._db.write() as s:
                    await self._repo.release(s, [i.id for i in left], held.until)

    async def _handle(self, left: list[InboxItem], stop: Callable[[], bool]) -> None:
        """Handle ``left`` in order, removing each as it is done: runs of first attempts of
        a source that takes batches go in one transaction each, the rest one by one."""
        while left and not stop():
            await self._acks.turn()
            many = self._batch.get(left[0].source)
            n = 0
            if many is not None:
                while (
                    n < min(BATCH, len(left))
                    and left[n].source == left[0].source
                    and left[n].attempts == 0
                ):
                    n += 1
            if n == 0 or many is None:
                await self.process(left[0])
                left.pop(0)
                continue
            run = left[:n]
            try:
                await many(run, self._mark)
            except Exception as e:
                done = e.done if isinstance(e, PartlyHandled) else set()
                cause = e.__cause__ if isinstance(e, PartlyHandled) else e
                log.warning(
                    "a batch of deliveries failed; handling the rest one by one",
                    exc_info=cause,
                    extra={"deliveries": len(run) - len(done)},
                )
                for item in run:
                    if stop():
                        return
                    if item.id not in done:
                        await self.process(item)
                    left.pop(0)
                continue
            del left[:n]

    async def _mark(self, s: AsyncSession, ids: list[int]) -> None:
        await self._repo.mark_processed_many(s, ids)

    async def _keep(self, left: list[InboxItem], held: _Held) -> None:
        """Renew the lease on what is left while it is being handled, so that a short lease
        suffices: a replica that dies holds up its lanes for ``lease`` seconds at most."""
        while left:
            await asyncio.sleep(self.lease / 3)
            ids = [i.id for i in left]
            until = time.time() + self.lease
            try:
                async with self._db.write() as s:
                    kept = await self._repo.renew(s, ids, held.until, until)
            except Exception as e:
                log.warning("inbox lease not renewed", extra={"error": str(e)})
                continue
            held.until = until
            if kept < len(ids):
                # the lease ran out (a stalled process) and another replica took some:
                # what is left is theirs now
                log.warning("inbox lease lost", extra={"deliveries": len(ids) - kept})
                held.lost = True
                return

    async def process(self, item: InboxItem) -> None:
        """Handle one stored delivery and record how it went."""
        handler = self._handlers.get(item.source)
        if handler is None:
            log.warning("no handler for stored delivery", extra={"source": item.source})
            async with self._db.write() as s:
                await self._repo.mark_processed(s, item.id, error="no handler")
            return
        try:
            await handler(item)
        except Exception as e:
            attempts = item.attempts + 1
            log.exception(
                "processing a stored delivery failed",
                extra={"inbox_id": item.id, "source": item.source, "attempt": attempts},
            )
            async with self._db.write() as s:
                row = await s.get(InboxItem, item.id)
                if row is not None:
                    row.attempts = attempts
                    row.error = f"{type(e).__name__}: {e}"[:2000]
                    row.claimed_until = None
                    if attempts >= MAX_ATTEMPTS:
                        # kept in the table with its error for an operator; not retried
                        row.processed_at = time.time()
                    else:
                        row.next_attempt_at = time.time() + min(
                            300.0, 2.0**attempts * (0.5 + random.random())
                        )
            return
        async with self._db.write() as s:
            await self._repo.mark_processed(s, item.id)
