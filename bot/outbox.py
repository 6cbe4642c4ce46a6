"""The outbox: every call to a platform is a stored job, run with retries and pacing.

Jobs of one lane (one task's chat thread, one task's Facebook answers) run one at a time in
id order, so the messages of a task keep their order. Lanes run concurrently. A job whose
call succeeded but whose result was not yet recorded when the process died runs again on
restart: at most one duplicate per call in flight at the moment of a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import DeliveryError
from bot.limits import Limit, Limiter, Pacer
from bot.metrics import Metrics
from bot.priority import AcksFirst
from bot.storage.db import Database
from bot.storage.jobs import OutboxRepository
from bot.storage.models import OutboxJob

__all__ = ["Executor", "FailureHandler", "Finish", "Limit", "Outbox", "Pacer", "backoff"]

log = logging.getLogger(__name__)

LEASE = 30.0  # seconds; see Outbox.lease
METER_EVERY = 1.0  # seconds between two counts of the backlog for /metrics
SHARE = 1  # lane heads one replica claims at a time (PostgreSQL)

# What a job that ran records of its result, written in the transaction that marks it done.
Finish = Callable[[AsyncSession], Awaitable[None]]
Executor = Callable[[OutboxJob], Awaitable[Finish | None]]
# Called inside the transaction that marks the job failed, so the state and what it
# triggers (a notice in the thread) are written together.
FailureHandler = Callable[[AsyncSession, OutboxJob, DeliveryError], Awaitable[None]]


def backoff(attempt: int, base: float = 1.0, cap: float = 600.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(base / 2, min(cap, base * 2.0**attempt))


class Outbox:
    def __init__(
        self,
        db: Database,
        execute: Executor,
        on_failed: FailureHandler,
        metrics: Metrics,
        limiter: Limiter,
        *,
        concurrency: int = 16,
        max_attempts: int = 10,
        base_delay: float = 1.0,
        acks: AcksFirst | None = None,
    ) -> None:
        self._db = db
        self._acks = acks if acks is not None else AcksFirst()
        self._repo = OutboxRepository()
        self._execute = execute
        self._on_failed = on_failed
        self._metrics = metrics
        self._limiter = limiter
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._running_ids: dict[str, int] = {}  # lane: the job running in it
        self._renewed = 0.0
        self._metered = 0.0
        self._ended: list[tuple[OutboxJob, Finish | None, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # A runner's claim on a job, renewed while the job runs: a replica that dies
        # mid-call holds up that lane for this long at most.
        self.lease = LEASE

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        if self._db.is_sqlite:
            # SQLite serves one process: a lease still held was held by a dead process.
            async with self._db.write() as s:
                await self._repo.release_all(s)
        self._task = asyncio.create_task(self._acks.metered(self._run()), name="outbox")

    async def stop(self, timeout: float = 10.0) -> None:
        """Let calls in flight finish (or time out); what has not run stays in the table."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            _, pending = await asyncio.wait(list(self._running.values()), timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._acks.turn()
            wait = 1.0
            try:
                wait = await self._dispatch_due()
                await self._renew_claims()
            except Exception:
                log.exception("outbox poll failed")
            if self._running_ids and not self._db.is_sqlite:
                # claims of jobs running here are renewed by this loop: wake for it
                wait = min(wait, self._renewed + self.lease / 3 - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(wait, 1.0)))

    async def _dispatch_due(self) -> float:
        now = time.time()
        if now - self._metered >= METER_EVERY:
            async with self._db.read() as s:
                self._metrics.outbox_backlog.set(await self._repo.backlog(s))
            self._metered = now
        free = self._concurrency - len(self._running)
        if free <= 0:
            return 1.0
        postponed: list[float] = []
        async with self._db.read() as s:
            due = await self._repo.any_head(s, now, self._running)
            next_due = None if due else await self._repo.next_due(s)
        if not due:
            # Due jobs behind a head that runs here wait for it to end, which wakes the
            # loop; only a job due later (a retry, a paced send) sets a time.
            return min(1.0, next_due - now) if next_due is not None and next_due > now else 1.0
        async with self._db.write() as s:
            # Claim and pace in one transaction: of two replicas that see the same head,
            # only the one whose claim succeeds spends the send; a job that must wait goes
            # back with its time, and no replica asks for it again before.
            now = time.time()  # the lease runs from the claim
            # Several replicas: a few lanes at a time, so that the others get their share
            take = free if self._db.is_sqlite else min(free, SHARE)
            heads = await self._repo.claim_heads(s, now, self.lease, take, self._running)
            ready: list[OutboxJob] = []
            for job in heads:
                pace = job.payload.get("pace")
                keys = [str(k) for k in pace] if isinstance(pace, list) else []
                cost = job.payload.get("pace_cost", 1)
                delay = 0.0
                if keys:
                    delay = await self._limiter.reserve(
                        s, keys, cost if isinstance(cost, int) else 1
                    )
                if delay > 0:
                    await self._repo.postpone(s, job.id, now + delay)
                    postponed.append(delay)
                else:
                    ready.append(job)
        for job in ready:
            self._running[job.lane] = asyncio.create_task(self._acks.metered(self._attempt(job)))
            self._running_ids[job.lane] = job.id
        if len(heads) == take < free:
            return 0.0  # there may be more to claim
        return min(postponed, default=1.0)

    async def _renew_claims(self) -> None:
        """Several replicas (PostgreSQL): keep the jobs in flight ours. SQLite serves one
        process, which releases every claim when it starts."""
        now = time.time()
        if self._db.is_sqlite or not self._running_ids or now - self._renewed < self.lease / 3:
            return
        async with self._db.write() as s:
            await self._repo.extend(s, list(self._running_ids.values()), now + self.lease)
        self._renewed = now

    async def _attempt(self, job: OutboxJob) -> None:
        finish: Finish | None = None
        try:
            await self._acks.turn()
            finish = await self._execute(job)
        except DeliveryError as e:
            await self._handle_error(job, e)
        except Exception as e:
            log.exception("outbox job crashed", extra={"job_id": job.id, "kind": job.kind})
            await self._handle_error(
                job, DeliveryError(f"internal error: {type(e).__name__}", retryable=True)
            )
        else:
            await self._finish(job, finish)
        finally:
            self._running.pop(job.lane, None)
            self._running_ids.pop(job.lane, None)
            self._wake.set()

    async def _finish(self, job: OutboxJob, finish: Finish | None) -> None:
        """Record that the job ran, with what it wrote of its result. Jobs that end while a
        commit is under way are recorded together in the next one (group commit)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended.append((job, finish, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._acks.metered(self._record_ended()))
        await done

    async def _record_ended(self) -> None:
        while self._ended:
            await self._acks.turn()
            batch, self._ended = self._ended, []
            try:
                async with self._db.write() as s:
                    for _, finish, _ in batch:
                        if finish is not None:
                            await finish(s)
                    await self._repo.finish_many(s, [(j.id, j.attempts + 1) for j, _, _ in batch])
            except Exception as e:
                if len(batch) == 1:
                    batch[0][2].set_exception(e)
                    continue
                # one of them failed: each on its own, so the others are recorded
                for job, finish, done in batch:
                    try:
                        async with self._db.write() as s:
                            if finish is not None:
                                await finish(s)
                            await self._repo.finish_many(s, [(job.id, job.attempts + 1)])
                    except Exception as e:
                        done.set_exception(e)
                    else:
                        done.set_result(None)
                continue
            for _, _, done in batch:
                done.set_result(None)

    async def _handle_error(self, job: OutboxJob, e: DeliveryError) -> None:
        attempts = job.attempts + 1
        final = not e.retryable or attempts >= self._max_attempts
        async with self._db.write() as s:
            row = await s.get(OutboxJob, job.id)
            if row is None:
                return
            row.attempts = attempts
            row.last_error = e.reason[:2000]
            row.claimed_until = None
            if final:
                row.state = "failed"
                try:
                    async with s.begin_nested():
                        await self._on_failed(s, job, e)
                except Exception:
                    log.exception("recording a failed job failed", extra={"job_id": job.id})
            else:
                delay = backoff(attempts, self._base_delay)
                if e.retry_after is not None:
                    delay = max(delay, e.retry_after)
                row.next_attempt_at = time.time() + delay
        if final:
            self._metrics.outbox_failed.labels(job.kind).inc()
            log.warning(
                "outbox job failed",
                extra={"job_id": job.id, "kind": job.kind, "reason": e.reason},
            )
            self._wake.set()
        else:
            self._metrics.outbox_retries.labels(job.kind).inc()
            log.info(
                "outbox job will be retried",
                extra={"job_id": job.id, "kind": job.kind, "attempt": attempts},
            )
