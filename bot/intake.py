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
from dataclasses import dataclass, field
from typing import Any

from bot.storage.db import Database
from bot.storage.repositories import InboxRepository

log = logging.getLogger(__name__)


class IntakeClosed(Exception):
    pass


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


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
    ) -> None:
        self._db = db
        self._repo = InboxRepository()
        self._on_stored = on_stored
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
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
        item = _Pending(
            [
                {
                    "source": source,
                    "dedupe_key": d.dedupe_key,
                    "payload": d.payload,
                    "lane": d.lane,
                    "received_at": now,
                    "processed_at": None,
                    "attempts": 0,
                    "next_attempt_at": 0.0,
                }
                for d in deliveries
            ]
        )
        await self._queue.put(item)
        await item.done

    async def _writer(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                async with self._db.write(durable=True) as s:
                    await self._repo.add_many(s, [row for p in batch for row in p.rows])
            except Exception as e:
                log.exception("intake commit failed", extra={"batch": len(batch)})
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(e)
                continue
            for p in batch:
                if not p.done.done():
                    p.done.set_result(None)
            self._on_stored()

    async def close(self) -> None:
        """Refuse new deliveries, commit the ones already handed in, stop."""
        self._closed = True
        if self._task is None:
            return
        await self._queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
