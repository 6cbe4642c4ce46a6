"""Storage on SQLite always, and on PostgreSQL when TEST_POSTGRES_URL is set."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from threading import get_ident
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError

from bot.assembly import assemble
from bot.core import answer_parts
from bot.core.desk import StaffMessage
from bot.crypto import TokenBox
from bot.domain import CommentEvent, FbUser, MessengerEvent
from bot.intake import Delivery, Intake
from bot.metrics import Metrics
from bot.storage.db import Database, alembic_config
from bot.storage.inbox import InboxRepository
from bot.storage.jobs import OutboxRepository
from bot.storage.models import InboxItem, MediaLink, Message, OutboxJob, Page, Task
from bot.storage.repositories import MessengerRepository

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


async def test_the_intake_stores_a_large_batch_whole_and_ignores_repeats(db: Database) -> None:
    """Deliveries handed in together are committed together: on SQLite in one statement of
    up to 1,000 rows (more: several, in one transaction), on PostgreSQL in one insert. A
    body stored before is not stored again, and its sender is answered all the same."""
    intake = Intake(db, on_stored=lambda: None, max_batch=5000)
    intake.start()
    try:
        await intake.submit_all("facebook", [Delivery("k0", '{"first": true}', "facebook:1")])
        submitted = [
            intake.submit_all("facebook", [Delivery(f"k{i}", "{}", f"facebook:{i % 3}")])
            for i in range(2500)
        ]
        await asyncio.gather(*submitted)
    finally:
        await intake.close()
    async with db.read() as s:
        rows = list(await s.execute(select(InboxItem.dedupe_key, InboxItem.payload)))
    assert len(rows) == 2500
    assert dict(rows)["k0"] == '{"first": true}'  # the repeat stored nothing


async def test_sqlite_intake_writes_in_a_thread_of_its_own_and_flushes_each_commit(
    sqlite_url: str,
) -> None:
    db = Database(sqlite_url)
    await db.migrate()
    try:
        assert db.writes_in_thread
        pragmas = await db.run_durably(
            lambda conn: (
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                get_ident(),
            )
        )
    finally:
        await db.close()
    assert pragmas[:2] == (2, "wal")  # FULL
    assert pragmas[2] != get_ident()  # not the event loop's thread
    memory = Database("sqlite+aiosqlite:///:memory:")
    assert not memory.writes_in_thread
    await memory.close()


async def test_sqlite_intake_keeps_to_a_build_with_few_parameters_a_statement(
    sqlite_url: str,
) -> None:
    """SQLite before 3.32 binds 999 parameters a statement: a batch of 500 deliveries is
    then several statements in one transaction, not an error."""
    db = Database(sqlite_url)
    await db.migrate()
    await db.run_durably(lambda conn: conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999))
    intake = Intake(db, on_stored=lambda: None)
    intake.start()
    try:
        await asyncio.gather(
            *(intake.submit_all("facebook", [Delivery(f"k{i}", "{}")]) for i in range(500))
        )
        async with db.read() as s:
            stored = await s.scalar(select(func.count()).select_from(InboxItem))
        with pytest.raises(RuntimeError, match="closed"):
            await intake.close()
            await db.close()
            await db.run_durably(lambda conn: None)
    finally:
        await db.close()
    assert stored == 500


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
        repo.add(s, "chat:1", "relay", {"n": 1})
        repo.add(s, "chat:1", "relay", {"n": 2})
        repo.add(s, "chat:2", "relay", {"n": 3})
    async with db.read() as s:
        a1, a2, b1 = await s.scalars(select(OutboxJob.id).order_by(OutboxJob.id))
    now = time.time() + 1

    async def claim(limit: int, busy: list[str]) -> list[int]:
        async with db.write() as s:
            return [j.id for j in await repo.claim_heads(s, now, 60, limit, busy)]

    assert await claim(1, []) == [a1]  # the oldest head first
    assert await claim(10, []) == [b1]  # a1 is claimed; a2 waits behind it
    assert await claim(10, []) == []  # a claim is not given twice
    assert a2 > a1


async def test_queued_jobs_go_in_at_commit_in_order_and_leave_with_a_rollback(
    db: Database,
) -> None:
    """A transaction's jobs are inserted together as it commits, in the order they were
    queued, savepoints' included; a rolled-back transaction, or savepoint, takes its own
    with it, and only its own (not on a failed flush, nor on a savepoint that fails as it
    is released)."""
    repo = OutboxRepository()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO outbox"):
            statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with db.write() as s:
            for n in range(5):
                repo.add(s, f"chat:{n % 2}", "relay", {"n": n})
            async with db.read() as other:  # nothing before the commit
                assert await other.scalar(select(func.count()).select_from(OutboxJob)) == 0
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert len(statements) == 1
    with pytest.raises(RuntimeError):
        async with db.write() as s:
            repo.add(s, "chat:0", "relay", {"n": 99})
            raise RuntimeError("the transaction fails")
    page = {"name": "P", "token_encrypted": "x", "chat_platform": "telegram", "chat_id": "1"}
    async with db.write() as s:
        s.add(Page(id="p1", **page))
    async with db.write() as s:
        repo.add(s, "chat:0", "relay", {"n": 5})
        with contextlib.suppress(RuntimeError):
            async with s.begin_nested():
                repo.add(s, "chat:0", "relay", {"n": 97})
                async with s.begin_nested():
                    repo.add(s, "chat:0", "relay", {"n": 98})
                raise RuntimeError("the savepoint fails, with the one it held")
        with contextlib.suppress(IntegrityError):
            async with s.begin_nested():  # a failed flush inside a savepoint
                repo.add(s, "chat:0", "relay", {"n": 99})
                s.add(Page(id="p1", **page))
                await s.flush()
        with contextlib.suppress(IntegrityError):
            async with s.begin_nested():  # fails as it is released
                s.add(Page(id="p1", **page))
        async with s.begin_nested():
            repo.add(s, "chat:0", "relay", {"n": 6})
            await s.flush()
        repo.add(s, "chat:0", "relay", {"n": 7})
    async with db.read() as s:
        rows = (await s.execute(select(OutboxJob.payload).order_by(OutboxJob.id))).scalars()
        assert [p["n"] for p in rows] == [0, 1, 2, 3, 4, 5, 6, 7]  # in the order queued


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


async def add_laned(db: Database, *lanes: str | None) -> list[int]:
    """One stored delivery per lane given, in that order; their ids."""
    rows = [{**inbox_row(f"k{n}"), "lane": lane} for n, lane in enumerate(lanes)]
    async with db.write() as s:
        await InboxRepository().add_many(s, rows)
        return list(await s.scalars(select(InboxItem.id).order_by(InboxItem.id)))


async def take(db: Database, now: float, lanes: int = 10, per_lane: int = 10) -> list[int]:
    async with db.write() as s:
        items = await InboxRepository().claim_lanes(s, now, now + 60, lanes, per_lane)
    return [i.id for i in items]


async def test_a_lane_is_taken_whole_by_one_replica_at_a_time(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite serves one process: it reads the inbox in order, no claims")
    a1, b1, a2, n1, a3, b2 = await add_laned(db, "A", "B", "A", None, "A", "B")
    now = time.time()
    # lane A's first two, lane B's first two; a delivery without a lane on its own
    assert await take(db, now, lanes=3, per_lane=2) == [a1, b1, a2, n1, b2]
    # A is held while any of its deliveries is taken: its third waits
    assert await take(db, now) == []
    async with db.write() as s:
        await InboxRepository().mark_processed(s, a1)
    assert await take(db, now) == []
    async with db.write() as s:
        await InboxRepository().mark_processed(s, a2)
    assert await take(db, now) == [a3]
    # a replica that died holding a lane only delays it: the lease runs out
    assert await take(db, now + 61) == [b1, n1, a3, b2]


async def test_a_delivery_waiting_for_a_retry_steps_aside(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite serves one process: it reads the inbox in order, no claims")
    a1, a2 = await add_laned(db, "A", "A")
    now = time.time()
    assert await take(db, now, per_lane=1) == [a1]
    async with db.write() as s:
        row = await s.get(InboxItem, a1)
        assert row is not None
        row.claimed_until, row.next_attempt_at, row.attempts = None, now + 30, 1
    assert await take(db, now) == [a2]
    async with db.write() as s:
        await InboxRepository().mark_processed(s, a2)
    assert await take(db, now + 31) == [a1]


async def test_replicas_handle_each_delivery_once_and_each_lane_in_order(db: Database) -> None:
    """Three workers on one PostgreSQL: every delivery handled once, and never two of one
    lane at the same time or out of their order."""
    if db.is_sqlite:
        pytest.skip("SQLite serves one process: there are no replicas to share work")
    from bot.worker import InboxWorker

    lanes = [f"L{n % 4}" for n in range(40)] + [None] * 4
    ids = await add_laned(db, *lanes)
    lane_of = dict(zip(ids, lanes, strict=True))
    handled: list[int] = []
    busy: set[str] = set()
    overlaps: list[str] = []
    all_handled = asyncio.Event()

    async def handler(item: InboxItem) -> None:
        lane = item.lane or f"none:{item.id}"
        if lane in busy:
            overlaps.append(lane)
        busy.add(lane)
        await asyncio.sleep(0.005)
        busy.discard(lane)
        handled.append(item.id)
        if len(handled) == len(ids):
            all_handled.set()

    workers = [InboxWorker(db, {"telegram": handler}, Metrics()) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_handled.wait(), timeout=30)
    finally:
        for w in workers:
            await w.stop()
    assert sorted(handled) == ids  # each once
    assert overlaps == []
    for lane in {x for x in lanes if x is not None}:
        order = [i for i in handled if lane_of[i] == lane]
        assert order == sorted(order), f"lane {lane} out of order"


async def test_a_replica_keeps_a_lane_while_it_works_on_it(db: Database) -> None:
    """A short lease, renewed while the deliveries taken are handled: a slow lane stays
    with its replica (a dead one would lose it within the lease)."""
    if db.is_sqlite:
        pytest.skip("SQLite serves one process: there are no replicas to share work")
    from bot.worker import InboxWorker

    ids = await add_laned(db, "A", "A", "A", "A")
    handled: list[tuple[int, int]] = []
    all_handled = asyncio.Event()

    def handler_of(worker: int) -> Any:
        async def handler(item: InboxItem) -> None:
            await asyncio.sleep(0.3)
            handled.append((worker, item.id))
            if len(handled) == len(ids):
                all_handled.set()

        return handler

    workers = [InboxWorker(db, {"telegram": handler_of(n)}, Metrics()) for n in range(2)]
    for w in workers:
        w.lease = 0.45  # less than the lane takes: renewed every 0.15 s
        w.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_handled.wait(), timeout=10)
    finally:
        for w in workers:
            await w.stop()
    assert [item for _, item in handled] == ids
    assert len({worker for worker, _ in handled}) == 1


async def test_a_stopping_replica_gives_back_what_it_took(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite serves one process: there are no replicas to share work")
    a1, a2 = await add_laned(db, "A", "A")
    now = time.time()
    async with db.write() as s:
        [first, second] = await InboxRepository().claim_lanes(s, now, now + 60, 1, 5)
        await InboxRepository().release(s, [second.id], until=now + 60)
    async with db.write() as s:
        await InboxRepository().mark_processed(s, first.id)
    assert await take(db, now) == [a2]
    assert (first.id, second.id) == (a1, a2)


async def test_a_lease_has_one_holder_until_it_runs_out_or_is_given_back(db: Database) -> None:
    from bot.storage.shared import LeaseRepository

    repo, now = LeaseRepository(), time.time()
    async with db.write() as s:
        assert await repo.acquire(s, "periodic", "r1", now, 30)
    async with db.write() as s:
        assert not await repo.acquire(s, "periodic", "r2", now + 1, 30)
        assert await repo.acquire(s, "periodic", "r1", now + 10, 30)  # renewed to now + 40
        assert await repo.acquire(s, "polling", "r2", now, 30)  # another lease: free
    async with db.write() as s:
        assert not await repo.acquire(s, "periodic", "r2", now + 39, 30)
        assert await repo.acquire(s, "periodic", "r2", now + 41, 30)  # r1 died: taken over
        assert await repo.holder(s, "periodic", now + 41) == "r2"
    async with db.write() as s:
        await repo.release(s, "periodic", "r1")  # not r1's any more: nothing happens
        assert await repo.holder(s, "periodic", now + 41) == "r2"
        await repo.release(s, "periodic", "r2")
        assert await repo.acquire(s, "periodic", "r3", now + 42, 30)


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
        s.add(MediaLink(token="expired", platform="telegram", file_id="f1", expires_at=now - 1))
        s.add(MediaLink(token="live", platform="telegram", file_id="f2", expires_at=now + 3600))
    maintenance = assemble(db, None, Metrics()).maintenance
    assert await maintenance.prune(timedelta(days=7)) == (1, 1)
    async with db.read() as s:
        keys = set(await s.scalars(select(InboxItem.dedupe_key)))
        states = sorted(await s.scalars(select(OutboxJob.state)))
        links = set(await s.scalars(select(MediaLink.token)))
    assert keys == {"recent-done", "old-pending", "old-failed"}
    assert states == ["done", "failed", "pending"]
    assert links == {"live"}  # an expired link to a staff file goes too
    # nothing created since the cutoff: every done job goes, the others stay
    assert (await maintenance.prune(timedelta(0)))[1] == 1
    async with db.read() as s:
        assert sorted(await s.scalars(select(OutboxJob.state))) == ["failed", "pending"]


async def test_the_echo_of_an_answers_file_keeps_its_id_on_that_file(db: Database) -> None:
    """Issue 12: each file of a Messenger answer is known by the echo that names it (its
    ``metadata``), also once the text's id is known; no other echo overwrites it."""
    box = TokenBox("k")
    await add_page(db, box)
    async with db.write() as s:
        task = Task(
            page_id=PAGE_ID,
            channel="messenger",
            status="open",
            title="Message from Dana",
            root_text="",
            chat_platform="telegram",
            chat_id="-100",
            assignees=[],
        )
        s.add(task)
        await s.flush()
        answer = Message(
            task_id=task.id,
            direction="staff",
            fb_id="m_text",  # the text went, and its id is known
            text="Here they are",
            state="sending",
            media=[{"type": "image", "file_id": "f1"}, {"type": "file", "file_id": "f2"}],
        )
        s.add(answer)
        await s.flush()
        answer_id = answer.id
    events = assemble(db, box, Metrics()).events

    def echo(mid: str, metadata: str, page_id: str = PAGE_ID) -> MessengerEvent:
        now = datetime.now(UTC)
        return MessengerEvent(page_id, page_id, "psid-1", mid, "", now, True, metadata=metadata)

    await events.handle_event(echo("m_file2", f"pagedesk:{answer_id}:1"))
    await events.handle_event(echo("m_other", f"pagedesk:{answer_id}:1"))  # not over it
    await events.handle_event(echo("m_none", f"pagedesk:{answer_id}:5"))  # no such file
    async with db.read() as s:
        row = await s.get(Message, answer_id)
        assert row is not None
        assert row.media == [
            {"type": "image", "file_id": "f1"},
            {"type": "file", "file_id": "f2", "fb_id": "m_file2"},
        ]
        assert row.fb_id == "m_text"
        shown = await s.scalar(
            select(func.count()).select_from(Message).where(Message.id != answer_id)
        )
        with_files = await MessengerRepository().answers_with_files(s, task.id)
    assert shown == 0  # none of the echoes is shown as the Page's message
    assert answer_parts.sent_file_ids(with_files) == {"m_file2"}


async def test_sqlite_durable_writes_are_flushed_to_disk_and_the_others_wait_for_them(
    sqlite_url: str,
) -> None:
    """The intake's commits (and an answer marked as being sent) use synchronous=FULL;
    processing's commits use NORMAL, flushed with the next durable commit."""
    db = Database(sqlite_url)
    await db.migrate()
    try:
        async with db.write(durable=True) as s:
            durable = await s.scalar(text("PRAGMA synchronous"))
        async with db.write() as s:
            other = await s.scalar(text("PRAGMA synchronous"))
        async with db.read() as s:
            journal = await s.scalar(text("PRAGMA journal_mode"))
    finally:
        await db.close()
    assert (durable, other, journal) == (2, 1, "wal")  # FULL, NORMAL


async def test_a_durable_writer_goes_before_writers_that_waited_longer(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    await db.migrate()
    order: list[str] = []
    try:
        async with db.write():
            # while the lock is held: two plain writers, then a durable one, start waiting
            async def write(name: str, durable: bool) -> None:
                async with db.write(durable=durable):
                    order.append(name)

            tasks = []
            for name, durable in (("plain 1", False), ("plain 2", False), ("durable", True)):
                tasks.append(asyncio.create_task(write(name, durable)))
                await asyncio.sleep(0)
        await asyncio.gather(*tasks)
    finally:
        await db.close()
    assert order == ["durable", "plain 1", "plain 2"]


async def test_sqlite_statements_run_on_the_loop_thread_and_commits_in_the_connections(
    sqlite_url: str,
) -> None:
    """With a SQLite file, SQLAlchemy's cursor calls sqlite3 on the event loop's thread
    (``sqlite_inline.InlineCursor``); a commit goes to the connection's own thread. Both
    the session and ``AsyncConnection`` work on it (SQLAlchemy refuses a statement that
    awaited nothing on the latter), and SQLite's errors are SQLAlchemy's as before."""
    db = Database(sqlite_url)
    seen: dict[str, set[int]] = {"statement": set(), "commit": set()}

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        raw = dbapi_conn.driver_connection._conn  # the sqlite3 connection
        raw.create_function("on_thread", 0, lambda: seen["statement"].add(get_ident()) or 1)
        raw.set_trace_callback(
            lambda sql: seen["commit"].add(get_ident()) if sql.startswith("COMMIT") else None
        )

    event.listen(db.engine.sync_engine, "connect", on_connect)
    await db.migrate()
    try:
        async with db.write() as s:
            assert await s.scalar(text("SELECT on_thread()")) == 1
            s.add(
                Page(id="p1", name="P", token_encrypted="x", chat_platform="telegram", chat_id="1")
            )
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT on_thread()"))).scalar() == 1
            assert (await conn.exec_driver_sql("SELECT count(*) FROM pages")).scalar() == 1
        with pytest.raises(IntegrityError):
            async with db.write() as s:
                s.add(
                    Page(
                        id="p1",
                        name="P",
                        token_encrypted="x",
                        chat_platform="telegram",
                        chat_id="1",
                    )
                )
    finally:
        await db.close()
    assert seen["statement"] == {get_ident()}
    assert seen["commit"] and get_ident() not in seen["commit"]
