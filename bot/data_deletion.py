"""Forgetting a person at Facebook's request (the data deletion callback).

What goes: the contact's name, picture and fields; the text of every message they wrote;
their name and id where the system wrote them into their tasks (title, description,
additional data); stored webhook deliveries that name them and were handled already. What
stays is the tasks' shape: that a conversation took place, when, on which post, and the
staff's side of it. The request is kept by its confirmation code with counts of what was
deleted, and without the person's id.
"""

from __future__ import annotations

import logging
import secrets

from bot.storage.db import Database
from bot.storage.models import DataDeletionRequest
from bot.storage.repositories import (
    FORGOTTEN,
    ContactRepository,
    DataDeletionRepository,
    MessageRepository,
    TaskRepository,
)

log = logging.getLogger(__name__)


def _scrub(text: str, words: list[str]) -> str:
    for word in words:
        text = text.replace(word, FORGOTTEN)
    return text


class DataDeletion:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.contacts = ContactRepository()
        self.messages = MessageRepository()
        self.tasks = TaskRepository()
        self.requests = DataDeletionRepository()

    async def request(self, code: str) -> DataDeletionRequest | None:
        """A request by its confirmation code, for its status page."""
        async with self.db.read() as s:
            return await self.requests.get(s, code)

    async def forget(self, fb_id: str) -> str:
        """Forget the person with this Facebook id; returns the confirmation code."""
        code = secrets.token_hex(8)
        async with self.db.write() as s:
            contact = await self.contacts.by_fb_id(s, fb_id)
            words: set[str] = {fb_id}
            tasks = []
            picture = False
            if contact is not None:
                # Where a task's template copied their name or first words. Short texts
                # ("Hi", "Thanks!") are left: they would match the Page's own words.
                words.add(contact.name)
                words.update(t for t in await self.requests.texts_by(s, fb_id) if len(t) >= 12)
                tasks = await self.tasks.for_contacts(s, [contact.id])
                picture = contact.picture_url is not None
                await self.contacts.forget(s, fb_id)
            ordered = sorted((w for w in words if len(w.strip()) >= 3), key=len, reverse=True)
            scrubbed = 0
            for task in tasks:
                before = (task.title, task.root_text, task.additional_data)
                task.title = _scrub(task.title, ordered)
                task.root_text = _scrub(task.root_text, ordered)
                task.additional_data = _scrub(task.additional_data, ordered)
                scrubbed += before != (task.title, task.root_text, task.additional_data)
            summary = {
                "contacts": int(contact is not None),
                "pictures": int(picture),
                "messages": await self.messages.forget_author(s, fb_id),
                "tasks": scrubbed,
                "deliveries": await self.requests.drop_handled_deliveries(s, fb_id),
            }
            self.requests.add(s, code, summary)
        log.info("data deletion request handled", extra={"code": code, **summary})
        return code
