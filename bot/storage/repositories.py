"""Queries and writes on a session. Repositories never commit: the caller's transaction does."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import BindParameter

from bot.domain import Channel, Direction, MessageState, TaskStatus
from bot.routing import MessageView, TaskView
from bot.storage.inbox import InboxRepository
from bot.storage.jobs import OutboxRepository
from bot.storage.models import (
    ConnectLink,
    Contact,
    DataDeletionRequest,
    InboxItem,
    Message,
    Page,
    PageTokenHealth,
    Post,
    PrivateReply,
    QuickReply,
    Task,
    Template,
)


def message_view(m: Message) -> MessageView:
    return MessageView(
        id=m.id,
        direction=m.direction,
        fb_id=m.fb_id,
        fb_parent_id=m.fb_parent_id,
        text=m.text,
        state=m.state,
        post_id=m.fb_post_id,
        author_fb_id=m.author_fb_id,
        created_at=_utc(m.created_at),
    )


def _utc(value: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back; they were stored as UTC
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def task_view(t: Task) -> TaskView:
    return TaskView(id=t.id, status=t.status, merged_into_id=t.merged_into_id, channel=t.channel)


# What a person who asked Facebook to have their data deleted is called from then on.
FORGOTTEN = "(deleted at the person's request)"


class PageRepository:
    async def get(self, s: AsyncSession, page_id: str) -> Page | None:
        return await s.get(Page, page_id)

    async def by_ids(self, s: AsyncSession, ids: Collection[str]) -> dict[str, Page]:
        if not ids:
            return {}
        return {p.id: p for p in await s.scalars(_PAGES_BY_IDS, {"ids": list(ids)})}

    async def by_instagram(self, s: AsyncSession, account_id: str) -> Page | None:
        """The active Page whose connected Instagram account this is."""
        return await s.scalar(
            select(Page).where(Page.ig_account_id == account_id, Page.active.is_(True)).limit(1)
        )

    async def for_chat(self, s: AsyncSession, platform: str, chat_id: str) -> list[Page]:
        rows = await s.scalars(
            select(Page).where(
                Page.chat_platform == platform, Page.chat_id == chat_id, Page.active.is_(True)
            )
        )
        return list(rows)

    async def find(self, s: AsyncSession, platform: str, chat_id: str, ref: str) -> Page | None:
        """A page of this chat by id or (case-insensitive) name."""
        for page in await self.for_chat(s, platform, chat_id):
            if ref == page.id or ref.casefold() == page.name.casefold():
                return page
        return None

    async def any_connected(self, s: AsyncSession) -> bool:
        return (await s.scalar(select(func.count()).select_from(Page))) != 0


class ContactRepository:
    async def by_fb_id(self, s: AsyncSession, fb_id: str) -> Contact | None:
        return await s.scalar(select(Contact).where(Contact.fb_id == fb_id))

    async def by_fb_ids(self, s: AsyncSession, fb_ids: Collection[str]) -> dict[str, Contact]:
        if not fb_ids:
            return {}
        rows = await s.scalars(_CONTACTS_BY_FB_IDS, {"ids": list(fb_ids)})
        return {c.fb_id: c for c in rows}

    async def get(self, s: AsyncSession, contact_id: int) -> Contact | None:
        return await s.get(Contact, contact_id)

    async def card_root(self, s: AsyncSession, contact: Contact) -> Contact:
        seen = {contact.id}
        while contact.merged_into_id is not None and contact.merged_into_id not in seen:
            nxt = await s.get(Contact, contact.merged_into_id)
            if nxt is None:
                break
            seen.add(nxt.id)
            contact = nxt
        return contact

    async def forget(self, s: AsyncSession, fb_id: str) -> Contact | None:
        """Data deletion: the person's name, picture and fields go. The row stays, under an
        id that no longer names them, so their tasks keep their shape."""
        contact = await self.by_fb_id(s, fb_id)
        if contact is None:
            return None
        contact.name = FORGOTTEN
        contact.picture_url = None
        contact.fields = {}
        contact.fb_id = f"forgotten:{contact.id}"
        return contact

    async def members(self, s: AsyncSession, root: Contact) -> list[Contact]:
        """The contact and every contact merged into it, directly or not."""
        out = [root]
        frontier = [root.id]
        while frontier:
            rows = list(
                await s.scalars(select(Contact).where(Contact.merged_into_id.in_(frontier)))
            )
            out.extend(rows)
            frontier = [c.id for c in rows]
        return out


class PostRepository:
    async def get(self, s: AsyncSession, post_id: str) -> Post | None:
        return await s.get(Post, post_id)


def _status_is(status: str) -> ColumnElement[bool]:
    """``tasks.status = 'open'``, the value written in the statement: compared with a bound
    value, SQLite prepares the statement anew on every run, to see whether the partial
    index ``uq_tasks_open_post`` applies to that value (about 30 µs a lookup)."""
    assert status.isalpha()
    return Task.status == literal_column(f"'{status}'")


class TaskRepository:
    async def get(self, s: AsyncSession, task_id: int) -> Task | None:
        return await s.get(Task, task_id)

    async def open_for_post(self, s: AsyncSession, page_id: str, post_id: str) -> Task | None:
        """The post's open task; a task merged into another leads to the surviving one
        while that is open."""
        task = await s.scalar(_OPEN_FOR_POST, {"page_id": page_id, "post_id": post_id})
        if task is not None:
            return task
        where = (Task.page_id == page_id, Task.post_id == post_id)
        return await self._open_or_merged(s, where)

    async def open_for_dm(self, s: AsyncSession, page_id: str, contact_id: int) -> Task | None:
        where = (
            Task.page_id == page_id,
            Task.contact_id == contact_id,
            Task.channel == Channel.MESSENGER,
        )
        return await self._open_or_merged(s, where)

    async def _open_or_merged(self, s: AsyncSession, where: tuple[Any, ...]) -> Task | None:
        task = await s.scalar(select(Task).where(*where, _status_is(TaskStatus.OPEN)))
        if task is not None:
            return task
        merged = await s.scalar(
            select(Task)
            .where(*where, _status_is(TaskStatus.MERGED))
            .order_by(Task.id.desc())
            .limit(1)
        )
        if merged is None:
            return None
        surviving = await self.surviving(s, merged)
        return surviving if surviving.status == TaskStatus.OPEN else None

    async def by_thread(
        self, s: AsyncSession, platform: str, chat_id: str, thread_id: str
    ) -> Task | None:
        return await s.scalar(
            select(Task)
            .where(
                Task.chat_platform == platform,
                Task.chat_id == chat_id,
                Task.thread_id == thread_id,
            )
            .order_by(Task.id.desc())
            .limit(1)
        )

    async def surviving(self, s: AsyncSession, task: Task) -> Task:
        seen = {task.id}
        while task.merged_into_id is not None and task.merged_into_id not in seen:
            nxt = await s.get(Task, task.merged_into_id)
            if nxt is None:
                break
            seen.add(nxt.id)
            task = nxt
        return task

    async def open_on_posts(self, s: AsyncSession) -> list[Task]:
        rows = await s.scalars(
            select(Task)
            .where(_status_is(TaskStatus.OPEN), Task.post_id.is_not(None))
            .order_by(Task.id)
        )
        return list(rows)

    async def open_in_chat(
        self, s: AsyncSession, page_id: str, platform: str, chat_id: str
    ) -> list[Task]:
        rows = await s.scalars(
            select(Task).where(
                Task.page_id == page_id,
                Task.chat_platform == platform,
                Task.chat_id == chat_id,
                _status_is(TaskStatus.OPEN),
            )
        )
        return list(rows)

    async def for_contacts(self, s: AsyncSession, contact_ids: Sequence[int]) -> list[Task]:
        rows = await s.scalars(
            select(Task).where(Task.contact_id.in_(contact_ids)).order_by(Task.id)
        )
        return list(rows)


def _relay_view() -> Select[Task, Message, str | None, str | None]:
    parent = aliased(Message, name="parent")
    return (
        select(Task, Message, Contact.picture_url, parent.chat_message_id)
        .select_from(Task)
        .join(Message, Message.id == bindparam("message_id"))
        .outerjoin(
            Contact,
            and_(Message.direction == Direction.CUSTOMER, Contact.fb_id == Message.author_fb_id),
        )
        .outerjoin(parent, parent.fb_id == Message.fb_parent_id)
        .where(Task.id == bindparam("task_id"))
        .limit(1)
    )


# Built once, the hot path's statements keep their cache key and compiled form (building
# a statement costs more than SQLite takes to run it).
_RELAY_VIEW = _relay_view()
_MARK_SHOWN = (
    update(Message)
    .where(Message.id.in_(bindparam("ids", expanding=True)))
    .values(chat_message_id=bindparam("chat"), state=MessageState.RELAYED)
    .execution_options(synchronize_session=False)
)
# Not autoflushed: a batch's pending jobs go in one INSERT at its commit. A task is
# opened with a flush, and closed in a batch (a post removed) with one.
_OPEN_FOR_POST = (
    select(Task)
    .where(
        Task.page_id == bindparam("page_id"),
        Task.post_id == bindparam("post_id"),
        _status_is(TaskStatus.OPEN),
    )
    .execution_options(autoflush=False)
)
# The statements a lone comment runs, built once: building one costs about as much as
# running it (SQLAlchemy's construction and cache key, some 200 us here).
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_PAGES_BY_IDS = select(Page).where(Page.id.in_(_IDS))
_CONTACTS_BY_FB_IDS = select(Contact).where(Contact.fb_id.in_(_IDS))
_STORED_FB_IDS = select(Message.fb_id).where(Message.fb_id.in_(_IDS))
_MESSAGES_BY_IDS = select(Message).where(Message.id.in_(_IDS))
_MESSAGE_COLUMNS = tuple(c.key for c in Message.__table__.columns if c.key != "id")
# Core statements (on the table, not the entity): the ORM neither flushes nor tracks them
_MESSAGES = cast(Table, Message.__table__)
_INSERT_MESSAGE = insert(_MESSAGES).returning(_MESSAGES.c.id)


class MessageRepository:
    async def get(self, s: AsyncSession, message_id: int) -> Message | None:
        return await s.get(Message, message_id)

    async def relay_view(
        self, s: AsyncSession, task_id: int, message_id: int
    ) -> tuple[Task, Message, str | None, str | None] | None:
        """What showing a message takes, in one read: the task, the message, its author's
        picture (a customer's) and the chat message of the comment it answers."""
        row = (await s.execute(_RELAY_VIEW, {"task_id": task_id, "message_id": message_id})).first()
        if row is None:
            return None
        return row[0], row[1], row[2], row[3]

    async def insert(self, s: AsyncSession, message: Message) -> int:
        """Store a new message in one INSERT outside the session's unit of work, which
        is not flushed for it: what the session holds pending (a batch's jobs) goes in one
        statement at commit. ``message`` stays out of the session, with its new id."""
        given = message.__dict__
        values = {key: given[key] for key in _MESSAGE_COLUMNS if given.get(key) is not None}
        message.id = (await s.execute(_INSERT_MESSAGE, values)).scalar_one()
        return message.id

    async def stored_fb_ids(self, s: AsyncSession, fb_ids: Collection[str]) -> set[str]:
        """Which of these Facebook ids are stored messages."""
        if not fb_ids:
            return set()
        rows = await s.scalars(_STORED_FB_IDS, {"ids": list(fb_ids)})
        return {fb_id for fb_id in rows if fb_id is not None}

    async def by_ids(self, s: AsyncSession, ids: Collection[int]) -> dict[int, Message]:
        if not ids:
            return {}
        rows = await s.scalars(_MESSAGES_BY_IDS, {"ids": list(ids)})
        return {m.id: m for m in rows}

    async def mark_shown(self, s: AsyncSession, ids: Collection[int], chat_message_id: str) -> None:
        """Messages shown in the chat as that chat message (several: a digest)."""
        await s.execute(_MARK_SHOWN, {"ids": list(ids), "chat": chat_message_id})

    async def by_fb_id(self, s: AsyncSession, fb_id: str) -> Message | None:
        return await s.scalar(select(Message).where(Message.fb_id == fb_id))

    async def by_chat_id(
        self, s: AsyncSession, task_id: int, chat_message_id: str
    ) -> Message | None:
        """The message shown as that chat message; of a digest, its latest comment."""
        return await s.scalar(
            select(Message)
            .where(Message.task_id == task_id, Message.chat_message_id == chat_message_id)
            .order_by(Message.id.desc())
            .limit(1)
        )

    async def shown_as(self, s: AsyncSession, task_id: int, chat_message_id: str) -> list[Message]:
        """Every message shown as that chat message (several for a digest)."""
        rows = await s.scalars(
            select(Message)
            .where(Message.task_id == task_id, Message.chat_message_id == chat_message_id)
            .order_by(Message.id)
        )
        return list(rows)

    async def latest_customer(self, s: AsyncSession, task_id: int) -> Message | None:
        return await s.scalar(
            select(Message)
            .where(
                Message.task_id == task_id,
                Message.direction == Direction.CUSTOMER,
                Message.fb_status.is_distinct_from("removed"),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )

    async def last_seen_on_post(self, s: AsyncSession, post_id: str) -> datetime | None:
        value = await s.scalar(
            select(func.max(Message.created_at)).where(
                Message.fb_post_id == post_id,
                Message.direction.in_((Direction.CUSTOMER, Direction.PAGE)),
            )
        )
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # SQLite gives naive datetimes back
        return value

    async def forget_author(self, s: AsyncSession, fb_id: str) -> int:
        """Data deletion: the text and name of every message the person wrote are emptied;
        the rows stay (ids, times, states), so threads and answers keep their shape."""
        result = await s.execute(
            update(Message)
            .where(Message.author_fb_id == fb_id)
            .values(text="", author_name=FORGOTTEN, author_fb_id=None)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def unconfirmed_answers(self, s: AsyncSession, task_id: int) -> list[Message]:
        rows = await s.scalars(
            select(Message).where(
                Message.task_id == task_id,
                Message.direction == Direction.STAFF,
                Message.fb_id.is_(None),
                Message.state.in_((MessageState.PENDING, MessageState.SENDING)),
            )
        )
        return list(rows)


class MessengerRepository:
    """What Messenger's rules look at: the person's last message, private replies."""

    async def last_from_person(self, s: AsyncSession, psid: str) -> datetime | None:
        """When the person last wrote to the Page in Messenger (Facebook's timestamp)."""
        value = await s.scalar(
            select(func.max(Message.created_at)).where(
                Message.author_fb_id == psid,
                Message.direction == Direction.CUSTOMER,
                Message.fb_post_id.is_(None),
            )
        )
        return _utc(value)

    async def latest_customer_on_channel(
        self, s: AsyncSession, task_id: int, channel: str
    ) -> Message | None:
        """A merged task's latest customer message that came through ``channel``."""
        on_post = Message.fb_post_id.is_not(None)
        return await s.scalar(
            select(Message)
            .where(
                Message.task_id == task_id,
                Message.direction == Direction.CUSTOMER,
                Message.fb_status.is_distinct_from("removed"),
                on_post if channel == Channel.COMMENTS else Message.fb_post_id.is_(None),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )

    async def latest_from(
        self, s: AsyncSession, task_ids: Sequence[int], fb_ids: Sequence[str], channel: str
    ) -> Message | None:
        """The latest message these people (a contact card) wrote through ``channel`` in
        these tasks: where writing to them first answers."""
        on_post = Message.fb_post_id.is_not(None)
        return await s.scalar(
            select(Message)
            .where(
                Message.task_id.in_(task_ids),
                Message.author_fb_id.in_(fb_ids),
                Message.direction == Direction.CUSTOMER,
                Message.fb_status.is_distinct_from("removed"),
                on_post if channel == Channel.COMMENTS else Message.fb_post_id.is_(None),
            )
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(1)
        )

    async def answers_with_files(self, s: AsyncSession, task_id: int) -> list[Message]:
        """The task's staff answers that carried pictures or files (whose ids a look for
        an unclear send must not take for its own)."""
        rows = await s.scalars(
            select(Message).where(
                Message.task_id == task_id,
                Message.direction == Direction.STAFF,
                Message.media.is_not(None),
            )
        )
        return list(rows)

    async def private_reply(self, s: AsyncSession, comment_fb_id: str) -> PrivateReply | None:
        return await s.get(PrivateReply, comment_fb_id)

    async def private_reply_to(self, s: AsyncSession, psid: str) -> PrivateReply | None:
        """The latest private reply that reached this person."""
        return await s.scalar(
            select(PrivateReply)
            .where(PrivateReply.psid == psid)
            .order_by(PrivateReply.created_at.desc())
            .limit(1)
        )


class TemplateRepository:
    async def get(self, s: AsyncSession, page_id: str, kind: str) -> dict[str, Any] | None:
        row = await s.get(Template, (page_id, kind))
        return dict(row.body) if row is not None else None

    async def put(self, s: AsyncSession, page_id: str, kind: str, body: dict[str, Any]) -> None:
        row = await s.get(Template, (page_id, kind))
        if row is None:
            s.add(Template(page_id=page_id, kind=kind, body=body))
        else:
            row.body = body


class QuickReplyRepository:
    async def list(self, s: AsyncSession, page_id: str) -> list[QuickReply]:
        rows = await s.scalars(
            select(QuickReply).where(QuickReply.page_id == page_id).order_by(QuickReply.name)
        )
        return list(rows)

    async def get(self, s: AsyncSession, page_id: str, name: str) -> QuickReply | None:
        return await s.get(QuickReply, (page_id, name))

    async def put(self, s: AsyncSession, page_id: str, name: str, text: str) -> bool:
        """Add or replace; True when it replaced one."""
        row = await self.get(s, page_id, name)
        if row is not None:
            row.text = text
            return True
        s.add(QuickReply(page_id=page_id, name=name, text=text))
        return False

    async def remove(self, s: AsyncSession, page_id: str, name: str) -> bool:
        row = await self.get(s, page_id, name)
        if row is None:
            return False
        await s.delete(row)
        return True


class Repositories:
    """All repositories, stateless, shared."""

    def __init__(self) -> None:
        self.pages = PageRepository()
        self.contacts = ContactRepository()
        self.posts = PostRepository()
        self.tasks = TaskRepository()
        self.messages = MessageRepository()
        self.messenger = MessengerRepository()
        self.templates = TemplateRepository()
        self.quick = QuickReplyRepository()
        self.inbox = InboxRepository()
        self.outbox = OutboxRepository()


class ConnectLinkRepository:
    """One-time links of the browser connect. Every step is a conditional update, so two
    browsers (or replicas) racing for one link or one ``state`` cannot both win."""

    def add(self, s: AsyncSession, link: ConnectLink) -> None:
        s.add(link)

    async def get(self, s: AsyncSession, code_hash: str) -> ConnectLink | None:
        return await s.get(ConnectLink, code_hash)

    async def by_state(self, s: AsyncSession, state_hash: str) -> ConnectLink | None:
        return await s.scalar(select(ConnectLink).where(ConnectLink.state_hash == state_hash))

    async def by_form(self, s: AsyncSession, form_hash: str) -> ConnectLink | None:
        return await s.scalar(select(ConnectLink).where(ConnectLink.form_hash == form_hash))

    async def open(
        self,
        s: AsyncSession,
        code_hash: str,
        *,
        now: float,
        state_hash: str,
        browser_hash: str,
        expires_at: float,
    ) -> bool:
        """The link's one use: False when it was used or has expired."""
        result = await s.execute(
            update(ConnectLink)
            .where(
                ConnectLink.code_hash == code_hash,
                ConnectLink.opened_at.is_(None),
                ConnectLink.expires_at >= now,
            )
            .values(
                opened_at=now,
                state_hash=state_hash,
                browser_hash=browser_hash,
                expires_at=expires_at,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def take_state(self, s: AsyncSession, code_hash: str, state_hash: str) -> bool:
        """A ``state`` answers one callback."""
        result = await s.execute(
            update(ConnectLink)
            .where(ConnectLink.code_hash == code_hash, ConnectLink.state_hash == state_hash)
            .values(state_hash=None)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def finish(self, s: AsyncSession, code_hash: str, now: float) -> bool:
        """The ticked form's one use; the user token is wiped with it."""
        result = await s.execute(
            update(ConnectLink)
            .where(ConnectLink.code_hash == code_hash, ConnectLink.done_at.is_(None))
            .values(done_at=now, user_token_encrypted=None, form_hash=None)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def prune(self, s: AsyncSession, expired_before: float) -> int:
        result = await s.execute(delete(ConnectLink).where(ConnectLink.expires_at < expired_before))
        return int(result.rowcount)  # type: ignore[attr-defined]


class TokenHealthRepository:
    async def get(self, s: AsyncSession, page_id: str) -> PageTokenHealth | None:
        return await s.get(PageTokenHealth, page_id)

    async def all(self, s: AsyncSession) -> list[PageTokenHealth]:
        return list(await s.scalars(select(PageTokenHealth).order_by(PageTokenHealth.page_id)))

    async def put(self, s: AsyncSession, page_id: str, **values: Any) -> None:
        row = await s.get(PageTokenHealth, page_id)
        if row is None:
            s.add(PageTokenHealth(page_id=page_id, **values))
            return
        for key, value in values.items():
            setattr(row, key, value)

    async def warn_once(self, s: AsyncSession, page_id: str, deadline: float) -> bool:
        """True for the one caller that gets to warn about this deadline."""
        result = await s.execute(
            update(PageTokenHealth)
            .where(
                PageTokenHealth.page_id == page_id,
                PageTokenHealth.warned_deadline.is_distinct_from(deadline),
            )
            .values(warned_deadline=deadline)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def unwarn(self, s: AsyncSession, page_id: str) -> None:
        await s.execute(
            update(PageTokenHealth)
            .where(PageTokenHealth.page_id == page_id)
            .values(warned_deadline=None)
        )

    async def alert_once(self, s: AsyncSession, page_id: str) -> bool:
        """True for the one caller that gets to say the token stopped working. The flag is
        the page's own ``token_alerted``, which a failed answer sets too and a reconnect
        clears: the chat hears it once, whoever notices first."""
        result = await s.execute(
            update(Page)
            .where(Page.id == page_id, Page.token_alerted.is_(False))
            .values(token_alerted=True)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def unalert(self, s: AsyncSession, page_id: str) -> None:
        await s.execute(update(Page).where(Page.id == page_id).values(token_alerted=False))


class DataDeletionRepository:
    def add(self, s: AsyncSession, code: str, summary: dict[str, int]) -> None:
        s.add(DataDeletionRequest(confirmation_code=code, summary=summary))

    async def get(self, s: AsyncSession, code: str) -> DataDeletionRequest | None:
        return await s.get(DataDeletionRequest, code)

    async def texts_by(self, s: AsyncSession, fb_id: str) -> list[str]:
        """What the person wrote, to find where a template copied it (a task's title)."""
        rows = await s.scalars(select(Message.text).where(Message.author_fb_id == fb_id))
        return [t for t in rows if t]

    async def drop_handled_deliveries(self, s: AsyncSession, fb_id: str) -> int:
        """Stored webhook deliveries that name the person and were handled already (kept
        only for a week, for an operator to look at). ``fb_id`` must be digits: it goes
        into a LIKE pattern."""
        if not fb_id.isdigit():
            raise ValueError("a Facebook id is digits")
        result = await s.execute(
            delete(InboxItem).where(
                InboxItem.processed_at.is_not(None),
                InboxItem.payload.like(f'%"{fb_id}"%'),
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
