"""Chat jobs: a task's thread (opened, re-opened when a person deleted it, its status),
and the bot's own messages in it or in the chat."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import update

from bot.core.context import Core
from bot.domain import TaskStatus
from bot.errors import DeliveryError, ThreadGone
from bot.jobs.kinds import (
    ChatNotice,
    MarkDelivered,
    NoticeInTask,
    OpenThread,
    ShowAnswer,
    TaskJob,
    ThreadState,
)
from bot.jobs.runner import Finish, JobRunner
from bot.jobs.views import notice, root_of
from bot.ports import (
    AssigneeNotifier,
    ChatPlatform,
    ChatPost,
    DeliveryMarks,
    ThreadContainers,
    ThreadRef,
)
from bot.storage.models import OutboxJob, Task

log = logging.getLogger(__name__)

J = TypeVar("J", bound=TaskJob)
TaskHandler = Callable[[J, OutboxJob], Awaitable[Finish | None]]

THREAD_REPLACED = (
    "The previous thread of this task was deleted in the chat: the task continues here. "
    "Messages shown there before are not repeated."
)


class ThreadUnfinished(ThreadGone):
    """The task's thread was never finished (its opening failed for good)."""


class ChatJobs:
    def __init__(self, core: Core) -> None:
        self.core = core

    def register(self, runner: JobRunner) -> None:
        runner.register(OpenThread, self.in_thread(self.open_thread))
        runner.register(ThreadState, self.in_thread(self.thread_state))
        runner.register(NoticeInTask, self.in_thread(self.notice_in_task))
        runner.register(ShowAnswer, self.in_thread(self.show_answer))
        runner.register(MarkDelivered, self.in_thread(self.mark_delivered))
        runner.register(ChatNotice, self.chat_notice)

    # --- finding the task and its thread ------------------------------------------------

    async def task(self, task_id: int) -> tuple[Task, ChatPlatform] | None:
        """The task and its chat platform; None when the task is gone."""
        async with self.core.db.read() as s:
            task = await self.core.repo.tasks.get(s, task_id)
        if task is None:
            return None
        platform = self.core.platforms.get(task.chat_platform)
        if platform is None:
            raise DeliveryError(f"{task.chat_platform} is not configured", retryable=False)
        return task, platform

    async def opened(self, task_id: int) -> tuple[Task, ChatPlatform, ThreadRef] | None:
        """The task with its open thread. A thread that was never finished (its opening
        failed for good) counts as gone: the job then opens it."""
        async with self.core.db.read() as s:
            task = await self.core.repo.tasks.get(s, task_id)
        return None if task is None else self.thread_of(task)

    def thread_of(self, task: Task) -> tuple[Task, ChatPlatform, ThreadRef]:
        """The task with its platform and open thread (see ``opened``)."""
        platform = self.core.platforms.get(task.chat_platform)
        if platform is None:
            raise DeliveryError(f"{task.chat_platform} is not configured", retryable=False)
        if task.thread_id is None or task.root_message_id is None:
            raise ThreadUnfinished("the task's thread is not open")
        return task, platform, ThreadRef(task.thread_id, task.root_message_id)

    def in_thread(self, handler: TaskHandler[J]) -> TaskHandler[J]:
        """Run a task's chat job; when its thread is gone (a person deleted it), give the
        task a new thread and run the job there: nothing waiting for it is lost."""

        async def run(job: J, row: OutboxJob) -> Finish | None:
            try:
                return await handler(job, row)
            except ThreadGone as gone:
                await self.rethread(job.task_id, gone)
                return await handler(job, row)

        return run

    async def _record(self, task_id: int, thread_id: str | None, root: str | None) -> None:
        async with self.core.tx() as s:
            await s.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(thread_id=thread_id, root_message_id=root)
            )

    async def _open(self, task: Task, platform: ChatPlatform) -> ThreadRef:
        # Two calls, each recorded as soon as it succeeded: a retry after a failed root
        # message must not create a second topic.
        thread_id = task.thread_id
        if thread_id is None and isinstance(platform, ThreadContainers):
            thread_id = await platform.create_thread(task.chat_id, task.title)
            await self._record(task.id, thread_id, None)
        ref = await platform.post_root(
            task.chat_id, thread_id, await root_of(self.core.db, self.core.repo, task)
        )
        await self._record(task.id, ref.thread_id, ref.root_message_id)
        task.thread_id, task.root_message_id = ref.thread_id, ref.root_message_id
        return ref

    async def rethread(self, task_id: int, gone: ThreadGone) -> None:
        found = await self.task(task_id)
        if found is None:
            raise gone
        task, platform = found
        replaced = task.root_message_id is not None
        if not isinstance(gone, ThreadUnfinished):
            # the chat said this thread is gone: a new one, from its container up
            log.warning(
                "task thread gone, opening a new one",
                extra={"task_id": task.id, "reason": gone.reason},
            )
            await self._record(task.id, None, None)
            task.thread_id = task.root_message_id = None
        ref = await self._open(task, platform)
        if replaced:
            self.core.metrics.threads_recreated.labels(task.chat_platform).inc()
            await platform.post(task.chat_id, ref.thread_id, notice(THREAD_REPLACED))
        if task.status != TaskStatus.OPEN:
            await platform.set_thread_state(
                task.chat_id, ref, await root_of(self.core.db, self.core.repo, task)
            )

    # --- the handlers -------------------------------------------------------------------

    async def open_thread(self, job: OpenThread, row: OutboxJob) -> None:
        found = await self.task(job.task_id)
        if found is None:
            return
        task, platform = found
        if task.root_message_id is not None:
            return  # done before a restart
        ref = await self._open(task, platform)
        if isinstance(platform, AssigneeNotifier):
            for user in task.assignees:
                await platform.notify_assignee(task.chat_id, ref, user, task.title)

    async def thread_state(self, job: ThreadState, row: OutboxJob) -> None:
        found = await self.opened(job.task_id)
        if found is None:
            return
        task, platform, ref = found
        await platform.set_thread_state(
            task.chat_id, ref, await root_of(self.core.db, self.core.repo, task)
        )

    async def notice_in_task(self, job: NoticeInTask, row: OutboxJob) -> None:
        found = await self.opened(job.task_id)
        if found is None:
            return
        task, platform, ref = found
        await platform.post(
            task.chat_id, ref.thread_id, notice(job.text, job.choices), reply_to=job.reply_to
        )

    async def show_answer(self, job: ShowAnswer, row: OutboxJob) -> None:
        found = await self.opened(job.task_id)
        if found is None:
            return
        task, platform, ref = found
        async with self.core.db.read() as s:
            msg = await self.core.repo.messages.get(s, job.message_id)
            if msg is None or msg.chat_message_id is not None:
                return
            target = (
                await self.core.repo.messages.get(s, msg.answers_message_id)
                if msg.answers_message_id
                else None
            )
        to = target.author_name if target is not None else "the customer"
        shown = await platform.post(
            task.chat_id, ref.thread_id, notice(f"{job.by} to {to}: {msg.text}")
        )
        async with self.core.tx() as s:
            row_ = await self.core.repo.messages.get(s, msg.id)
            if row_ is not None:
                row_.chat_message_id = shown

    async def mark_delivered(self, job: MarkDelivered, row: OutboxJob) -> None:
        found = await self.opened(job.task_id)
        if found is None:
            return
        task, platform, ref = found
        async with self.core.db.read() as s:
            msg = await self.core.repo.messages.get(s, job.message_id)
        if msg is None or msg.chat_message_id is None:
            return
        if isinstance(platform, DeliveryMarks):
            await platform.mark_delivered(task.chat_id, ref.thread_id, msg.chat_message_id)
        else:
            await platform.post(
                task.chat_id,
                ref.thread_id,
                notice("✅ Delivered to Facebook"),
                reply_to=msg.chat_message_id,
            )

    async def chat_notice(self, job: ChatNotice, row: OutboxJob) -> None:
        platform = self.core.platforms.get(job.platform)
        if platform is None:
            raise DeliveryError(f"{job.platform} is not configured", retryable=False)
        post = ChatPost(kind="notice", author="", text=job.text, only_for=job.only_for)
        try:
            await platform.post(job.chat_id, job.thread_id or "", post, reply_to=job.reply_to)
        except ThreadGone:
            if not job.thread_id:
                raise
            # the thread it answered in is gone: say it in the chat itself
            await platform.post(job.chat_id, "", post)
