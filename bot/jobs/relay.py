"""Relays: a customer's message shown in its task's thread, a burst of them as one digest,
and a relayed message updated when it changes on Facebook."""

from __future__ import annotations

from dataclasses import replace

from bot.core.context import Core
from bot.domain import Direction, MessageState
from bot.jobs.chat import ChatJobs
from bot.jobs.kinds import JobKind, Refresh, Relay
from bot.jobs.runner import JobRunner
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

    async def relay(self, job: Relay, row: OutboxJob) -> None:
        found = await self.chat.opened(job.task_id)
        if found is None:
            return
        task, platform, ref = found
        repo = self.core.repo
        async with self.core.db.read() as s:
            msg = await repo.messages.get(s, job.message_id)
        if msg is None or msg.chat_message_id is not None:
            return
        waiting = await self._waiting(row)
        if len(waiting) + 1 >= COALESCE_AT:
            await self._digest(platform, task, ref, msg, waiting)
            return
        async with self.core.db.read() as s:
            post = chat_post(msg)
            if msg.direction == Direction.CUSTOMER and msg.author_fb_id:
                contact = await repo.contacts.by_fb_id(s, msg.author_fb_id)
                if contact is not None and contact.picture_url:
                    post = replace(post, picture_url=contact.picture_url)
            reply_to = None
            if post.is_reply and msg.fb_parent_id:
                parent = await repo.messages.by_fb_id(s, msg.fb_parent_id)
                reply_to = parent.chat_message_id if parent is not None else None
        if post.media and isinstance(platform, MediaPosts):
            shown = await platform.post_media(task.chat_id, ref.thread_id, post, reply_to=reply_to)
        else:
            post = post.with_links()
            shown = await platform.post(task.chat_id, ref.thread_id, post, reply_to=reply_to)
        await self._shown([msg.id], shown, done_jobs=[])

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

    async def _waiting(self, row: OutboxJob) -> list[tuple[int, Message]]:
        """The relays queued right behind this one in its lane, not yet shown."""
        repo = self.core.repo
        out: list[tuple[int, Message]] = []
        async with self.core.db.read() as s:
            for follower in await repo.outbox.following(s, row.lane, row.id, COALESCE_MAX - 1):
                if follower.kind != JobKind.RELAY:
                    break  # keep the order: an edit or a notice waits its turn
                mid = follower.payload.get("message_id")
                m = await repo.messages.get(s, mid) if isinstance(mid, int) else None
                if m is None or m.chat_message_id is not None:
                    continue
                out.append((follower.id, m))
        return out

    async def _digest(
        self,
        platform: ChatPlatform,
        task: Task,
        ref: ThreadRef,
        first: Message,
        waiting: list[tuple[int, Message]],
    ) -> None:
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
        await self._shown(
            [first.id, *(m.id for _, m in taken)], shown, done_jobs=[j for j, _ in taken]
        )

    async def _shown(self, message_ids: list[int], chat_id: str, done_jobs: list[int]) -> None:
        async with self.core.tx() as s:
            for mid in message_ids:
                row = await self.core.repo.messages.get(s, mid)
                if row is not None:
                    row.chat_message_id = chat_id
                    row.state = MessageState.RELAYED
            if done_jobs:
                await self.core.repo.outbox.complete(s, done_jobs)
        self.core.metrics.relayed.inc(len(message_ids))
