"""Several replicas on one PostgreSQL: started together, one budget per destination, work
that one replica does at a time, lanes kept in order. Two real ``serve`` processes at the
end. Each PostgreSQL test gets a database of its own, dropped after."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from alembic import command
from sqlalchemy import func, make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot import lanes
from bot.emulators.graph import FakeGraph
from bot.emulators.stage import comment_delivery
from bot.emulators.telegram import FakeTelegram
from bot.fb.signature import sign
from bot.handlers.telegram import poll_updates
from bot.intake import Delivery, Intake
from bot.leases import Leases
from bot.limits import Limit, SharedLimiter
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.storage.db import Database, alembic_config
from bot.storage.jobs import OutboxRepository
from bot.storage.models import InboxItem, OutboxJob
from tests.conftest import ADMIN, ADMIN_ID, AGENT, POSTGRES_URL
from tests.helpers import DIGEST_HEAD, plain
from tests.test_crash import Server

needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="TEST_POSTGRES_URL not set (no PostgreSQL here)"
)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, empty database on the test server, dropped after the test."""
    assert POSTGRES_URL is not None
    name = f"pagedesk_replicas_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


# --- lanes: what keeps its order -------------------------------------------------------


def test_a_facebook_delivery_is_laned_by_its_page_and_split_when_pages_are_mixed() -> None:
    one = comment_delivery("111", "111_1", "1_1", ("u1", "Ann"), "hi")
    raw = json.dumps(one)
    assert lanes.facebook(one, raw, "h") == [Delivery("h", raw, "facebook:111")]
    two = {
        **one,
        "entry": [
            *one["entry"],
            *comment_delivery("222", "222_1", "2_1", ("u2", "Bo"), "yo")["entry"],
            *comment_delivery("111", "111_1", "1_2", ("u3", "Cy"), "hey")["entry"],
        ],
    }
    rows = lanes.facebook(two, json.dumps(two), "h")
    assert [(r.dedupe_key, r.lane) for r in rows] == [
        ("h:facebook:111", "facebook:111"),
        ("h:facebook:222", "facebook:222"),
    ]
    first = json.loads(rows[0].payload)
    assert [e["id"] for e in first["entry"]] == ["111", "111"]  # in the order they came
    assert first["object"] == "page"
    ig = {"object": "instagram", "entry": [{"id": "178", "changes": []}]}
    assert lanes.facebook(ig, "{}", "k")[0].lane == "instagram:178"
    assert lanes.facebook({"object": "page", "entry": ["junk"]}, "{}", "k")[0].lane is None


def test_telegram_and_slack_deliveries_are_laned_by_their_chat() -> None:
    chat = {"id": -100123, "type": "supergroup"}
    assert lanes.telegram({"update_id": 1, "message": {"chat": chat}}) == "telegram:-100123"
    assert lanes.telegram({"update_id": 2, "edited_message": {"chat": chat}}) == (
        "telegram:-100123"
    )
    callback = {"update_id": 3, "callback_query": {"id": "q", "message": {"chat": chat}}}
    assert lanes.telegram(callback) == "telegram:-100123"
    assert lanes.telegram({"update_id": 4, "my_chat_member": {"chat": chat}}) == (
        "telegram:-100123"
    )
    assert lanes.telegram({"update_id": 5}) is None
    assert lanes.slack({"event": {"type": "message", "channel": "C1"}}) == "slack:C1"
    assert lanes.slack({"command": "/close", "channel_id": "C2"}) == "slack:C2"
    assert lanes.slack({"type": "block_actions", "channel": {"id": "C3"}}) == "slack:C3"
    assert lanes.slack({"type": "view_submission", "view": {"id": "V1"}}) is None


# --- start together ----------------------------------------------------------------------


@needs_postgres
async def test_replicas_started_together_on_an_empty_database_all_come_up(pg_url: str) -> None:
    dbs = [Database(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(db.migrate() for db in dbs))
        async with dbs[0].read() as s:
            versions = list(await s.scalars(text("SELECT version_num FROM alembic_version")))
    finally:
        for db in dbs:
            await db.close()
    assert versions == [head_revision(pg_url)]


@needs_postgres
async def test_replicas_started_together_on_an_older_database_all_come_up(pg_url: str) -> None:
    older = Database(pg_url)

    def to_0003(conn: Any) -> None:
        cfg = alembic_config(pg_url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")

    async with older.engine.begin() as conn:
        await conn.run_sync(to_0003)
    await older.close()
    dbs = [Database(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(db.migrate() for db in dbs))
        async with dbs[0].read() as s:
            versions = list(await s.scalars(text("SELECT version_num FROM alembic_version")))
            lanes_column = await s.scalar(
                text(
                    "SELECT count(*) FROM information_schema.columns "
                    "WHERE table_name = 'inbox' AND column_name = 'lane'"
                )
            )
    finally:
        for db in dbs:
            await db.close()
    assert versions == [head_revision(pg_url)]
    assert lanes_column == 1


def head_revision(url: str) -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


# --- one budget per destination ----------------------------------------------------------


@needs_postgres
async def test_the_limit_holds_for_all_replicas_together(pg_url: str) -> None:
    """Two replicas (two limiters, two connection pools) asking at the same moment for the
    same group: together they get the group's limit, not twice it."""
    replicas = [Database(pg_url) for _ in range(2)]
    await replicas[0].migrate()
    limits = {"tg:chat": Limit(10, 60.0), "tg:global": Limit(1000, 1.0)}
    limiters = [SharedLimiter(limits, burst_share=1.0) for _ in replicas]
    keys = ["tg:chat:-1", "tg:global"]

    async def ask(n: int) -> float:
        db, limiter = replicas[n % 2], limiters[n % 2]
        async with db.write() as s:
            return await limiter.reserve(s, keys, 1)

    try:
        waits = await asyncio.gather(*(ask(n) for n in range(40)))
        # a second group has a budget of its own; a key without a limit never waits
        async with replicas[1].write() as s:
            assert await limiters[1].reserve(s, ["tg:chat:-2", "tg:global"], 2) == 0.0
            assert await limiters[1].reserve(s, ["slack:channel:C1"], 1) == 0.0
    finally:
        for db in replicas:
            await db.close()
    assert sum(w == 0.0 for w in waits) == 10
    # the others are told to wait for the oldest send to leave the window (60 s + margin)
    assert all(55.0 < w <= 63.0 for w in waits if w > 0)


@needs_postgres
async def test_a_burst_is_spread_after_a_quarter_of_the_limit(pg_url: str) -> None:
    db = Database(pg_url)
    await db.migrate()
    limiter = SharedLimiter({"tg:chat": Limit(20, 60.0)})
    try:
        waits = []
        for _ in range(6):
            async with db.write() as s:
                waits.append(await limiter.reserve(s, ["tg:chat:-1"], 1))
    finally:
        await db.close()
    assert waits[:5] == [0.0] * 5
    assert waits[5] == pytest.approx(63.0 / 20, abs=0.2)


@needs_postgres
async def test_two_outboxes_run_each_job_once_in_lane_order_within_one_limit(
    pg_url: str,
) -> None:
    """Two replicas' outboxes on one table: each job runs once (a slow one stays with its
    runner: the claim is renewed), the jobs of a lane in order, and the sends of both
    together stay within the destination's limit."""
    dbs = [Database(pg_url) for _ in range(2)]
    await dbs[0].migrate()
    repo = OutboxRepository()
    async with dbs[0].write() as s:
        for n in range(12):
            repo.add(s, f"chat:{n % 3}", "relay", {"n": n, "pace": ["tg:chat:-1"]})
    runs: list[tuple[int, int, float]] = []  # (replica, n, when)
    done = asyncio.Event()

    def executor(replica: int) -> Callable[[OutboxJob], Awaitable[None]]:
        async def execute(job: OutboxJob) -> None:
            runs.append((replica, int(str(job.payload["n"])), time.monotonic()))
            await asyncio.sleep(0.5 if job.payload["n"] == 0 else 0.01)
            if len(runs) == 12:
                done.set()

        return execute

    async def failed(s: Any, job: OutboxJob, e: Any) -> None:
        raise AssertionError(e)

    limits = {"tg:chat": Limit(4, 1.0)}  # 4 in any 1.25 s, 1 each 0.31 s after a burst
    outboxes = [
        Outbox(db, executor(n), failed, Metrics(), SharedLimiter(limits))
        for n, db in enumerate(dbs)
    ]
    for outbox in outboxes:
        outbox.lease = 0.3  # shorter than job 0 takes: renewed while it runs
        await outbox.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=30)
        await asyncio.sleep(0.5)  # a job run twice would show now
    finally:
        for outbox in outboxes:
            await outbox.stop()
        for db in dbs:
            await db.close()
    numbers = [n for _, n, _ in runs]
    assert sorted(numbers) == list(range(12))
    for lane in range(3):
        mine = [n for n in numbers if n % 3 == lane]
        assert mine == sorted(mine)
    assert len({replica for replica, _, _ in runs}) == 2  # both took part
    times = sorted(t for _, _, t in runs)
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 4


# --- one replica at a time ---------------------------------------------------------------


class DyingLeases(Leases):
    """A replica killed with SIGKILL: its lease is never given back."""

    async def release(self, name: str) -> None:
        return None


@needs_postgres
async def test_periodic_work_runs_on_one_replica_and_moves_when_it_dies(pg_url: str) -> None:
    dbs = [Database(pg_url) for _ in range(3)]
    await dbs[0].migrate()
    ran: list[str] = []
    stop = asyncio.Event()

    def work_of(name: str) -> Callable[[asyncio.Event], Awaitable[None]]:
        async def work(over: asyncio.Event) -> None:
            while not over.is_set():
                ran.append(name)
                await asyncio.sleep(0.05)

        return work

    leases = [DyingLeases(db, ttl=0.6, holder=f"r{n}") for n, db in enumerate(dbs)]
    tasks = {
        lease.holder: asyncio.create_task(lease.run("periodic", work_of(lease.holder), stop))
        for lease in leases
    }
    try:
        await until(lambda: len(ran) >= 5)
        first = ran[0]
        assert set(ran) == {first}
        tasks.pop(first).cancel()  # dies holding the lease
        ran.clear()
        await until(lambda: len(ran) >= 5, timeout=10)
        assert first not in ran and len(set(ran)) == 1
    finally:
        stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for db in dbs:
            await db.close()


@needs_postgres
async def test_one_replica_polls_telegram_and_another_takes_over(pg_url: str) -> None:
    """Long polling with two replicas: one calls getUpdates at a time; when it dies, the
    other polls within the lease's time and every update is stored once."""
    tg = FakeTelegram()
    await tg.start()
    chat = tg.add_chat(-100777, "Support")
    dbs = [Database(pg_url) for _ in range(2)]
    await dbs[0].migrate()
    bots = [
        Bot(tg.token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.url))) for _ in dbs
    ]
    intakes = [Intake(db, on_stored=lambda: None) for db in dbs]
    polling: set[int] = set()
    overlaps = 0
    polled: list[int] = []
    stop = asyncio.Event()

    def poller(n: int) -> Callable[[asyncio.Event], Awaitable[None]]:
        async def work(over: asyncio.Event) -> None:
            nonlocal overlaps
            overlaps += bool(polling - {n})
            polling.add(n)
            polled.append(n)
            try:
                await poll_updates(bots[n], intakes[n], over)
            finally:
                polling.discard(n)

        return work

    async def stored(n: int) -> bool:
        return await stored_count(dbs[0]) == n

    for intake in intakes:
        intake.start()
    leases = [DyingLeases(db, ttl=0.6, holder=f"r{n}") for n, db in enumerate(dbs)]
    tasks = [
        asyncio.create_task(lease.run("telegram-polling", poller(n), stop))
        for n, lease in enumerate(leases)
    ]
    try:
        for n in range(3):
            tg.updates.append(tg.user_message(chat.id, ADMIN, f"before {n}"))
        await until(lambda: bool(polled))
        leader = polled[0]
        await until(lambda: stored(3))
        tasks[leader].cancel()  # the leader dies, its lease not given back
        for n in range(3):
            tg.updates.append(tg.user_message(chat.id, ADMIN, f"after {n}"))
        await until(lambda: 1 - leader in polled, timeout=10)
        await until(lambda: stored(6))
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for intake in intakes:
            await intake.close()
        for bot in bots:
            await bot.session.close()
        for db in dbs:
            await db.close()
        await tg.stop()
    assert overlaps == 0
    assert set(polled) == {0, 1}


async def stored_count(db: Database) -> int:
    async with db.read() as s:
        n = await s.scalar(select(func.count()).select_from(InboxItem))
    return int(n or 0)


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0) -> None:
    """Until ``predicate()`` (or what it returns, awaited) is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


# --- two real processes ------------------------------------------------------------------

PAGES = {"301000000000001": -1003010001, "302000000000002": -1003020002}  # page: its group
POSTS_PER_PAGE = 5
PER_POST = 100
TG_TOKEN = "123456:REPLICAS-token"
SECRET = "replicas-app-secret"
TG_SECRET = "replicas-webhook-secret"
USER_TOKEN = "replicas-user-token"
LINE = re.compile(r"^(?:↪ )?P(\d+) U\d+: (\d+)$")


@needs_postgres
async def test_two_serve_processes_are_one_deployment(pg_url: str, tmp_path: Path) -> None:
    """Two ``serve`` processes started at once on a fresh database; 1,000 comments on 10
    posts (two Pages, each with its own Telegram group) spread over both; Telegram holding
    each group to 20 messages a minute. Each post gets one topic, every comment arrives
    once and in order, Telegram never answers 429, and staff answers handed to either
    replica (and again to the other, as a retried webhook would be) reach Facebook once."""
    graph = FakeGraph(user_token=USER_TOKEN)
    tg = FakeTelegram(token=TG_TOKEN, enforce_limits=True, group_per_min=20, global_per_sec=30)
    await graph.start()
    await tg.start()
    posts = [  # (page, post number): post numbers run over both pages
        (page, n * POSTS_PER_PAGE + p)
        for n, page in enumerate(PAGES)
        for p in range(POSTS_PER_PAGE)
    ]
    for n, (page, chat) in enumerate(PAGES.items()):
        graph.add_page(page, f"Page {n}", f"page-token-{n}")
        tg.add_chat(chat, f"Support {n}", admins={ADMIN_ID})
    for page, p in posts:
        graph.add_post(f"{page}_{p}", f"Autumn menu, part {p}", "2026-11-20T09:31:16+0000")
    env = {
        **os.environ,
        "BOT_ADMINS": f"telegram:{ADMIN_ID}",
        "DATABASE_URL": pg_url,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "INFO",
        "SECRET_KEY": "replicas-secret-key",
        "FB_APP_SECRET": SECRET,
        "FB_ACCESS_TOKEN": USER_TOKEN,
        "FB_GRAPH_URL": graph.url,
        "TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "TELEGRAM_API_URL": tg.url,
        "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
        "PUBLIC_URL": "https://pagedesk.example",
        "RATE_TELEGRAM_GROUP_PER_MIN": "20",
        "RATE_TELEGRAM_GLOBAL_PER_SEC": "30",
    }
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "TEST_POSTGRES_URL"):
        env.pop(name, None)
    servers = [Server(env, tmp_path / f"replica{n}.log") for n in range(2)]
    started = time.monotonic()
    try:
        await asyncio.gather(*(server.start() for server in servers))  # the same moment
        async with aiohttp.ClientSession() as http:

            async def telegram(server: Server, update: dict[str, Any]) -> None:
                async with http.post(
                    server.url + "/webhooks/telegram",
                    json=update,
                    headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET},
                ) as r:
                    assert r.status == 200

            for n, (page, chat) in enumerate(PAGES.items()):
                await telegram(servers[n], tg.user_message(chat, ADMIN, f"/connect {page}"))
            await until(
                lambda: all(
                    any("Connected the Page" in m.get("text", "") for m in c.messages.values())
                    for c in (tg.chats[chat] for chat in PAGES.values())
                ),
                timeout=60,
            )

            async def post_sender(page: str, p: int) -> None:
                """The comments of one post, one after the other, each to either replica."""
                for n in range(PER_POST):
                    body = json.dumps(
                        comment_delivery(
                            page, f"{page}_{p}", f"{p}_{n}", (f"u{n % 7}", f"P{p} U{n % 7}"), str(n)
                        )
                    ).encode()
                    server = servers[(n + p) % 2]
                    async with http.post(
                        server.url + "/webhooks/facebook",
                        data=body,
                        headers={
                            "Content-Type": "application/json",
                            "X-Hub-Signature-256": sign(SECRET, body),
                        },
                    ) as r:
                        assert r.status == 200

            await asyncio.gather(*(post_sender(page, p) for page, p in posts))
            total = len(posts) * PER_POST
            await until(lambda: len(seen_comments(tg)) == total, timeout=600)
            drained = time.monotonic() - started

            # staff answer in every topic, through one replica and again through the other
            answers: list[tuple[int, int]] = []
            for n, chat in enumerate(PAGES.values()):
                for i, thread in enumerate(sorted(tg.chats[chat].topics)):
                    update = tg.user_message(chat, AGENT, f"answer {n}-{i}", thread_id=thread)
                    await telegram(servers[i % 2], update)
                    await telegram(servers[(i + 1) % 2], update)
                    answers.append((chat, update["message"]["message_id"]))
            await until(
                lambda: all(mid in tg.chats[chat].reactions for chat, mid in answers),
                timeout=120,
            )
            await asyncio.sleep(1.0)  # a second answer, if any, would be on its way now
    finally:
        for server in servers:
            if server.proc is not None and server.proc.returncode is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in servers:
            await server.wait()
        await graph.stop()
        await tg.stop()

    sends = len(tg.called("sendMessage")) + len(tg.called("createForumTopic"))
    print(
        f"replicas: {total} comments on {len(posts)} posts in {drained:.1f} s, "
        f"{sends} sends to Telegram, {tg.throttled} answered 429"
    )
    assert tg.throttled == 0
    by_thread = per_thread(tg)
    assert len(by_thread) == len(posts)  # one topic per post
    for thread, comments in by_thread.items():
        assert len({p for p, _ in comments}) == 1, f"topic {thread} mixes posts"
        numbers = [n for _, n in comments]
        assert numbers == list(range(PER_POST)), f"topic {thread}: lost, twice or out of order"
    texts = [c.message for c in graph.comments]
    assert sorted(texts) == sorted(f"answer {n}-{i}" for n in range(2) for i in range(5))
    # the periodic work (catch-up, pruning) ran on one of the two
    logs = [server.log.read_text() for server in servers]
    assert sum(bool(re.search(r"lease taken .*lease='periodic'", log)) for log in logs) == 1


def per_thread(tg: FakeTelegram) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Per topic, the comments shown in it in the order shown: (post, comment number)."""
    out: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for chat in PAGES.values():
        messages = tg.chats[chat].messages
        for mid in sorted(messages):
            m = messages[mid]
            if not m.get("from", {}).get("is_bot") or "message_thread_id" not in m:
                continue
            lines = plain(m.get("text", "")).splitlines()
            if lines and DIGEST_HEAD.match(lines[0]):
                lines = lines[1:]
            for hit in map(LINE.match, lines):
                if hit:
                    out[(chat, m["message_thread_id"])].append(
                        (int(hit.group(1)), int(hit.group(2)))
                    )
    return out


def seen_comments(tg: FakeTelegram) -> set[tuple[int, int]]:
    return {c for comments in per_thread(tg).values() for c in comments}
