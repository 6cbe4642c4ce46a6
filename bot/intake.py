"""Durable intake with group commit.

A webhook handler hands its delivery to ``Intake.submit`` and answers 200 only when the
delivery is committed. One writer task commits everything that arrived while the previous
commit ran, in one transaction: one fsync serves a whole burst, instead of one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from bot.priority import AcksFirst
from bot.storage.db import Database
from bot.storage.inbox import InboxRepository

log = logging.getLogger(__name__)


class IntakeClosed(Exception):
    pass


@dataclass(frozen=True)
class Delivery:
    """One row of the inbox: its dedupe key, the payload, and its ordering key (``lane``:
    deliveries of one lane are handled in the order they were stored; None: no order)."""

    dedupe_key: str | None
    payload: str
    lane: str | None = None


class Intake:
    def __init__(
        self,
        db: Database,
        on_stored: Callable[[], None],
        *,
        max_batch: int = 1000,
        acks: AcksFirst | None = None,
    ) -> None:
        self._db = db
        self._repo = InboxRepository()
        self._on_stored = on_stored
        self._max_batch = max_batch
        self.acks = acks if acks is not None else AcksFirst()
        # handed in, not yet taken by the writer: each delivery's rows and its waiter
        self._pending: list[tuple[list[tuple[Any, ...]], asyncio.Future[None]]] = []
        self._more: asyncio.Future[None] | None = None  # the idle writer waits on it
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="intake-writer")

    async def submit(
        self, source: str, dedupe_key: str | None, payload: str, *, lane: str | None = None
    ) -> None:
        """Store a delivery durably; returns once committed, raises if it could not be."""
        await self.submit_all(source, [Delivery(dedupe_key, payload, lane)])

    async def submit_all(self, source: str, deliveries: Sequence[Delivery]) -> None:
        """Store several rows of one delivery together (all committed, or none)."""
        if self._closed:
            raise IntakeClosed("shutting down")
        now = time.time()
        done = asyncio.get_running_loop().create_future()
        self._pending.append(
            ([(source, d.dedupe_key, d.payload, d.lane, now) for d in deliveries], done)
        )
        more = self._more
        if more is not None and not more.done():
            more.set_result(None)
        self.acks.arrived()
        try:
            await done
        finally:
            self.acks.answered()

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._more = loop.create_future()
                await self._more
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            rows = [row for rows, _ in batch for row in rows]
            try:
                if self._db.writes_in_thread:
                    await self._db.run_durably(partial(self._repo.append_fresh, rows=rows))
                else:
                    async with self._db.write(durable=True) as s:
                        await self._repo.add_fresh(s, rows)
            except Exception as e:
                log.exception("intake commit failed", extra={"batch": len(batch)})
                for _, done in batch:
                    if not done.done():
                        done.set_exception(e)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
            self._on_stored()

    async def close(self) -> None:
        """Refuse new deliveries, commit the ones already handed in, stop."""
        self._closed = True
        if self._task is None:
            return
        more = self._more
        if more is not None and not more.done():
            more.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
