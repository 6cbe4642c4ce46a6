"""When a job fails for good: staff see it where they work, and /metrics counts it.

A failed answer is marked on its message and explained in its thread; a dead page token
alerts the chat once. Any chat-side job is reported in the task's thread (else the chat
itself), with the reason; a report that cannot be shown either goes to the chat itself,
and a report of a report ends there (logged), so nothing loops.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.context import Core
from bot.domain import MessageState
from bot.errors import DeliveryError, failure_kind
from bot.fb.graph import GraphError
from bot.jobs.kinds import (
    ChatNotice,
    FacebookJob,
    FbAnswer,
    FbPrivateReply,
    Job,
    JobKind,
    Moderate,
    NoticeInTask,
    Refresh,
    Relay,
)
from bot.jobs.runner import JobRunner
from bot.storage.models import OutboxJob

log = logging.getLogger(__name__)

WHAT_FAILED = {
    JobKind.OPEN_THREAD: "The task's thread could not be opened",
    JobKind.THREAD_STATE: "The task's status could not be shown",
    JobKind.REFRESH: "A change to a relayed message could not be shown",
    JobKind.SHOW_ANSWER: "A staff answer could not be shown here",
    JobKind.MARK_DELIVERED: "A delivery mark could not be shown",
    JobKind.NOTICE_IN_TASK: "A message of the bot could not be shown here",
    JobKind.MODERATE: "A comment could not be moderated on Facebook",
}


class FailureReports:
    def __init__(self, core: Core) -> None:
        self.core = core

    def register(self, runner: JobRunner) -> None:
        runner.on_failed(self.failed)

    async def failed(self, s: AsyncSession, job: Job, row: OutboxJob, error: DeliveryError) -> None:
        if isinstance(job, Moderate):
            await self.moderation_failed(s, job, error)
        elif isinstance(job, FbAnswer | FbPrivateReply):
            await self.answer_failed(s, job, error)
        elif isinstance(job, ChatNotice):
            self.core.metrics.chat_failures.labels(job.platform, failure_kind(error.reason)).inc()
            self.notice_failed(s, job, error)
        else:
            await self.task_job_failed(s, job, error)

    async def answer_failed(self, s: AsyncSession, job: FacebookJob, error: DeliveryError) -> None:
        repo = self.core.repo
        msg = await repo.messages.get(s, job.message_id)
        if msg is None:
            return
        msg.state = MessageState.FAILED
        msg.error = error.reason
        task = await repo.tasks.get(s, msg.task_id)
        if task is None:
            return
        self.core.add_job(
            s,
            task,
            NoticeInTask(
                task.id,
                f"⚠️ Not delivered to Facebook: {error.reason}",
                reply_to=msg.chat_message_id,
            ),
        )
        page = await repo.pages.get(s, task.page_id)
        if error.token_invalid and page is not None and not page.token_alerted:
            page.token_alerted = True
            self.core.notice(
                s,
                ChatNotice(
                    page.chat_platform,
                    page.chat_id,
                    f"⚠️ Facebook no longer accepts the token of the Page {page.name}. "
                    f"An admin must run /connect {page.id} again.",
                ),
            )
        self.core.metrics.answers.labels("failed").inc()

    async def moderation_failed(self, s: AsyncSession, job: Moderate, error: DeliveryError) -> None:
        """Facebook's refusal, with its reason, under the comment; a comment that is gone
        (100/33) is shown as removed."""
        repo = self.core.repo
        msg = await repo.messages.get(s, job.message_id)
        task = await repo.tasks.get(s, job.task_id)
        if msg is None or task is None:
            return
        whose = f"{msg.author_name}'s comment" if msg.author_name else "the comment"
        what = f"Facebook refused to {job.action} {whose}"
        if isinstance(error, GraphError) and error.code == 100 and error.subcode == 33:
            msg.fb_status = "removed"
            self.core.add_job(s, task, Refresh(task.id, msg.id))
        self.core.add_job(
            s,
            task,
            NoticeInTask(
                task.id,
                f"⚠️ {what} (asked by {job.by}): {error.reason}",
                reply_to=msg.chat_message_id,
            ),
        )
        if error.token_invalid:
            await self.answer_token_alert(s, task.page_id)

    async def answer_token_alert(self, s: AsyncSession, page_id: str) -> None:
        page = await self.core.repo.pages.get(s, page_id)
        if page is not None and not page.token_alerted:
            page.token_alerted = True
            self.core.notice(
                s,
                ChatNotice(
                    page.chat_platform,
                    page.chat_id,
                    f"⚠️ Facebook no longer accepts the token of the Page {page.name}. "
                    f"An admin must run /connect {page.id} again.",
                ),
            )

    def notice_failed(self, s: AsyncSession, job: ChatNotice, error: DeliveryError) -> None:
        if job.report >= 2:
            log.error(
                "a report of a failure could not be shown either",
                extra={"chat_id": job.chat_id, "reason": error.reason},
            )
            return
        self.core.notice(
            s,
            ChatNotice(
                job.platform,
                job.chat_id,
                f"⚠️ A message of the bot could not be shown in the chat: {error.reason}",
                report=job.report + 1,
            ),
        )

    async def task_job_failed(self, s: AsyncSession, job: Job, error: DeliveryError) -> None:
        task_id = getattr(job, "task_id", None)
        task = await self.core.repo.tasks.get(s, task_id) if isinstance(task_id, int) else None
        if task is None:
            return
        self.core.metrics.chat_failures.labels(task.chat_platform, failure_kind(error.reason)).inc()
        what = WHAT_FAILED.get(job.kind, "A chat message could not be shown")
        if isinstance(job, Relay):
            msg = await self.core.repo.messages.get(s, job.message_id)
            if msg is not None:
                link = f" (on Facebook: https://www.facebook.com/{msg.fb_id})" if msg.fb_id else ""
                who = msg.author_name or "the customer"
                what = f"A message from {who} could not be shown here{link}"
        self.core.notice(
            s,
            ChatNotice(
                task.chat_platform,
                task.chat_id,
                f"⚠️ {what} (task #{task.id}): {error.reason}",
                thread_id=task.thread_id,
                report=1,
            ),
        )
