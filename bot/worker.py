"""Processes stored deliveries in the order they arrived, after they were acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from bot.metrics import Metrics
from bot.storage.db import Database
from bot.storage.models import InboxItem
from bot.storage.repositories import InboxRepository

log = logging.getLogger(__name__)

Handler = Callable[[InboxItem], Awaitable[None]]

MAX_ATTEMPTS = 8
LEASE = 300.0  # seconds a replica holds a stored delivery it is processing


class InboxWorker:
    def __init__(self, db: Database, handlers: dict[str, Handler], metrics: Metrics) -> None:
        self._db = db
        self._repo = InboxRepository()
        self._handlers = handlers
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def register(self, source: str, handler: Handler) -> None:
        self._handlers[source] = handler

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbox-worker")

    async def stop(self) -> None:
        """Finish the item in hand, then stop; the rest stays stored for the next start."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                async with self._db.read() as s:
                    items = await self._repo.pending(s, 200, time.time())
                    self._metrics.inbox_backlog.set(await self._repo.backlog(s))
            except Exception:
                log.exception("inbox read failed")
                items = []
            if not items:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                continue
            for item in items:
                if self._stopping:
                    return
                await self.process(item)

    async def process(self, item: InboxItem) -> None:
        if not self._db.is_sqlite:
            # Several replicas share PostgreSQL: one takes the item (a lease, so a replica
            # that dies holding it only delays it). SQLite serves one process: no need.
            async with self._db.write() as s:
                if not await self._repo.claim(s, item.id, time.time(), LEASE):
                    return
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
