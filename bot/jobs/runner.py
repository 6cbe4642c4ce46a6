"""The registry from job kind to handler: the outbox hands a stored job here, the runner
decodes it into its dataclass and calls the one handler registered for that kind."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import DeliveryError
from bot.jobs.kinds import BadJob, Job, decode
from bot.storage.models import OutboxJob

J = TypeVar("J", bound=Job)
# A handler may return what records its result: the outbox runs it in the transaction that
# marks the job done, so a job's effects and its end are one write.
Finish = Callable[[AsyncSession], Awaitable[None]]
Handler = Callable[[Any, OutboxJob], Awaitable[Finish | None]]
# Called inside the transaction that marks the job failed, so the state and what it
# triggers (a report in the chat) are written together.
FailureHandler = Callable[[AsyncSession, Job, OutboxJob, DeliveryError], Awaitable[None]]


class JobRunner:
    def __init__(self) -> None:
        self._handlers: dict[type, Handler] = {}
        self._on_failed: list[FailureHandler] = []

    def register(
        self, kind: type[J], handler: Callable[[J, OutboxJob], Awaitable[Finish | None]]
    ) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind.__name__} is registered already")
        self._handlers[kind] = handler

    def on_failed(self, handler: FailureHandler) -> None:
        self._on_failed.append(handler)

    async def execute(self, row: OutboxJob) -> Finish | None:
        try:
            job = decode(row.kind, row.payload)
        except BadJob as e:
            raise DeliveryError(str(e), retryable=False) from None
        handler = self._handlers.get(type(job))
        if handler is None:
            raise DeliveryError(f"no handler for {row.kind} jobs", retryable=False)
        return await handler(job, row)

    async def failed(self, s: AsyncSession, row: OutboxJob, error: DeliveryError) -> None:
        try:
            job = decode(row.kind, row.payload)
        except BadJob:
            return  # nothing to tell anyone about a job that never meant anything
        for handler in self._on_failed:
            await handler(s, job, row, error)
