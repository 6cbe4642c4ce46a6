"""Growth (issue 10, targets 4 and 5a): the cost of a comment with 1,000, 100,000 and
1,000,000 tasks stored, and how much the server's memory grows from idle to the end of
the load.

    .venv/bin/python bench/growth.py                          # 1k, 100k, 1M tasks; 1,000 comments
    .venv/bin/python bench/growth.py --sizes 1000,100000 --comments 600
    .venv/bin/python bench/growth.py --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/b

For each size, on a fresh database: ``python -m bot serve`` starts (and migrates), the
operator connects the Page and the 50 tasks are opened as in bench/e2e.py; the server stops;
the database is filled with that many closed tasks of the same Page and chat, each on a post
of its own (stored in ``posts``), with one relayed customer comment each (``messages``) and a
contact for every ten (``contacts``), written with SQLAlchemy Core in batches (PostgreSQL is
then ANALYZEd, as autovacuum would have by then; SQLite gets no statistics, as in use). The
server starts again on the filled database; once it is idle (what it does at start in the
background, such as the catch-up of the open tasks' posts, grows with the tables too) its
RSS is read, then the e2e load runs (``--comments`` on the 50 open posts, 16 senders) and
its RSS is read again at the end. RSS counts the pages of SQLite's file mapping the server
touched (``mmap_size``), which come and go with the kernel's page cache: the anonymous part
(``RssAnon``, the server's own memory) is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import (
    ADMIN_ID,
    CHAT,
    PAGE,
    PAGE_TOKEN,
    TG_TOKEN,
    USER_TOKEN,
    Child,
    TimedTelegram,
    cpu_seconds,
    measure,
    postgres_cpu_seconds,
    prepare,
    reset_postgres,
    server_env,
    while_alive,
)
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.emulators.graph import FakeGraph
from bot.storage.models import Contact, Message, Post, Task

BATCH = 20_000


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_idle(pid: int, at_least: float, postgres: bool, limit: float = 300.0) -> float:
    """Wait until the server (and with ``postgres``, the database) has been idle, under 5 %
    of a core, for a whole second, and ``at_least`` seconds in all: what the server does at
    start in the background (the catch-up of the open tasks' posts, pruning) grows with the
    tables, and is not a comment's cost. Returns the seconds waited."""

    def busy() -> float:
        return cpu_seconds(pid) + (postgres_cpu_seconds() if postgres else 0.0)

    started = time.monotonic()
    while True:
        before = busy()
        await asyncio.sleep(1.0)
        waited = time.monotonic() - started
        if (busy() - before < 0.05 and waited >= at_least) or waited > limit:
            return waited


async def next_id(conn: AsyncConnection, column: Any) -> int:
    return int((await conn.scalar(select(func.coalesce(func.max(column), 0)))) or 0) + 1


async def insert_batches(conn: AsyncConnection, table: Any, rows: Any) -> None:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            await conn.execute(insert(table), batch)
            batch = []
    if batch:
        await conn.execute(insert(table), batch)


async def fill(url: str, n: int) -> None:
    """``n`` closed tasks with their posts and one comment each, and n/10 contacts."""
    engine = create_async_engine(url)
    if url.startswith("sqlite"):

        def fast(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=OFF")  # a benchmark's fill: nothing to lose
            cur.close()

        event.listen(engine.sync_engine, "connect", fast)
    now = datetime.now(UTC)
    contacts = max(1, n // 10)
    async with engine.begin() as conn:
        c0 = await next_id(conn, Contact.id)
        t0 = await next_id(conn, Task.id)
        m0 = await next_id(conn, Message.id)
        await insert_batches(
            conn,
            Contact.__table__,
            (
                {
                    "id": c0 + i,
                    "fb_id": f"fill-u{i}",
                    "name": f"Stored Customer {i}",
                    "picture_url": None,
                    "merged_into_id": None,
                    "fields": {},
                    "created_at": now - timedelta(days=400),
                }
                for i in range(contacts)
            ),
        )

        def when(i: int) -> datetime:
            return now - timedelta(days=365) + timedelta(seconds=i * 30)

        await insert_batches(
            conn,
            Post.__table__,
            (
                {
                    "id": f"{PAGE}_fill{i}",
                    "page_id": PAGE,
                    "message": f"A stored post, number {i}, with a few words of text.",
                    "permalink_url": f"https://www.facebook.com/{PAGE}/posts/fill{i}",
                    "created_time": when(i),
                    "fetch_error": None,
                }
                for i in range(n)
            ),
        )
        await insert_batches(
            conn,
            Task.__table__,
            (
                {
                    "id": t0 + i,
                    "page_id": PAGE,
                    "channel": "comments",
                    "post_id": f"{PAGE}_fill{i}",
                    "contact_id": c0 + i % contacts,
                    "status": "closed",
                    "title": f"Stored post {i} · Stored Customer {i % contacts}",
                    "root_text": f"A stored post, number {i}, with a few words of text.",
                    "additional_data": f"post: https://www.facebook.com/{PAGE}/posts/fill{i}",
                    "assignees": [],
                    "tags": [],
                    "chat_platform": "telegram",
                    "chat_id": str(CHAT),
                    "thread_id": str(1_000_000 + i),
                    "root_message_id": str(2_000_000 + i),
                    "merged_into_id": None,
                    "created_at": when(i),
                    "closed_at": when(i) + timedelta(hours=1),
                }
                for i in range(n)
            ),
        )
        await insert_batches(
            conn,
            Message.__table__,
            (
                {
                    "id": m0 + i,
                    "task_id": t0 + i,
                    "direction": "customer",
                    "fb_id": f"fill{i}_c",
                    "fb_parent_id": None,
                    "fb_post_id": f"{PAGE}_fill{i}",
                    "author_fb_id": f"fill-u{i % contacts}",
                    "author_name": f"Stored Customer {i % contacts}",
                    "staff_user_id": None,
                    "text": f"A stored comment, number {i}.",
                    "answers_message_id": None,
                    "moderation": None,
                    "moderated_by": None,
                    "liked": False,
                    "chat_message_id": str(3_000_000 + i),
                    "state": "relayed",
                    "fb_status": None,
                    "error": None,
                    "created_at": when(i) + timedelta(minutes=1),
                    "media": None,
                }
                for i in range(n)
            ),
        )
        if not url.startswith("sqlite"):
            # ids given explicitly: move the sequences past them
            for table in ("contacts", "tasks", "messages"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    if url.startswith("sqlite"):
        async with engine.connect() as conn:
            await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    else:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))
    await engine.dispose()


async def one_size(n: int, args: argparse.Namespace) -> dict[str, float]:
    work = Path(args.workdir) / f"n{n}"
    work.mkdir()
    graph, tg = FakeGraph(user_token=USER_TOKEN), TimedTelegram(token=TG_TOKEN)
    await graph.start()
    await tg.start()
    graph.add_page(PAGE, "Bench Page", PAGE_TOKEN)
    tg.add_chat(CHAT, "Bench", admins={ADMIN_ID})
    if args.postgres:
        await reset_postgres(args.postgres)
    sized = argparse.Namespace(**{**vars(args), "workdir": str(work)})
    env = server_env(tg, graph, sized, "growth")
    url = env["DATABASE_URL"]
    out: dict[str, float] = {"tasks": n}
    try:
        connector = aiohttp.TCPConnector(limit=args.senders * 2)
        async with aiohttp.ClientSession(connector=connector) as http:
            first = Child([sys.executable, "-m", "bot", "serve"], env, work / "serve-1.log")
            await first.start()
            try:
                await prepare(first, tg, http, args)
            finally:
                await first.stop()
            started = time.monotonic()
            await fill(url, n)
            out["fill_s"] = time.monotonic() - started
            if url.startswith("sqlite"):
                db = Path(url.split("///", 1)[1])
                size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
                out["db_mb"] = size / 1e6
            print(
                f"filled:    {n} tasks, {n} posts, {n} messages, {max(1, n // 10)} contacts in "
                f"{out['fill_s']:.1f} s" + (f" ({out['db_mb']:.0f} MB)" if "db_mb" in out else ""),
                flush=True,
            )
            server = Child([sys.executable, "-m", "bot", "serve"], env, work / "serve-2.log")
            await server.start()
            try:
                out["settle_s"] = await wait_idle(server.pid, args.settle, bool(args.postgres))
                out["start_cpu_s"] = cpu_seconds(server.pid)
                out["idle_mb"] = rss_mb(server.pid)
                out["idle_anon"] = rss_mb(server.pid, "RssAnon")
                pg0 = postgres_cpu_seconds()
                result = await while_alive(
                    server, measure(f"{n} tasks", server, tg, http, args, first=0)
                )
                out["pg_ms"] = (postgres_cpu_seconds() - pg0) * 1000 / args.comments
                out.update(result)
                out["end_mb"] = rss_mb(server.pid)
                out["end_anon"] = rss_mb(server.pid, "RssAnon")
                out["peak_mb"] = rss_mb(server.pid, "VmHWM")
            finally:
                await server.stop()
    finally:
        await graph.stop()
        await tg.stop()
    print(
        f"memory:    idle {out['idle_mb']:.0f} MB → end {out['end_mb']:.0f} MB "
        f"({out['end_mb'] - out['idle_mb']:+.0f} MB; peak {out['peak_mb']:.0f} MB; anonymous "
        f"{out['idle_anon']:.0f} → {out['end_anon']:.0f} MB); "
        f"start took {out['start_cpu_s']:.1f} s of CPU, idle after {out['settle_s']:.0f} s",
        flush=True,
    )
    return out


async def run(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"load:      {args.comments} comments on {args.posts} open posts, {args.senders} senders, "
        f"after {', '.join(f'{s:,}' for s in sizes)} stored tasks; {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, {'PostgreSQL' if args.postgres else 'SQLite'}",
        flush=True,
    )
    results = [await one_size(n, args) for n in sizes]
    base = results[0]["cpu_ms"]
    print()
    pg = " | postgres CPU" if args.postgres else ""
    print(
        "stored tasks | CPU/comment | vs first | drained | p99 200→chat | idle → end RSS"
        f" | of it anonymous{pg}"
    )
    for r in results:
        line = (
            f"{int(r['tasks']):>12,} | {r['cpu_ms']:8.2f} ms | "
            f"{r['cpu_ms'] / base * 100 - 100:+6.0f} %"
            f" | {r['rate']:5.0f}/s | {r['p99'] / 1000:9.1f} s | {r['idle_mb']:.0f} → "
            f"{r['end_mb']:.0f} MB ({r['end_mb'] - r['idle_mb']:+.0f})"
            f" | {r['idle_anon']:.0f} → {r['end_anon']:.0f} MB "
            f"({r['end_anon'] - r['idle_anon']:+.0f})"
        )
        if args.postgres:
            line += f" | {r['pg_ms']:.2f} ms"
        print(line)
    flat = all(r["cpu_ms"] <= base * 1.2 for r in results)
    print(
        "\ntarget 4:  CPU per comment within 20 % of the smallest size: "
        + ("met" if flat else "not met")
    )
    hundred = [r for r in results if r["tasks"] == 100_000]
    if hundred:
        grew = hundred[0]["end_mb"] - hundred[0]["idle_mb"]
        anon = hundred[0]["end_anon"] - hundred[0]["idle_anon"]
        print(
            f"target 5a: RSS growth with 100,000 tasks {grew:.0f} MB (< 30 MB): "
            f"{'met' if grew < 30 else 'not met'}; anonymous memory {anon:+.0f} MB"
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000,1000000", help="stored tasks, comma list")
    ap.add_argument("--comments", type=int, default=1000)
    ap.add_argument("--posts", type=int, default=50)
    ap.add_argument("--senders", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument(
        "--settle", type=float, default=3.0, help="at least this many seconds before the load"
    )
    ap.add_argument(
        "--postgres",
        metavar="URL",
        help="serve on this PostgreSQL database (postgresql+asyncpg://…), emptied first",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
