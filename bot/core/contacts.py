"""Contact cards and contact merges, seen from one chat: only its Pages' tasks."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from bot.core.context import NOT_HERE, Core
from bot.domain import Channel, Direction, MessageState, TaskStatus
from bot.jobs.kinds import FbAnswer, NoticeInTask, ShowAnswer, ThreadState
from bot.ports import ThreadLinks, ThreadRef
from bot.storage.models import Contact, Message, PrivateReply, Task
from bot.storage.repositories import Repositories, message_view, task_view

NO_CONTACT = "This task has no contact."
CHANNEL_NAMES: dict[str, str] = {
    Channel.MESSENGER: "Messenger",
    Channel.COMMENTS: "a reply to their latest comment",
}


async def join_private_reply(
    s: AsyncSession, repo: Repositories, person: Contact, origin: PrivateReply
) -> Contact | None:
    """A person answered a private reply (``/dm``) in Messenger: the contact of their
    page-scoped id is the commenter's. It is merged into the commenter's card, each keeping
    its id, so that both channels (the comment's author id, the Messenger id) find the one
    card. Returns the card's root; None where the commenter is not known (forgotten)."""
    comment = await repo.messages.by_fb_id(s, origin.comment_fb_id)
    author = comment.author_fb_id if comment is not None else None
    commenter = await repo.contacts.by_fb_id(s, author) if author else None
    if commenter is None:
        return None
    root = await repo.contacts.card_root(s, commenter)
    mine = await repo.contacts.card_root(s, person)
    if mine.id != root.id:
        mine.merged_into_id = root.id
    return root


def _id_line(contact: Contact, channels: set[str]) -> str:
    """How a card names one of its ids: a page-scoped Messenger id opens no profile."""
    if channels == {Channel.MESSENGER}:
        return f"Messenger id: {contact.fb_id}"
    return f"Facebook: https://www.facebook.com/{contact.fb_id}"


class ContactCards:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _visible(self, s: AsyncSession, root: Contact, task: Task) -> list[Task]:
        """The tasks of a contact card (the contact and those merged into it) that the
        chat of ``task`` may see: one chat never reaches another."""
        members = await self.core.repo.contacts.members(s, root)
        here = await self.core.chat_pages(s, task.chat_platform, task.chat_id)
        tasks = await self.core.repo.tasks.for_contacts(s, [c.id for c in members])
        return routing.visible_tasks(tasks, here, lambda t: t.page_id)

    async def contact_card(self, task_id: int) -> str:
        repo = self.core.repo
        async with self.core.db.read() as s:
            task = await repo.tasks.get(s, task_id)
            if task is None or task.contact_id is None:
                return NO_CONTACT
            contact = await repo.contacts.get(s, task.contact_id)
            assert contact is not None
            root = await repo.contacts.card_root(s, contact)
            members = await repo.contacts.members(s, root)
            tasks = await self._visible(s, root, task)
        channels: dict[int | None, set[str]] = {}
        for t in tasks:
            channels.setdefault(t.contact_id, set()).add(t.channel)
        lines = [f"👤 {root.name} (contact #{root.id})"]
        for c in members:
            if c.id != root.id and c.id not in channels:
                continue
            lines.append(
                _id_line(c, channels.get(c.id, set()))
                + (f" (contact #{c.id}, {c.name})" if c.id != root.id else "")
            )
        if root.picture_url:
            lines.append(f"Picture: {root.picture_url}")
        for key, value in sorted((root.fields or {}).items()):
            lines.append(f"{key}: {value}")
        lines.append("Tasks:")
        for t in tasks:
            where = (
                "Messenger" if t.channel == Channel.MESSENGER else f"comments on post {t.post_id}"
            )
            link = None
            platform = self.core.platforms.get(t.chat_platform)
            if isinstance(platform, ThreadLinks) and t.thread_id and t.root_message_id:
                link = platform.thread_link(t.chat_id, ThreadRef(t.thread_id, t.root_message_id))
            status = TaskStatus.MERGED if t.merged_into_id else t.status
            lines.append(f"• #{t.id} {status}: {t.title} ({where})" + (f" {link}" if link else ""))
        return "\n".join(lines)

    async def merge_contacts(self, task_id: int, other_ref: str) -> str:
        try:
            other_id = int(other_ref.lstrip("#"))
        except ValueError:
            return "Usage: /contact merge <contact number> (the # on a contact card)"
        repo = self.core.repo
        async with self.core.tx() as s:
            task = await repo.tasks.get(s, task_id)
            if task is None or task.contact_id is None:
                return NO_CONTACT
            mine = await repo.contacts.get(s, task.contact_id)
            other = await repo.contacts.get(s, other_id)
            assert mine is not None
            root = await repo.contacts.card_root(s, mine)
            other_root = await repo.contacts.card_root(s, other) if other else None
            if other_root is None or not await self._visible(s, other_root, task):
                # the same answer whether it exists elsewhere or not at all
                return f"There is no contact #{other_id} among this chat's Pages."
            if root.id == other_root.id:
                return f"Contact #{other_id} is already on this card."
            other_root.merged_into_id = root.id
            return (
                f"Merged contact #{other_root.id} ({other_root.name}) into #{root.id} "
                f"({root.name}). Each task keeps its own channel; /contact lists them all."
            )

    async def write_channels(self, task_id: int) -> list[str]:
        """The channels the card's contact has in this chat (Messenger, comments): where
        staff can write to them first."""
        async with self.core.db.read() as s:
            task = await self.core.repo.tasks.get(s, task_id)
            if task is None or task.contact_id is None:
                return []
            contact = await self.core.repo.contacts.get(s, task.contact_id)
            assert contact is not None
            root = await self.core.repo.contacts.card_root(s, contact)
            tasks = await self._visible(s, root, task)
        have = {t.channel for t in tasks}
        return [c for c in (Channel.MESSENGER, Channel.COMMENTS) if c in have]

    async def write_first(
        self,
        task_id: int,
        channel: str,
        text: str | None,
        *,
        user_id: str,
        by: str,
        chat: tuple[str, str] | None = None,
    ) -> str:
        """Write first to the card's contact on ``channel``: with a text (``/write``) it is
        sent like an answer, shown in that channel's task; without (the card's button)
        that task is opened for staff to write in. The task is the channel's open one, else
        the latest, reopened. ``chat``: where a button was clicked (a button never reaches
        another chat's task)."""
        if channel not in CHANNEL_NAMES:
            return "Usage: /write messenger <text>, or /write comment <text>"
        repo = self.core.repo
        async with self.core.tx() as s:
            task = await repo.tasks.get(s, task_id)
            if task is None or (chat is not None and chat != (task.chat_platform, task.chat_id)):
                return "This task is gone."
            if task.contact_id is None:
                return NO_CONTACT
            contact = await repo.contacts.get(s, task.contact_id)
            assert contact is not None
            root = await repo.contacts.card_root(s, contact)
            members = await repo.contacts.members(s, root)
            tasks = await self._visible(s, root, task)
            target = await repo.messenger.latest_from(
                s, [t.id for t in tasks], [c.fb_id for c in members], channel
            )
            target_task = await repo.tasks.get(s, target.task_id) if target else None
            if target_task is not None:
                target_task = await repo.tasks.surviving(s, target_task)
            on_post = None
            if target is not None and target.fb_post_id and target_task is not None:
                on_post = await repo.tasks.open_for_post(s, target_task.page_id, target.fb_post_id)
            last = (
                await repo.messenger.last_from_person(s, target.author_fb_id)
                if target is not None and target.author_fb_id and channel == Channel.MESSENGER
                else None
            )
            decision = routing.write_first(
                channel,
                message_view(target) if target else None,
                task_view(target_task) if target_task else None,
                open_on_post=task_view(on_post) if on_post else None,
                last_in_messenger=last,
                now=datetime.now(UTC),
            )
            if isinstance(decision, routing.Refuse):
                return f"Not sent: {decision.reason}."
            there = await repo.tasks.get(s, decision.task_id)
            assert there is not None and target is not None
            if not await self.core.page_here(s, there):
                return f"Not sent: {NOT_HERE}."
            if decision.reopen:
                there.status = TaskStatus.OPEN
                there.closed_at = None
                self.core.add_job(s, there, ThreadState(there.id))
            where = CHANNEL_NAMES[channel]
            if text is None or not text.strip():
                hint = (
                    "what you write here goes to them in Messenger"
                    if channel == Channel.MESSENGER
                    else "reply to their comment here to answer it"
                )
                note = f"✍️ {by} is writing first to {root.name}: {hint}."
                reply_to = target.chat_message_id if channel == Channel.COMMENTS else None
                self.core.add_job(s, there, NoticeInTask(there.id, note, reply_to))
                return f"Task #{there.id} is open for writing to {root.name} ({where})."
            msg = Message(
                task_id=there.id,
                direction=Direction.STAFF,
                staff_user_id=user_id,
                text=text.strip(),
                answers_message_id=target.id,
                state=MessageState.PENDING,
            )
            s.add(msg)
            await s.flush()
            self.core.add_job(s, there, ShowAnswer(there.id, msg.id, by=by))
            self.core.add_job(s, there, FbAnswer(there.id, msg.id, human=True))
            return f"Sending to {root.name} ({where}) in task #{there.id}."
