"""Queries and writes on a session. Repositories never commit: the caller's transaction does."""

from __future__ import annotations

import functools
import sqlite3
import time
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
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction, aliased
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from bot.domain import Channel, Direction, MessageState, TaskStatus
from bot.routing import MessageView, TaskView
from bot.storage.models import (
    ConnectLink,
    Contact,
    DataDeletionRequest,
    InboxItem,
    Message,
    OutboxJob,
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


def _head_ids() -> Select[int]:
    """The oldest pending job of each lane, where it is due and nobody holds it (a lane
    runs in id order), but for the ``busy`` lanes. One pass over ``ix_outbox_state_lane``
    (pending jobs only)."""
    first = select(func.min(OutboxJob.id)).where(OutboxJob.state == "pending")
    now: BindParameter[float] = bindparam("now")
    return (
        select(OutboxJob.id)
        .where(
            OutboxJob.id.in_(first.group_by(OutboxJob.lane)),
            OutboxJob.next_attempt_at <= now,
            or_(OutboxJob.claimed_until.is_(None), OutboxJob.claimed_until < now),
            OutboxJob.lane.not_in(bindparam("busy", expanding=True)),
        )
        .order_by(OutboxJob.id)
        .limit(bindparam("limit"))
    )


def _claim_heads(for_update: bool) -> ExecutableReturnsRows:
    """Claim the heads until ``until``: the claim repeats the head's conditions, so of two
    replicas that read the same head only one gets it."""
    ids: Select[int] = _head_ids()
    if for_update:
        # PostgreSQL may run a LIMIT … SKIP LOCKED subquery of an UPDATE more than once and
        # claim more than the limit: the heads are taken once, in a materialized CTE
        heads = ids.with_for_update(skip_locked=True).cte("heads").prefix_with("MATERIALIZED")
        ids = select(heads.c.id)
    now: BindParameter[float] = bindparam("now")
    return (
        select(OutboxJob)
        .from_statement(
            update(OutboxJob)
            .where(
                OutboxJob.id.in_(ids),
                OutboxJob.state == "pending",
                or_(OutboxJob.claimed_until.is_(None), OutboxJob.claimed_until < now),
            )
            .values(claimed_until=bindparam("until"))
            .returning(OutboxJob)
        )
        .execution_options(populate_existing=True)
    )


# Built once, the hot path's statements keep their cache key and compiled form (building
# a statement costs more than SQLite takes to run it).
_RELAY_VIEW = _relay_view()
_HEAD_IDS = _head_ids()
_CLAIM_HEADS = _claim_heads(for_update=False)
_CLAIM_HEADS_PG = _claim_heads(for_update=True)
_FOLLOWING = (
    select(OutboxJob.id, OutboxJob.kind, OutboxJob.payload)
    .where(
        OutboxJob.lane == bindparam("lane"),
        OutboxJob.state == "pending",
        OutboxJob.id > bindparam("after"),
    )
    .order_by(OutboxJob.id)
    .limit(bindparam("limit"))
)
_COMPLETE = (
    update(OutboxJob)
    .where(OutboxJob.id.in_(bindparam("ids", expanding=True)), OutboxJob.state == "pending")
    .values(state="done")
    .execution_options(synchronize_session=False)
)
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
_INBOX_PENDING = (
    select(InboxItem)
    .where(InboxItem.processed_at.is_(None), InboxItem.next_attempt_at <= bindparam("now"))
    .order_by(InboxItem.id)
    .limit(bindparam("limit"))
)
_MARK_PROCESSED = (
    update(InboxItem)
    .where(InboxItem.id.in_(_IDS))
    .values(processed_at=bindparam("at"), error=None)
    .execution_options(synchronize_session=False)
)
_INBOX_BACKLOG = select(func.count()).select_from(InboxItem).where(InboxItem.processed_at.is_(None))
_NEXT_DUE = select(func.min(OutboxJob.next_attempt_at)).where(OutboxJob.state == "pending")
_OUTBOX_BACKLOG = select(func.count()).select_from(OutboxJob).where(OutboxJob.state == "pending")
# pruning the outbox (OutboxRepository.prune)
_DELETE_JOBS = (
    delete(OutboxJob).where(OutboxJob.id.in_(_IDS)).execution_options(synchronize_session=False)
)
PRUNE_CHUNK = 5000  # ids a statement deletes at most
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


_INBOX = cast(Table, InboxItem.__table__)
# Core, on the table: the ORM's bulk insert costs 30 us a row, Core's 25
_INBOX_ADD_PG = pg_insert(_INBOX).on_conflict_do_nothing(index_elements=["source", "dedupe_key"])
_INBOX_ADD_SQLITE = sqlite_insert(_INBOX).on_conflict_do_nothing(
    index_elements=["source", "dedupe_key"]
)
# A delivery as the intake hands it in: these columns, in this order.
INBOX_COLUMNS = ("source", "dedupe_key", "payload", "lane", "received_at")
_INBOX_FRESH = {"processed_at": None, "attempts": 0, "next_attempt_at": 0.0}
_INBOX_APPEND = (
    f"INSERT INTO {InboxItem.__tablename__} "
    f"({', '.join(INBOX_COLUMNS)}, processed_at, attempts, next_attempt_at) VALUES "
)
_INBOX_APPEND_ROW = f"({', '.join('?' * len(INBOX_COLUMNS))}, NULL, 0, 0.0)"
_INBOX_APPEND_END = " ON CONFLICT (source, dedupe_key) DO NOTHING"
APPEND_MAX = 1000  # rows in one INSERT, at most (5,000 parameters)


@functools.lru_cache(maxsize=64)
def _inbox_append(rows: int) -> str:
    return _INBOX_APPEND + ", ".join([_INBOX_APPEND_ROW] * rows) + _INBOX_APPEND_END


class InboxRepository:
    """Durable intake. ``add_many`` ignores repeats of (source, dedupe_key)."""

    async def add_many(self, s: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        postgres = s.get_bind().dialect.name == "postgresql"
        await s.execute(_INBOX_ADD_PG if postgres else _INBOX_ADD_SQLITE, list(rows))

    async def add_fresh(self, s: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
        """New deliveries, each ``INBOX_COLUMNS``' values."""
        await self.add_many(
            s, [dict(zip(INBOX_COLUMNS, row, strict=True), **_INBOX_FRESH) for row in rows]
        )

    @staticmethod
    def append_fresh(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """``add_fresh`` on a ``sqlite3`` connection in autocommit mode
        (``Database.run_durably``), all or nothing: one statement for up to
        ``APPEND_MAX`` rows, or as many as the build's limit on parameters allows (999
        before SQLite 3.32). (``executemany`` runs a statement a row, and each lets go of
        the GIL and takes it back from the event loop's thread.)"""
        if not rows:
            return
        most = min(
            APPEND_MAX,
            conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(INBOX_COLUMNS),
        )
        if len(rows) <= most:
            conn.execute(_inbox_append(len(rows)), [v for row in rows for v in row])
            return
        conn.execute("BEGIN IMMEDIATE")
        for start in range(0, len(rows), most):
            chunk = rows[start : start + most]
            conn.execute(_inbox_append(len(chunk)), [v for row in chunk for v in row])
        conn.execute("COMMIT")

    async def pending(self, s: AsyncSession, limit: int, now: float) -> list[InboxItem]:
        return list(await s.scalars(_INBOX_PENDING, {"now": now, "limit": limit}))

    async def claim_lanes(
        self, s: AsyncSession, now: float, until: float, lanes: int, per_lane: int
    ) -> list[InboxItem]:
        """Several replicas (PostgreSQL): take up to ``lanes`` lanes that nobody holds, with
        up to ``per_lane`` of each lane's deliveries from its oldest on, until ``until``.

        A lane is held while any of its deliveries is taken: so one replica at a time
        handles a lane, in the order its deliveries were stored. A delivery waiting for a
        retry steps aside (its lane goes on). Deliveries without a lane have no order.
        """
        head, other = aliased(InboxItem, name="head"), aliased(InboxItem, name="other")
        heads = (
            select(head.id)
            .where(
                head.processed_at.is_(None),
                head.next_attempt_at <= now,
                or_(head.claimed_until.is_(None), head.claimed_until < now),
                ~select(other.id)
                .where(
                    other.lane == head.lane,
                    other.processed_at.is_(None),
                    or_(
                        and_(other.next_attempt_at <= now, other.id < head.id),
                        other.claimed_until >= now,
                    ),
                )
                .exists(),
            )
            .order_by(head.id)
            .limit(lanes)
            .with_for_update(skip_locked=True)
        )
        taken = list(await self._take(s, InboxItem.id.in_(heads), now, until))
        held = {item.lane for item in taken if item.lane is not None}
        if held and per_lane > 1:
            behind = aliased(InboxItem, name="behind")
            numbered = (
                select(
                    behind.id,
                    func.row_number().over(partition_by=behind.lane, order_by=behind.id).label("n"),
                )
                .where(
                    behind.lane.in_(held),
                    behind.processed_at.is_(None),
                    behind.next_attempt_at <= now,
                    or_(behind.claimed_until.is_(None), behind.claimed_until < now),
                )
                .subquery()
            )
            first = select(numbered.c.id).where(numbered.c.n < per_lane)
            taken += await self._take(s, InboxItem.id.in_(first), now, until)
        return sorted(taken, key=lambda item: item.id)

    @staticmethod
    async def _take(
        s: AsyncSession, which: ColumnElement[bool], now: float, until: float
    ) -> Sequence[InboxItem]:
        result = await s.scalars(
            select(InboxItem).from_statement(
                update(InboxItem)
                .where(
                    which,
                    or_(InboxItem.claimed_until.is_(None), InboxItem.claimed_until < now),
                )
                .values(claimed_until=until)
                .returning(InboxItem)
            ),
            execution_options={"populate_existing": True},
        )
        return result.all()

    async def release(self, s: AsyncSession, item_ids: Sequence[int], until: float) -> None:
        """Give back deliveries taken until ``until`` and not handled (a replica stopping,
        or a batch that took long): another replica may take them at once."""
        if item_ids:
            await s.execute(
                update(InboxItem)
                .where(
                    InboxItem.id.in_(item_ids),
                    InboxItem.claimed_until == until,
                    InboxItem.processed_at.is_(None),
                )
                .values(claimed_until=None)
            )

    async def renew(
        self, s: AsyncSession, item_ids: Sequence[int], until: float, new_until: float
    ) -> int:
        """Extend a claim made until ``until``; how many of the deliveries were still ours."""
        if not item_ids:
            return 0
        result = await s.execute(
            update(InboxItem)
            .where(InboxItem.id.in_(item_ids), InboxItem.claimed_until == until)
            .values(claimed_until=new_until)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def mark_processed(self, s: AsyncSession, item_id: int, error: str | None = None) -> None:
        await s.execute(
            update(InboxItem)
            .where(InboxItem.id == item_id)
            .values(processed_at=time.time(), error=error)
        )

    async def mark_processed_many(self, s: AsyncSession, ids: Sequence[int]) -> None:
        """Deliveries handled together, in the transaction that carried them out."""
        await s.execute(_MARK_PROCESSED, {"ids": list(ids), "at": time.time()})

    async def backlog(self, s: AsyncSession) -> int:
        return int(await s.scalar(_INBOX_BACKLOG) or 0)

    async def prune(self, s: AsyncSession, processed_before: float) -> int:
        """Forget deliveries handled without error before then; failed ones stay."""
        result = await s.execute(
            delete(InboxItem).where(
                InboxItem.processed_at < processed_before, InboxItem.error.is_(None)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


QUEUED_JOBS = "pagedesk.queued_jobs"
_INSERT_JOBS = insert(OutboxJob)  # run on the connection: Core

# A queued job: its row, and the savepoint it was queued in (None: the transaction itself)
Queued = tuple[dict[str, Any], SessionTransaction | None]


def insert_queued_jobs(session: Session) -> None:
    """Before a commit (``Database``'s sessions): the jobs ``OutboxRepository.add`` queued,
    in one statement, in the order they were queued. A savepoint released keeps its jobs
    queued: they go in with the transaction's."""
    if session.in_nested_transaction():
        return  # a savepoint is being released
    queued: list[Queued] | None = session.info.pop(QUEUED_JOBS, None)
    if queued:
        session.connection().execute(_INSERT_JOBS, [row for row, _ in queued])


def _within(savepoint: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is ended:
            return True
        savepoint = savepoint.parent
    return False


def forget_queued_jobs(session: Session, transaction: SessionTransaction) -> None:
    """A transaction rolled back takes its queued jobs with it; a savepoint rolled back,
    the jobs queued in it (and in the savepoints it held). A failed flush rolls back the
    savepoint it ran in, or the transaction, as SQLAlchemy does."""
    ended: SessionTransaction | None = transaction
    while ended is not None and not ended.nested and ended.parent is not None:
        ended = ended.parent  # a flush's own: what it rolled back is the one around it
    if ended is None or ended.parent is None:
        session.info.pop(QUEUED_JOBS, None)
    else:
        queued: list[Queued] = session.info.get(QUEUED_JOBS, [])
        queued[:] = [(row, sp) for row, sp in queued if not _within(sp, ended)]


class OutboxRepository:
    def add(
        self, s: AsyncSession, lane: str, kind: str, payload: dict[str, Any], delay: float = 0.0
    ) -> None:
        """Queue a job, inserted as the transaction commits: a transaction's jobs go in one
        statement (``insert_queued_jobs``), not one flush each. One queued in a savepoint
        goes if the savepoint is rolled back (``forget_queued_jobs``)."""
        row = {
            "lane": lane,
            "kind": kind,
            "payload": payload,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": time.time() + delay,
        }
        session = s.sync_session
        queued: list[Queued] = session.info.setdefault(QUEUED_JOBS, [])
        queued.append((row, session.get_nested_transaction()))

    async def claim_heads(
        self, s: AsyncSession, now: float, lease: float, limit: int, busy: Collection[str]
    ) -> list[OutboxJob]:
        """Claim up to ``limit`` lane heads for ``lease`` seconds in one statement, skipping
        the ``busy`` lanes (running here). The claim repeats the head's conditions, so of two
        replicas that read the same head only one gets it."""
        pg = s.get_bind().dialect.name == "postgresql"
        result = await s.scalars(
            _CLAIM_HEADS_PG if pg else _CLAIM_HEADS,
            {"now": now, "until": now + lease, "limit": limit, "busy": list(busy)},
        )
        return sorted(result, key=lambda job: job.id)

    async def any_head(self, s: AsyncSession, now: float, busy: Collection[str]) -> bool:
        """Is a lane head due that nobody holds? (A read, before claiming in a write.)"""
        params = {"now": now, "limit": 1, "busy": list(busy)}
        return (await s.scalar(_HEAD_IDS, params)) is not None

    async def finish_many(self, s: AsyncSession, ran: Sequence[tuple[int, int]]) -> None:
        """Jobs that ran, as (id, attempts): done, with their claims given up."""
        await s.execute(
            update(OutboxJob),
            [
                {"id": job_id, "attempts": attempts, "state": "done", "claimed_until": None}
                for job_id, attempts in ran
            ],
        )

    async def extend(self, s: AsyncSession, job_ids: Sequence[int], until: float) -> None:
        """Renew the claims on jobs still running."""
        await s.execute(
            update(OutboxJob)
            .where(
                OutboxJob.id.in_(job_ids),
                OutboxJob.state == "pending",
                OutboxJob.claimed_until.is_not(None),
            )
            .values(claimed_until=until)
        )

    async def postpone(self, s: AsyncSession, job_id: int, until: float) -> None:
        """Give a claimed job back to run at ``until`` (its destination's limit is reached)."""
        await s.execute(
            update(OutboxJob)
            .where(OutboxJob.id == job_id)
            .values(claimed_until=None, next_attempt_at=until)
        )

    async def release_all(self, s: AsyncSession) -> None:
        """At the start of the only process (SQLite): leases of a dead process end now."""
        await s.execute(
            update(OutboxJob).where(OutboxJob.claimed_until.is_not(None)).values(claimed_until=None)
        )

    async def following(
        self, s: AsyncSession, lane: str, after_id: int, limit: int
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """The pending jobs queued behind ``after_id`` in its lane: (id, kind, payload)."""
        rows = await s.execute(_FOLLOWING, {"lane": lane, "after": after_id, "limit": limit})
        return [(row[0], row[1], row[2]) for row in rows]

    async def complete(self, s: AsyncSession, job_ids: Sequence[int]) -> None:
        """Jobs whose work another job did (a digest of several relays)."""
        if job_ids:
            await s.execute(_COMPLETE, {"ids": list(job_ids)})

    async def next_due(self, s: AsyncSession) -> float | None:
        value = await s.scalar(_NEXT_DUE)
        return float(value) if value is not None else None

    async def backlog(self, s: AsyncSession) -> int:
        return int(await s.scalar(_OUTBOX_BACKLOG) or 0)

    async def prune(self, s: AsyncSession, created_before: datetime) -> int:
        """Forget jobs done before then; failed and pending ones stay.

        Ids grow with the time a job was created: the first job created since then bounds
        what goes, and only the rows before it are read, by id. (``created_at`` has no
        index, and ``state`` leads two: a filter on them read every done job, 0.37 s on
        the loop's thread with 1,000,000, every 10 minutes.)"""
        first_kept = await s.scalar(
            select(OutboxJob.id)
            .where(OutboxJob.created_at >= created_before)
            .order_by(OutboxJob.id)
            .limit(1)
        )
        older = select(OutboxJob.id, OutboxJob.state)
        if first_kept is not None:
            older = older.where(OutboxJob.id < first_kept)
        else:
            older = older.where(OutboxJob.created_at < created_before)
        done = [job_id for job_id, state in await s.execute(older) if state == "done"]
        for at in range(0, len(done), PRUNE_CHUNK):
            await s.execute(_DELETE_JOBS, {"ids": done[at : at + PRUNE_CHUNK]})
        return len(done)


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
