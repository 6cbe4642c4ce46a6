"""What every part of the core shares: the database, the platforms, the job writer.

Network reads (post text, profiles) happen before a write transaction opens, so that no
transaction waits on Facebook. Every platform call is an outbox job written in the same
transaction as the state it belongs to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from bot.crypto import TokenBox
from bot.errors import DeliveryError
from bot.jobs.kinds import (
    ChatNotice,
    FacebookJob,
    FbAnswer,
    FbPrivateReply,
    Moderate,
    OpenThread,
    TaskJob,
    chat_pace,
    encode,
    notice_lane,
    page_pace,
    task_lane,
)
from bot.metrics import Metrics
from bot.ports import ChatPlatform, FacebookGateway
from bot.priority import AcksFirst
from bot.storage.db import Database
from bot.storage.models import Page, Task
from bot.storage.repositories import Repositories


class CoreError(Exception):
    """A staff or admin request that cannot be done; the message is for the user."""


NOT_HERE = "the Page is no longer connected to this chat"


class Core:
    """The shared context of the core's modules. ``graph`` is set once the HTTP session
    exists (at start); platforms register as they are configured."""

    def __init__(
        self,
        db: Database,
        platforms: dict[str, ChatPlatform],
        tokens: TokenBox | None,
        metrics: Metrics,
        on_enqueued: Callable[[], None] = lambda: None,
        *,
        acks: AcksFirst | None = None,
    ) -> None:
        self.db = db
        # processing's turns while webhook deliveries wait (between transactions)
        self.acks = acks if acks is not None else AcksFirst()
        self.graph: FacebookGateway | None = None
        self.platforms = platforms
        self.tokens = tokens
        self.metrics = metrics
        self.repo = Repositories()
        self.on_enqueued = on_enqueued

    @asynccontextmanager
    async def tx(self, *, durable: bool = False) -> AsyncIterator[AsyncSession]:
        """A write transaction; the outbox is woken after it commits. ``durable``: on disk
        when it commits, power loss included (``Database.write``)."""
        async with self.db.write(durable=durable) as s:
            yield s
        self.on_enqueued()

    # --- jobs ---------------------------------------------------------------------------

    def add_job(self, s: AsyncSession, task: Task, job: TaskJob | FacebookJob) -> None:
        """Queue a job of a task, in its lane, paced against its chat or its page."""
        payload = encode(job)
        if job.paced:
            if isinstance(job, FbAnswer | FbPrivateReply | Moderate):
                payload["pace"] = page_pace(task.page_id)
            else:
                payload["pace"] = chat_pace(task.chat_platform, task.chat_id)
        if isinstance(job, OpenThread) and task.chat_platform == "telegram":
            payload["pace_cost"] = 2  # createForumTopic and the root message
        self.repo.outbox.add(s, task_lane(job), job.kind, payload)

    def notice(self, s: AsyncSession, notice: ChatNotice) -> None:
        """A message from the bot to a chat, outside any task (command answers, failures)."""
        payload = encode(notice)
        payload["pace"] = chat_pace(notice.platform, notice.chat_id)
        self.repo.outbox.add(s, notice_lane(notice), notice.kind, payload)

    async def say(self, notice: ChatNotice) -> None:
        """``notice`` in a transaction of its own."""
        async with self.tx() as s:
            self.notice(s, notice)

    # --- what every part needs -----------------------------------------------------------

    def page_token(self, page: Page) -> str:
        if self.tokens is None:
            raise DeliveryError(
                "SECRET_KEY is not set: page tokens cannot be read", retryable=False
            )
        try:
            return self.tokens.open(page.token_encrypted)
        except ValueError as e:
            raise DeliveryError(str(e), retryable=False) from None

    async def page_here(self, s: AsyncSession, task: Task) -> bool:
        """Is the task's Page still connected to the chat the task is shown in? A Page that
        moved or was disconnected is no longer answered from here."""
        page = await self.repo.pages.get(s, task.page_id)
        return (
            page is not None
            and page.active
            and (page.chat_platform, page.chat_id) == (task.chat_platform, task.chat_id)
        )

    async def chat_pages(self, s: AsyncSession, platform: str, chat_id: str) -> set[str]:
        """The Pages connected to a chat: all its staff may name."""
        return {p.id for p in await self.repo.pages.for_chat(s, platform, chat_id)}
