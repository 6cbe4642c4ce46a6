"""Contact cards and contact merges, seen from one chat: only its Pages' tasks."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from bot.core.context import Core
from bot.domain import Channel, TaskStatus
from bot.ports import ThreadLinks, ThreadRef
from bot.storage.models import Contact, Task

NO_CONTACT = "This task has no contact."


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
        with_tasks = {t.contact_id for t in tasks}
        lines = [f"👤 {root.name} (contact #{root.id})"]
        for c in members:
            if c.id != root.id and c.id not in with_tasks:
                continue
            lines.append(
                f"Facebook: https://www.facebook.com/{c.fb_id}"
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
