"""Moderation of a relayed comment on Facebook: hide, unhide, like as the Page, delete.
The new state is recorded on the message and shown on its chat copy (a ``Refresh``)."""

from __future__ import annotations

import logging

from bot import routing
from bot.core.context import Core
from bot.errors import DeliveryError
from bot.fb.graph import GraphError
from bot.jobs.kinds import Moderate, Refresh
from bot.jobs.runner import JobRunner
from bot.storage.models import Message, OutboxJob, Task

log = logging.getLogger(__name__)


def is_instagram(task: Task, msg: Message) -> bool:
    """An Instagram comment (its media is the task's "post"): Graph names fields and edges
    of Instagram comments differently."""
    return routing.is_instagram_media(msg.fb_post_id)


class ModerationJobs:
    def __init__(self, core: Core) -> None:
        self.core = core

    def register(self, runner: JobRunner) -> None:
        runner.register(Moderate, self.moderate)

    async def moderate(self, job: Moderate, row: OutboxJob) -> None:
        repo = self.core.repo
        async with self.core.db.read() as s:
            msg = await repo.messages.get(s, job.message_id)
            task = await repo.tasks.get(s, msg.task_id) if msg is not None else None
            page = await repo.pages.get(s, task.page_id) if task is not None else None
        if msg is None or task is None or page is None or msg.fb_id is None:
            raise DeliveryError("the comment is gone", retryable=False)
        graph = self.core.graph
        if graph is None:
            raise DeliveryError("Facebook is not configured", retryable=False)
        token = self.core.page_token(page)
        try:
            if job.action in (routing.MOD_HIDE, routing.MOD_UNHIDE):
                await graph.hide_comment(
                    msg.fb_id,
                    job.action == routing.MOD_HIDE,
                    token,
                    instagram=is_instagram(task, msg),
                )
            elif job.action == routing.MOD_LIKE:
                await graph.like_comment(msg.fb_id, token)
            elif job.action == routing.MOD_DELETE:
                await graph.delete_comment(msg.fb_id, token)
            else:
                raise DeliveryError(f"unknown moderation {job.action!r}", retryable=False)
        except GraphError as e:
            # an earlier try that reached Facebook: the comment is gone, as asked
            gone = e.code == 100 and e.subcode == 33
            if not (gone and job.action == routing.MOD_DELETE and row.attempts > 0):
                raise
        await self.record(task, msg.id, job.action, job.by)

    async def record(self, task: Task, message_id: int, action: str, by: str) -> None:
        async with self.core.tx() as s:
            row = await self.core.repo.messages.get(s, message_id)
            if row is None:
                return
            status, liked = routing.moderation_result(action, row.fb_status)
            row.fb_status = status
            if liked is not None:
                row.liked = liked
            row.moderation = action
            row.moderated_by = by
            self.core.add_job(s, task, Refresh(task.id, row.id))
