"""Storage on SQLite always, and on PostgreSQL when TEST_POSTGRES_URL is set."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from bot.assembly import assemble
from bot.core.desk import StaffMessage
from bot.crypto import TokenBox
from bot.domain import CommentEvent, FbUser
from bot.metrics import Metrics
from bot.storage.db import Database, alembic_config
from bot.storage.models import InboxItem, Message, OutboxJob, Page, Task
from bot.storage.repositories import InboxRepository, OutboxRepository

PAGE_ID = "137542570280111"
POST = f"{PAGE_ID}_1"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.close()


def inbox_row(
    key: str,
    *,
    received: float | None = None,
    processed: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A stored Telegram delivery, as the intake writes it."""
    return {
        "source": "telegram",
        "dedupe_key": key,
        "payload": "{}",
        "received_at": received if received is not None else time.time(),
        "processed_at": processed,
        "attempts": 0,
        "next_attempt_at": 0.0,
        "error": error,
    }


async def add_page(db: Database, box: TokenBox) -> None:
    async with db.write() as s:
        s.add(
            Page(
                id=PAGE_ID,
                name="Bottender",
                token_encrypted=box.seal("tok"),
                chat_platform="telegram",
                chat_id="-100",
                active=True,
            )
        )


async def test_migrations_create_the_schema_and_are_idempotent(db: Database) -> None:
    await db.migrate()  # second run: nothing to do
    async with db.read() as s:
        version = await s.scalar(text("SELECT version_num FROM alembic_version"))
    head = ScriptDirectory.from_config(alembic_config(db.url)).get_current_head()
    assert version == head and head is not None
    if db.is_sqlite:
        async with db.read() as s:
            mode = await s.scalar(text("PRAGMA journal_mode"))
        assert mode == "wal"


async def test_inbox_ignores_repeats_of_source_and_key(db: Database) -> None:
    repo = InboxRepository()
    row = inbox_row("1")
    async with db.write() as s:
        await repo.add_many(s, [row, inbox_row("2")])
    async with db.write() as s:
        await repo.add_many(s, [row])
    async with db.read() as s:
        keys = list(await s.scalars(select(InboxItem.dedupe_key).order_by(InboxItem.id)))
    assert keys == ["1", "2"]


async def test_the_database_refuses_a_second_open_task_for_a_post(db: Database) -> None:
    await add_page(db, TokenBox("k"))

    def task(status: str) -> Task:
        return Task(
            page_id=PAGE_ID,
            channel="comments",
            post_id=POST,
            status=status,
            title="t",
            root_text="",
            chat_platform="telegram",
            chat_id="-100",
            assignees=[],
        )

    async with db.write() as s:
        s.add(task("open"))
        s.add(task("closed"))
        s.add(task("closed"))
    with pytest.raises(IntegrityError):
        async with db.write() as s:
            s.add(task("open"))


async def test_fifty_concurrent_comments_make_one_task(db: Database) -> None:
    """Without the single-process worker: fifty transactions race (truly, on PostgreSQL);
    the partial unique index and the retry make them one task with fifty messages."""
    box = TokenBox("k")
    await add_page(db, box)
    events = assemble(db, box, Metrics()).events
    now = datetime.now(UTC)
    comments = [
        CommentEvent(PAGE_ID, POST, f"c{i}", POST, "add", FbUser(f"u{i}", f"User {i}"), "hi", now)
        for i in range(50)
    ]
    await asyncio.gather(*(events.handle_event(ev) for ev in comments))
    async with db.read() as s:
        tasks = await s.scalar(select(func.count()).select_from(Task))
        messages = list(await s.scalars(select(Message.task_id)))
        opens = await s.scalar(
            select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == "open_thread")
        )
    assert tasks == 1
    assert len(messages) == 50 and set(messages) == {1}
    assert opens == 1


async def test_outbox_claim_is_exclusive_and_heads_keep_lane_order(db: Database) -> None:
    repo = OutboxRepository()
    async with db.write() as s:
        a1 = repo.add(s, "chat:1", "relay", {})
        a2 = repo.add(s, "chat:1", "relay", {})
        b1 = repo.add(s, "chat:2", "relay", {})
    now = time.time() + 1
    async with db.read() as s:
        heads = [j.id for j in await repo.heads(s, now, 10)]
    assert heads == [a1.id, b1.id]  # a2 waits behind a1
    async with db.write() as s:
        assert await repo.claim(s, a1.id, now, 60)
    async with db.write() as s:
        assert not await repo.claim(s, a1.id, now, 60)
    async with db.read() as s:
        assert [j.id for j in await repo.heads(s, now, 10)] == [b1.id]
    assert a2.id > a1.id


async def test_page_token_is_stored_encrypted(db: Database) -> None:
    box = TokenBox("secret")
    await add_page(db, box)
    async with db.read() as s:
        page = await s.get(Page, PAGE_ID)
    assert page is not None and page.token_encrypted != "tok"
    assert box.open(page.token_encrypted) == "tok"
    with pytest.raises(ValueError, match="SECRET_KEY changed"):
        TokenBox("other").open(page.token_encrypted)


async def test_the_same_staff_message_handled_at_once_is_stored_once(db: Database) -> None:
    """Two replicas handling one Telegram update together send one answer, not two."""
    box = TokenBox("k")
    await add_page(db, box)
    async with db.write() as s:
        task = Task(
            page_id=PAGE_ID,
            channel="comments",
            post_id=POST,
            status="open",
            title="t",
            root_text="",
            chat_platform="telegram",
            chat_id="-100",
            thread_id="7",
            root_message_id="8",
            assignees=[],
        )
        s.add(task)
        await s.flush()
        s.add(
            Message(
                task_id=task.id,
                direction="customer",
                fb_id="c1",
                fb_post_id=POST,
                fb_parent_id=POST,
                author_name="Ann",
                text="hi",
                chat_message_id="9",
                state="relayed",
            )
        )
    desk = assemble(db, box, Metrics()).desk
    results = await asyncio.gather(
        *(
            desk.staff_message(
                StaffMessage(
                    platform="telegram",
                    chat_id="-100",
                    thread_id="7",
                    user_id="1",
                    text="Thanks!",
                    chat_message_id="10",
                )
            )
            for _ in range(5)
        )
    )
    assert sum(r is not None for r in results) == 1
    async with db.read() as s:
        staff = await s.scalar(
            select(func.count()).select_from(Message).where(Message.direction == "staff")
        )
        answers = await s.scalar(
            select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == "fb_answer")
        )
    assert (staff, answers) == (1, 1)


async def test_replicas_claim_a_stored_delivery_once(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite serves one process: there are no replicas to share work")
    from bot.worker import InboxWorker

    calls: list[int] = []

    async def handler(item: InboxItem) -> None:
        calls.append(item.id)
        await asyncio.sleep(0.05)

    async with db.write() as s:
        await InboxRepository().add_many(s, [inbox_row("1")])
    async with db.read() as s:
        [item] = await InboxRepository().pending(s, 10, time.time())
    workers = [InboxWorker(db, {"telegram": handler}, Metrics()) for _ in range(3)]
    await asyncio.gather(*(w.process(item) for w in workers))
    assert calls == [item.id]


async def test_prune_forgets_old_handled_rows_and_keeps_the_rest(db: Database) -> None:
    now = time.time()
    old, recent = now - 8 * 86400, now - 3600

    def inbox(key: str, processed: float | None, error: str | None = None) -> dict[str, Any]:
        return inbox_row(key, received=old, processed=processed, error=error)

    async with db.write() as s:
        await InboxRepository().add_many(
            s,
            [
                inbox("old-done", old),
                inbox("recent-done", recent),
                inbox("old-pending", None),
                inbox("old-failed", old, "boom"),
            ],
        )
        long_ago = datetime.fromtimestamp(old, UTC)
        for state, created in [
            ("done", long_ago),
            ("done", datetime.now(UTC)),
            ("pending", long_ago),
            ("failed", long_ago),
        ]:
            s.add(
                OutboxJob(
                    lane="chat:1",
                    kind="relay",
                    payload={},
                    state=state,
                    attempts=0,
                    next_attempt_at=0.0,
                    created_at=created,
                )
            )
    maintenance = assemble(db, None, Metrics()).maintenance
    assert await maintenance.prune(timedelta(days=7)) == (1, 1)
    async with db.read() as s:
        keys = set(await s.scalars(select(InboxItem.dedupe_key)))
        states = sorted(await s.scalars(select(OutboxJob.state)))
    assert keys == {"recent-done", "old-pending", "old-failed"}
    assert states == ["done", "failed", "pending"]
