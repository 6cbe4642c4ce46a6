"""Work that one replica does at a time: catch-up and pruning, Telegram long polling.

A replica that holds a lease renews it every third of its time to live; the others try to
take it as often, and succeed once it has run out: so when the holder dies, another one
carries on within ``ttl`` and a bit. A replica that stops gives its leases back, and another
takes over at its next try. SQLite serves one process, which always holds every lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bot.storage.db import Database
from bot.storage.shared import LeaseRepository

log = logging.getLogger(__name__)

# The work run under a lease; it returns soon after the event is set (stop, or lease lost).
LeasedWork = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

TTL = 30.0  # seconds a lease lasts unless renewed
GRACE = 2.0  # seconds the work gets to finish when the lease is lost or the replica stops


def replica_id() -> str:
    """This process, for the leases table and the logs: host, pid and a random tag (a pid
    comes again after a restart in a container)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    def __init__(self, db: Database, *, ttl: float = TTL, holder: str | None = None) -> None:
        self.db = db
        self.ttl = ttl
        self.holder = holder or replica_id()
        self._repo = LeaseRepository()

    @property
    def every(self) -> float:
        return self.ttl / 3

    async def acquire(self, name: str) -> bool:
        """Take or renew ``name``; False when another replica holds it."""
        if self.db.is_sqlite:
            return True
        async with self.db.write() as s:
            return await self._repo.acquire(s, name, self.holder, time.time(), self.ttl)

    async def release(self, name: str) -> None:
        if self.db.is_sqlite:
            return
        async with self.db.write() as s:
            await self._repo.release(s, name, self.holder)

    async def run(self, name: str, work: LeasedWork, stop: asyncio.Event) -> None:
        """Until ``stop``: whenever this replica holds ``name``, run ``work``."""
        while not stop.is_set():
            try:
                held = await self.acquire(name)
            except Exception as e:
                log.warning("lease not taken", extra={"lease": name, "error": str(e)})
                held = False
            if held:
                await self._lead(name, work, stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every)

    async def _lead(self, name: str, work: LeasedWork, stop: asyncio.Event) -> None:
        log.info("lease taken", extra={"lease": name, "holder": self.holder})
        over = asyncio.Event()
        task = asyncio.create_task(work(over), name=f"leased:{name}")
        stopping = asyncio.create_task(stop.wait())
        renewed = time.monotonic()
        try:
            while True:
                await asyncio.wait(
                    {task, stopping}, timeout=self.every, return_when=asyncio.FIRST_COMPLETED
                )
                if task.done() or stop.is_set():
                    break
                try:
                    if not await self.acquire(name):
                        log.warning("lease lost", extra={"lease": name, "holder": self.holder})
                        break
                    renewed = time.monotonic()
                except Exception as e:
                    # The database does not answer: keep on while the lease surely lasts;
                    # past that another replica may have taken over.
                    if time.monotonic() - renewed > self.ttl - self.every:
                        log.warning("lease not renewed", extra={"lease": name, "error": str(e)})
                        break
        finally:
            over.set()
            stopping.cancel()
            done, _ = await asyncio.wait({task}, timeout=GRACE)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.cancelled() and task.exception() is not None:
                log.error(
                    "leased work failed",
                    extra={"lease": name},
                    exc_info=task.exception(),
                )
            with contextlib.suppress(Exception):
                await self.release(name)
