"""The staff desk: what staff do in a task's thread. Answers (typed, chosen in a dialog or
quick replies), internal notes, close and reopen, merging tasks, edits of answers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from bot.core.context import NOT_HERE, Core
from bot.domain import Channel, Direction, MessageState, PageInfo, PostInfo, TaskStatus
from bot.jobs.kinds import (
    ChatNotice,
    FbAnswer,
    FbPrivateReply,
    Moderate,
    NoticeInTask,
    ShowAnswer,
    ThreadState,
)
from bot.ports import FileFetch
from bot.rules.content import template_values
from bot.storage.models import Message, PrivateReply, Task, utcnow
from bot.storage.repositories import message_view, task_view
from bot.templates import render

log = logging.getLogger(__name__)

# a moderation button's value: ``m:{message id}:{action}`` (Telegram allows 64 bytes)
CONFIRM_DELETE = "delete_yes"
CANCEL_DELETE = "delete_no"


def moderation_choice(message_id: int, action: str) -> str:
    return f"m:{message_id}:{action}"


def parse_moderation_choice(value: str) -> tuple[int, str] | None:
    kind, _, rest = value.partition(":")
    mid, _, action = rest.partition(":")
    known = (*routing.MODERATION_ACTIONS, CONFIRM_DELETE, CANCEL_DELETE)
    if kind != "m" or not mid.isdigit() or action not in known:
        return None
    return int(mid), action


EDITS_NOT_SENT = (
    "Edits are not sent to Facebook: the customer still sees the first text. "
    "Send a new message to correct it."
)
DELETE_NOT_SENT = "Deleted in {chat} only: the answer stays on Facebook."


@dataclass(frozen=True)
class StaffMessage:
    """A message a staff member wrote in a task's thread, as the edge saw it."""

    platform: str
    chat_id: str
    thread_id: str
    user_id: str
    text: str
    chat_message_id: str
    reply_to_chat_message_id: str | None = None
    command_prefixes: str = "/"
    # pictures and files with it: (kind "image" | "video" | "audio" | "file", file id in
    # the chat platform)
    media: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class InTask:
    """What became of a staff message in a task: for commands, the caller runs them."""

    task_id: int
    decision: routing.StaffDecision


class StaffDesk:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def staff_message(self, m: StaffMessage) -> InTask | None:
        """None when the thread is not a task's, or the message was handled already."""
        repo = self.core.repo
        try:
            async with self.core.tx() as s:
                task = await repo.tasks.by_thread(s, m.platform, m.chat_id, m.thread_id)
                if task is None:
                    return None
                if await repo.messages.by_chat_id(s, task.id, m.chat_message_id) is not None:
                    return None  # this update was already handled
                explicit = (
                    await repo.messages.by_chat_id(s, task.id, m.reply_to_chat_message_id)
                    if m.reply_to_chat_message_id
                    else None
                )
                latest = await repo.messages.latest_customer(s, task.id)
                decision = routing.route_staff_message(
                    m.text,
                    explicit_target=message_view(explicit) if explicit else None,
                    latest_customer=message_view(latest) if latest else None,
                    command_prefixes=m.command_prefixes,
                    page_here=await self.core.page_here(s, task),
                    media=m.media,
                    media_sendable=isinstance(self.core.platforms.get(m.platform), FileFetch),
                )
                match decision:
                    case routing.Internal(note):
                        s.add(
                            Message(
                                task_id=task.id,
                                direction=Direction.NOTE,
                                staff_user_id=m.user_id,
                                text=note,
                                chat_message_id=m.chat_message_id,
                                state=MessageState.INTERNAL,
                            )
                        )
                    case routing.Answer(target, answer, media):
                        await self._answer(
                            s,
                            task,
                            target,
                            answer,
                            m.user_id,
                            m.chat_message_id,
                            shown_as=None,
                            media=media,
                        )
                    case routing.Refuse(reason):
                        self.core.notice(
                            s,
                            ChatNotice(
                                m.platform,
                                m.chat_id,
                                f"Not sent to Facebook: {reason}.",
                                thread_id=m.thread_id,
                                reply_to=m.chat_message_id,
                            ),
                        )
                return InTask(task.id, decision)
        except IntegrityError:
            # the same chat message, stored a moment ago by another replica
            log.info(
                "staff message handled by another worker",
                extra={"chat_message_id": m.chat_message_id},
            )
            return None

    async def _answer(
        self,
        s: AsyncSession,
        task: Task,
        target: routing.MessageView,
        text: str,
        user_id: str,
        chat_message_id: str | None,
        *,
        shown_as: str | None,
        human: bool = True,
        media: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Store an answer and queue it to Facebook; ``shown_as``: also show it in the
        thread (it was written elsewhere), signed with that name. ``human``: a person
        wrote it (Messenger's HUMAN_AGENT tag is for those alone)."""
        msg = Message(
            task_id=task.id,
            direction=Direction.STAFF,
            staff_user_id=user_id,
            text=text,
            answers_message_id=target.id,
            chat_message_id=chat_message_id,
            state=MessageState.PENDING,
            media=[{"type": kind, "file_id": file_id} for kind, file_id in media] or None,
        )
        s.add(msg)
        await s.flush()
        if shown_as is not None:
            self.core.add_job(s, task, ShowAnswer(task.id, msg.id, by=shown_as))
        self.core.add_job(s, task, FbAnswer(task.id, msg.id, human=human))

    async def private_reply(
        self,
        task_id: int,
        text: str,
        *,
        user_id: str,
        chat_message_id: str | None,
        reply_to_chat_message_id: str | None = None,
    ) -> str | None:
        """``/dm <text>``: answer the commenter of the comment replied to (else the latest
        one) privately in Messenger. Returns a reason when it cannot."""
        text = text.strip()
        if not text:
            return "Usage: /dm <text> — sent privately in Messenger to the commenter."
        repo = self.core.repo
        try:
            async with self.core.tx() as s:
                task = await repo.tasks.get(s, task_id)
                if task is None:
                    return "This task is gone."
                if not await self.core.page_here(s, task):
                    return f"Not sent: {NOT_HERE}."
                comment = (
                    await repo.messages.by_chat_id(s, task.id, reply_to_chat_message_id)
                    if reply_to_chat_message_id
                    else None
                )
                if comment is None or comment.direction != Direction.CUSTOMER:
                    comment = await repo.messenger.latest_customer_on_channel(
                        s, task.id, Channel.COMMENTS
                    )
                earlier = (
                    await repo.messenger.private_reply(s, comment.fb_id)
                    if comment is not None and comment.fb_id
                    else None
                )
                earlier_msg = (
                    await repo.messages.get(s, earlier.message_id) if earlier is not None else None
                )
                refusal = routing.private_reply_refusal(
                    message_view(comment) if comment else None,
                    datetime.now(UTC),
                    already_sent=earlier_msg is not None
                    and earlier_msg.state != MessageState.FAILED,
                )
                if refusal is not None:
                    return f"Not sent: {refusal}."
                assert comment is not None and comment.fb_id is not None
                msg = Message(
                    task_id=task.id,
                    direction=Direction.STAFF,
                    staff_user_id=user_id,
                    text=text,
                    answers_message_id=comment.id,
                    chat_message_id=chat_message_id,
                    state=MessageState.PENDING,
                )
                s.add(msg)
                if earlier is not None:
                    await s.delete(earlier)  # its send failed: this one takes its place
                await s.flush()
                s.add(PrivateReply(comment_fb_id=comment.fb_id, task_id=task.id, message_id=msg.id))
                self.core.add_job(s, task, FbPrivateReply(task.id, msg.id))
        except IntegrityError:
            return "Not sent: this comment was already answered privately."
        return None

    async def answer_message(self, message_id: int, text: str, user_id: str) -> None:
        """Answer one customer message chosen in the chat's UI (Slack's Reply button). The
        answer is also shown in the thread, where its delivery mark goes."""
        async with self.core.tx() as s:
            target = await self.core.repo.messages.get(s, message_id)
            if target is None or target.direction != Direction.CUSTOMER or not text.strip():
                return
            task = await self.core.repo.tasks.get(s, target.task_id)
            assert task is not None
            if not await self.core.page_here(s, task):
                self.core.add_job(s, task, NoticeInTask(task.id, f"Not sent: {NOT_HERE}"))
                return
            await self._answer(
                s, task, message_view(target), text.strip(), user_id, None, shown_as=f"<@{user_id}>"
            )

    async def say_in_task(
        self,
        task_id: int,
        text: str,
        *,
        choices: tuple[tuple[str, str], ...] = (),
        reply_to: str | None = None,
    ) -> None:
        async with self.core.tx() as s:
            task = await self.core.repo.tasks.get(s, task_id)
            if task is not None:
                self.core.add_job(s, task, NoticeInTask(task.id, text, reply_to, choices))

    async def close_task(self, task_id: int) -> str:
        async with self.core.tx() as s:
            task = await self.core.repo.tasks.get(s, task_id)
            assert task is not None
            refusal = routing.close_refusal(task_view(task))
            if refusal is not None:
                return refusal
            task.status = TaskStatus.CLOSED
            task.closed_at = utcnow()
            self.core.add_job(s, task, ThreadState(task.id))
        return "Task closed. The next comment on this post opens a new task."

    async def reopen_task(self, task_id: int) -> str:
        repo = self.core.repo
        try:
            async with self.core.tx() as s:
                task = await repo.tasks.get(s, task_id)
                assert task is not None
                newer = (
                    await repo.tasks.open_for_post(s, task.page_id, task.post_id)
                    if task.post_id is not None and task.status != TaskStatus.OPEN
                    else None
                )
                refusal = routing.reopen_refusal(
                    task_view(task),
                    page_here=await self.core.page_here(s, task),
                    newer_open=newer.id if newer is not None else None,
                )
                if refusal is not None:
                    return refusal
                task.status = TaskStatus.OPEN
                task.closed_at = None
                self.core.add_job(s, task, ThreadState(task.id))
        except IntegrityError:
            return "A newer task for this post is open: close it first."
        return "Task reopened."

    async def quick_names(self, task_id: int) -> list[str]:
        async with self.core.db.read() as s:
            task = await self.core.repo.tasks.get(s, task_id)
            if task is None:
                return []
            return [q.name for q in await self.core.repo.quick.list(s, task.page_id)]

    async def send_quick(
        self,
        task_id: int,
        name: str,
        *,
        user_id: str,
        by: str,
        chat_message_id: str | None = None,
        chat: tuple[str, str] | None = None,
    ) -> str | None:
        """Send a quick reply like a staff answer, to the latest customer message, with the
        template variables filled in. ``chat``: where the person clicked, when the task
        number came from a button. Returns a reason when it cannot."""
        repo = self.core.repo
        async with self.core.tx() as s:
            task = await repo.tasks.get(s, task_id)
            if task is None or (chat is not None and chat != (task.chat_platform, task.chat_id)):
                return "This task is gone."
            if not await self.core.page_here(s, task):
                return NOT_HERE
            quick = await repo.quick.get(s, task.page_id, name)
            if quick is None:
                names = ", ".join(q.name for q in await repo.quick.list(s, task.page_id))
                return f"No quick reply {name!r}. Known: {names or 'none yet (/quick add)'}."
            target = await repo.messages.latest_customer(s, task.id)
            if target is None:
                return "There is no customer message in this task to answer."
            page = await repo.pages.get(s, task.page_id)
            assert page is not None
            row = await repo.posts.get(s, task.post_id) if task.post_id else None
            post = (
                PostInfo(row.id, row.message, row.permalink_url, row.created_time) if row else None
            )
            values = template_values(
                page=PageInfo(page.id, page.name),
                post=post,
                contact_name=target.author_name,
                first_text=target.text,
                data=task.additional_data,
            )
            text = render(quick.text, values).strip()
            await self._answer(
                s,
                task,
                message_view(target),
                text,
                user_id,
                chat_message_id,
                shown_as=by if chat_message_id is None else None,
                human=False,
            )
        return None

    async def merge_tasks(self, task_id: int, other_ref: str) -> str:
        """The other task joins this one: its later messages come here; answers still go to
        the comment or conversation they answer."""
        try:
            other_id = int(other_ref.lstrip("#"))
        except ValueError:
            return "Usage: /merge <task number> (the # in a task's root message)"
        repo = self.core.repo
        async with self.core.tx() as s:
            task = await repo.tasks.get(s, task_id)
            assert task is not None
            other = await repo.tasks.get(s, other_id)
            here = await self.core.chat_pages(s, task.chat_platform, task.chat_id)
            refusal = routing.merge_refusal(
                task_view(task),
                task_view(other) if other else None,
                other_id,
                other_in_chat=other is not None and other.page_id in here,
                other_survivor=(await repo.tasks.surviving(s, other)).id if other else None,
                task_survivor=(await repo.tasks.surviving(s, task)).id,
            )
            if refusal is not None:
                return refusal
            assert other is not None
            other.merged_into_id = task.id
            other.status = TaskStatus.MERGED
            other.closed_at = utcnow()
            note = f"Merged into task #{task.id}: later messages of this task go there."
            self.core.add_job(s, other, NoticeInTask(other.id, note))
            self.core.add_job(s, other, ThreadState(other.id))
            return f"Task #{other.id} ({other.title}) merged into this one."

    async def staff_changed(
        self, platform: str, chat_id: str, thread_id: str, chat_message_id: str, *, deleted: bool
    ) -> None:
        """Facebook keeps what was sent: when a delivered answer is edited or deleted in the
        chat, the thread says so."""
        async with self.core.tx() as s:
            task = await self.core.repo.tasks.by_thread(s, platform, chat_id, thread_id)
            if task is None:
                return
            msg = await self.core.repo.messages.by_chat_id(s, task.id, chat_message_id)
            if msg is None or msg.direction != Direction.STAFF:
                return
            if msg.state != MessageState.DELIVERED:
                return
            text = DELETE_NOT_SENT.format(chat=platform.title()) if deleted else EDITS_NOT_SENT
            reply_to = None if deleted else chat_message_id
            self.core.notice(
                s, ChatNotice(platform, chat_id, text, thread_id=thread_id, reply_to=reply_to)
            )

    async def moderate(
        self,
        action: str,
        *,
        by: str,
        chat: tuple[str, str],
        may_delete: bool = False,
        confirmed: bool = False,
        message_id: int | None = None,
        task_id: int | None = None,
        reply_to_chat_message_id: str | None = None,
    ) -> str | None:
        """Hide, unhide, like or delete a relayed comment on Facebook: named by its id (a
        button) or by the chat message a command replied to in a task. Only a message of a
        task of ``chat`` (platform, chat id) is acted on. A delete not yet ``confirmed``
        asks first, under the comment. Returns why it cannot be done, or None."""
        repo = self.core.repo
        async with self.core.tx() as s:
            msg = None
            if message_id is not None:
                msg = await repo.messages.get(s, message_id)
            elif task_id is not None and reply_to_chat_message_id:
                shown = await repo.messages.shown_as(s, task_id, reply_to_chat_message_id)
                if len(shown) > 1:
                    # a digest of a burst: which of its comments is meant is not known
                    return "Not done: that message shows several comments; reply to one alone."
                msg = shown[0] if shown else None
            task = await repo.tasks.get(s, msg.task_id) if msg is not None else None
            if msg is None or task is None or (task.chat_platform, task.chat_id) != chat:
                if message_id is not None:
                    return "This comment is not in a task of this chat."
                msg = task = None
            refusal = routing.moderation_refusal(
                routing.CommentState(message_view(msg), msg.fb_status, bool(msg.liked))
                if msg is not None
                else None,
                action,
                may_delete=may_delete,
                page_here=task is not None and await self.core.page_here(s, task),
            )
            if refusal is not None:
                return f"Not done: {refusal}."
            assert msg is not None and task is not None
            if action == routing.MOD_DELETE and not confirmed:
                whose = f"{msg.author_name}'s comment" if msg.author_name else "this comment"
                self.core.add_job(
                    s,
                    task,
                    NoticeInTask(
                        task.id,
                        f"Delete {whose} on Facebook? This cannot be undone.",
                        reply_to=msg.chat_message_id,
                        choices=(
                            ("Yes, delete", moderation_choice(msg.id, CONFIRM_DELETE)),
                            ("Cancel", moderation_choice(msg.id, CANCEL_DELETE)),
                        ),
                    ),
                )
                return None
            self.core.add_job(s, task, Moderate(task.id, msg.id, action, by=by))
        return None

    async def task_thread(self, task_id: int, platform: str, chat_id: str) -> str | None:
        """The thread of a task named by a button clicked in this chat; None when that task
        is not this chat's (a button never reaches another chat's task)."""
        async with self.core.db.read() as s:
            task = await self.core.repo.tasks.get(s, task_id)
        if task is None or (task.chat_platform, task.chat_id) != (platform, chat_id):
            return None
        return task.thread_id
