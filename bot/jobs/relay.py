"""Relays: a customer's message shown in its task's thread, a burst of them as one digest,
and a relayed message updated when it changes on Facebook."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.context import Core
from bot.jobs.chat import ChatJobs
from bot.jobs.kinds import JobKind, Refresh, Relay
from bot.jobs.runner import Finish, JobRunner
from bot.jobs.views import chat_post
from bot.ports import ChatPlatform, ChatPost, MediaPosts, PostKind, ThreadRef
from bot.storage.models import Message, OutboxJob, Task

# A burst: three or more comments waiting in one task's lane go out as one message.
COALESCE_AT = 3
COALESCE_MAX = 25
DIGEST_CHARS = 3000  # what one digest takes in before the platform splits it further


class RelayJobs:
    def __init__(self, core: Core, chat: ChatJobs) -> None:
        self.core = core
        self.chat = chat

    def register(self, runner: JobRunner) -> None:
        runner.register(Relay, self.chat.in_thread(self.relay))
        runner.register(Refresh, self.chat.in_thread(self.refresh))

    async def relay(self, job: Relay, row: OutboxJob) -> Finish | None:
        """One read (the task, the message with what shows it, the relays queued behind),
        the call, and one write with the job's end."""
        repo = self.core.repo
        async with self.core.db.read() as s:
            view = await repo.messages.relay_view(s, job.task_id, job.message_id)
            if view is None or view[1].chat_message_id is not None:
                return None  # the task or the message is gone, or it was shown
            waiting = await self._waiting(s, row)
        task, platform, ref = self.chat.thread_of(view[0])
        _, msg, picture_url, parent_chat_id = view
        if len(waiting) + 1 >= COALESCE_AT:
            return await self._digest(platform, task, ref, msg, waiting)
        post = chat_post(msg)
        if picture_url:
            post = replace(post, picture_url=picture_url)
        reply_to = parent_chat_id if post.is_reply else None
        if post.media and isinstance(platform, MediaPosts):
            shown = await platform.post_media(task.chat_id, ref.thread_id, post, reply_to=reply_to)
        else:
            post = post.with_links()
            shown = await platform.post(task.chat_id, ref.thread_id, post, reply_to=reply_to)
        return self._shown([msg.id], shown, done_jobs=[])

    async def refresh(self, job: Refresh, row: OutboxJob) -> None:
        found = await self.chat.opened(job.task_id)
        if found is None:
            return
        task, platform, ref = found
        async with self.core.db.read() as s:
            msg = await self.core.repo.messages.get(s, job.message_id)
        if msg is None or not msg.chat_message_id:
            return
        post = chat_post(msg)
        if not isinstance(platform, MediaPosts):
            post = post.with_links()
        await platform.edit(task.chat_id, ref.thread_id, msg.chat_message_id, post)

    async def _waiting(self, s: AsyncSession, row: OutboxJob) -> list[tuple[int, Message]]:
        """The relays queued right behind this one in its lane, not yet shown."""
        repo = self.core.repo
        queued: list[tuple[int, int]] = []
        for job_id, kind, payload in await repo.outbox.following(
            s, row.lane, row.id, COALESCE_MAX - 1
        ):
            if kind != JobKind.RELAY:
                break  # keep the order: an edit or a notice waits its turn
            mid = payload.get("message_id")
            if isinstance(mid, int):
                queued.append((job_id, mid))
        messages = await repo.messages.by_ids(s, [mid for _, mid in queued])
        return [
            (job_id, m)
            for job_id, mid in queued
            if (m := messages.get(mid)) is not None and m.chat_message_id is None
        ]

    async def _digest(
        self,
        platform: ChatPlatform,
        task: Task,
        ref: ThreadRef,
        first: Message,
        waiting: list[tuple[int, Message]],
    ) -> Finish:
        """A burst: the task's waiting comments as one message (name and text of each), so
        the thread catches up instead of lagging behind the platform's pace."""
        items = [chat_post(first).with_links()]
        taken: list[tuple[int, Message]] = []
        size = len(first.text) + len(first.author_name)
        for job_id, m in waiting:
            size += len(m.text) + len(m.author_name) + 8
            if size > DIGEST_CHARS:
                break
            items.append(chat_post(m).with_links())
            taken.append((job_id, m))
        shown = await platform.post(
            task.chat_id,
            ref.thread_id,
            ChatPost(kind=PostKind.DIGEST, author="", text="", items=tuple(items)),
        )
        return self._shown(
            [first.id, *(m.id for _, m in taken)], shown, done_jobs=[j for j, _ in taken]
        )

    def _shown(self, message_ids: list[int], chat_id: str, done_jobs: list[int]) -> Finish:
        """What the relay writes when its job ends: the messages shown, and the relays a
        digest took in done."""

        async def finish(s: AsyncSession) -> None:
            await self.core.repo.messages.mark_shown(s, message_ids, chat_id)
            await self.core.repo.outbox.complete(s, done_jobs)
            self.core.metrics.relayed.inc(len(message_ids))

        return finish
