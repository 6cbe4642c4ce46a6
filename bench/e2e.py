"""End-to-end benchmark: signed comment deliveries to a real ``python -m bot serve`` (SQLite,
rate limits raised out of the way) against a local fake Telegram with no limits, and the
same load through a minimal forwarder that stores nothing.

    .venv/bin/python bench/e2e.py                      # 3,000 comments on 50 posts, 16 senders
    .venv/bin/python bench/e2e.py --comments 600       # a quicker run
    .venv/bin/python bench/e2e.py --skip-forwarder     # the server only

The 50 tasks are opened first (one comment per post, each seen in its topic); then the
measured comments go out, 16 at a time. CPU is the server process's own user+system time
from /proc/<pid>/stat, from the first measured delivery to the moment the last comment is
in the chat, so this script (load generator and fakes) does not count. Latency is from the
delivery's 200 to the fake Telegram answering the sendMessage that shows it.

The forwarder (``--forwarder``, run by this script as a process of its own) does the
visible work and nothing else: verify the signature, parse, one sendMessage through aiogram.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.emulators.graph import FakeGraph
from bot.emulators.stage import comment_delivery
from bot.emulators.telegram import FakeTelegram
from bot.fb.signature import sign, verify

PAGE = "137542570280111"
PAGE_TOKEN = "bench-page-token"
USER_TOKEN = "bench-user-token"
CHAT = -1002271335705
ADMIN_ID = 1
ADMIN = {"id": ADMIN_ID, "is_bot": False, "first_name": "Admin"}
TG_TOKEN = "123456:BENCH-token"
SECRET = "bench-app-secret"
TG_SECRET = "bench-webhook-secret"
MARK = re.compile(r"\bm(\d+)x\b")  # each comment's text: m<number>x
TICKS = os.sysconf("SC_CLK_TCK")
SCRIPT = str(Path(__file__).resolve())
T = TypeVar("T")


def cpu_seconds(pid: int) -> float:
    """user + system time of one process (not its children), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def postgres_cpu_seconds() -> float:
    """user + system time of every process named ``postgres`` on this machine (``--postgres``:
    the database's share of a comment's cost, which the server's own CPU leaves out)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue  # gone since the listing
        if head.endswith("(postgres"):
            fields = tail.split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class TimedTelegram(FakeTelegram):
    """The fake Telegram, noting when each comment's text was first sent."""

    def __init__(self, token: str) -> None:
        super().__init__(token=token)
        self.shown: dict[int, float] = {}
        self.showing = 0  # sendMessage and editMessageText calls that showed a comment

    def _note(self, params: dict[str, Any]) -> None:
        now = time.monotonic()
        hits = MARK.findall(str(params.get("text") or ""))
        if hits:
            self.showing += 1
        for n in hits:
            self.shown.setdefault(int(n), now)

    async def m_sendMessage(self, params: dict[str, Any]) -> Any:
        out = await super().m_sendMessage(params)
        self._note(params)
        return out

    async def m_editMessageText(self, params: dict[str, Any]) -> Any:
        out = await super().m_editMessageText(params)
        self._note(params)
        return out


class Child:
    """A process of its own that logs ``listening on 127.0.0.1:<port>``."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, stdout=out, stderr=out, cwd=str(self.log.parent)
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            hit = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            if hit:
                self.url = f"http://127.0.0.1:{hit.group(1)}"
                return
            if self.proc.returncode is not None:
                raise RuntimeError(f"{self.argv} exited: {text}")
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.argv} did not start: {self.log.read_text()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def while_alive(server: Child, work: Coroutine[Any, Any, T]) -> T:
    """``work``, unless the server process exits first: then the run stops at once with the
    end of its log, instead of waiting out the timeout for comments that will never come."""
    assert server.proc is not None
    job, died = asyncio.ensure_future(work), asyncio.ensure_future(server.proc.wait())
    await asyncio.wait({job, died}, return_when=asyncio.FIRST_COMPLETED)
    if job.done():
        died.cancel()
        return job.result()
    job.cancel()
    tail = "\n".join(server.log.read_text(errors="replace").splitlines()[-30:])
    raise SystemExit(f"the server exited ({died.result()}) during the run; its log ends:\n{tail}")


def delivery(post: int, number: int) -> bytes:
    body = comment_delivery(
        PAGE,
        f"{PAGE}_{post}",
        f"{post}_{number}",
        (f"u{number % 97}", f"User {number % 97}"),
        f"m{number}x",
    )
    return json.dumps(body).encode()


async def post_signed(http: aiohttp.ClientSession, url: str, body: bytes) -> int:
    """POST one signed delivery until it is answered 200; the tries it took after the
    first."""
    retries = 0
    while True:
        async with http.post(
            url + "/webhooks/facebook",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": sign(SECRET, body),
            },
        ) as r:
            await r.read()
            if r.status == 200:
                return retries
        retries += 1
        await asyncio.sleep(0.05)


async def serve_until_signalled(app: web.Application) -> None:
    """Serve ``app`` on a free port (printed for the parent) until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on 127.0.0.1:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


async def post_all(
    http: aiohttp.ClientSession, url: str, bodies: list[tuple[int, bytes]], senders: int
) -> dict[int, float]:
    """Send every delivery, ``senders`` at a time; when each one's 200 came."""
    acked: dict[int, float] = {}
    todo = list(reversed(bodies))

    async def sender() -> None:
        while todo:
            number, body = todo.pop()
            await post_signed(http, url, body)
            acked[number] = time.monotonic()

    await asyncio.gather(*(sender() for _ in range(senders)))
    return acked


async def wait_shown(tg: TimedTelegram, numbers: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(n in tg.shown for n in numbers):
            return True
        await asyncio.sleep(0.01)
    return False


async def measure(
    name: str,
    child: Child,
    tg: TimedTelegram,
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
    first: int,
) -> dict[str, float]:
    """The measured load: ``args.comments`` deliveries spread over the posts."""
    bodies = [(first + i, delivery(i % args.posts, first + i)) for i in range(args.comments)]
    numbers = [n for n, _ in bodies]
    cpu0, t0, calls0 = cpu_seconds(child.pid), time.monotonic(), tg.showing
    send = asyncio.create_task(post_all(http, child.url, bodies, args.senders))
    ok = await wait_shown(tg, numbers, args.timeout)
    t1, cpu1 = time.monotonic(), cpu_seconds(child.pid)
    acked = await send
    if not ok:
        missing = sum(1 for n in numbers if n not in tg.shown)
        raise SystemExit(f"{name}: {missing} comments not in the chat after {args.timeout} s")
    lat = sorted(
        max(0.0, tg.shown[n] - acked[n]) * 1000 for n in numbers
    )  # forwarder: sent before its 200
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    out = {
        "cpu_ms": (cpu1 - cpu0) * 1000 / args.comments,
        "drain_s": t1 - t0,
        "rate": args.comments / (t1 - t0),
        "intake_s": max(acked.values()) - t0,
        "p50": statistics.median(lat),
        "p99": p99,
        "rss": peak_rss_mb(child.pid),
        "calls": tg.showing - calls0,
    }
    print(
        f"{name:<10} CPU {out['cpu_ms']:6.2f} ms/comment | drained {args.comments} in "
        f"{out['drain_s']:6.2f} s ({out['rate']:5.0f}/s; all 200 after {out['intake_s']:.2f} s)"
        f" | 200→chat p50 {out['p50']:7.1f} ms p99 {out['p99']:7.1f} ms"
        f" | peak RSS {out['rss']:4.0f} MB | {out['calls']:.0f} chat messages",
        flush=True,
    )
    return out


def base_env(tg: TimedTelegram, graph: FakeGraph, db: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "BOT_ADMINS": f"telegram:{ADMIN_ID}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "INFO",
        "SECRET_KEY": "bench-secret-key",
        "FB_APP_SECRET": SECRET,
        "FB_ACCESS_TOKEN": USER_TOKEN,
        "FB_GRAPH_URL": graph.url,
        "TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "TELEGRAM_API_URL": tg.url,
        "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
        "PUBLIC_URL": "https://pagedesk.example",
        "RATE_TELEGRAM_GROUP_PER_MIN": "1000000",
        "RATE_TELEGRAM_GLOBAL_PER_SEC": "1000000",
        "RATE_FB_PAGE_PER_MIN": "1000000",
        "BENCH_CHAT_ID": str(CHAT),
    }
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        env.pop(name, None)
    return env


def server_env(
    tg: TimedTelegram, graph: FakeGraph, args: argparse.Namespace, name: str = "e2e"
) -> dict[str, str]:
    """The serve process's environment: SQLite in the work directory, or ``--postgres``."""
    env = base_env(tg, graph, Path(args.workdir) / f"{name}.db")
    if getattr(args, "postgres", None):
        env["DATABASE_URL"] = args.postgres
    return env


async def reset_postgres(url: str) -> None:
    """Empty the database (``--postgres``): every run starts from no schema, as SQLite's
    fresh file does."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


async def prepare(
    server: Child, tg: TimedTelegram, http: aiohttp.ClientSession, args: argparse.Namespace
) -> None:
    """The operator connects the Page; then the tasks, open before the measured load: one
    comment per post, each in its topic."""
    update = tg.user_message(CHAT, ADMIN, f"/connect {PAGE}")
    async with http.post(
        server.url + "/webhooks/telegram",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET},
    ) as r:
        assert r.status == 200, r.status
    deadline = time.monotonic() + 30
    while not any(
        "Connected the Page" in m.get("text", "") for m in tg.chats[CHAT].messages.values()
    ):
        assert time.monotonic() < deadline, "/connect did not answer"
        await asyncio.sleep(0.05)
    opening = [(10_000_000 + p, delivery(p, 10_000_000 + p)) for p in range(args.posts)]
    await post_all(http, server.url, opening, args.senders)
    assert await wait_shown(tg, [n for n, _ in opening], 120), "tasks did not open"
    topics = len(tg.chats[CHAT].topics)
    print(f"opened:    {topics} topics for {args.posts} posts", flush=True)


async def bench_server(
    tg: TimedTelegram, graph: FakeGraph, http: aiohttp.ClientSession, args: argparse.Namespace
) -> dict[str, float]:
    tmp = Path(args.workdir)
    if args.postgres:
        await reset_postgres(args.postgres)
    server = Child(
        [sys.executable, "-m", "bot", "serve"], server_env(tg, graph, args), tmp / "serve.log"
    )
    await server.start()
    try:
        await prepare(server, tg, http, args)
        if args.profile:
            spy = await asyncio.create_subprocess_exec(
                args.py_spy,
                "record",
                "--pid",
                str(server.pid),
                "--format",
                {".json": "speedscope", ".txt": "raw"}.get(Path(args.profile).suffix, "flamegraph"),
                "--output",
                args.profile,
                "--rate",
                "200",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)
        pg0 = postgres_cpu_seconds()
        result = await measure("server", server, tg, http, args, first=0)
        if args.postgres:
            pg_ms = (postgres_cpu_seconds() - pg0) * 1000 / args.comments
            print(f"postgres   CPU {pg_ms:6.2f} ms/comment (every postgres process)", flush=True)
        if args.profile:
            spy.send_signal(signal.SIGINT)
            await spy.wait()
        return result
    finally:
        await server.stop()


async def bench_forwarder(
    tg: TimedTelegram, graph: FakeGraph, http: aiohttp.ClientSession, args: argparse.Namespace
) -> dict[str, float]:
    tmp = Path(args.workdir)
    fwd = Child(
        [sys.executable, SCRIPT, "--forwarder"],
        base_env(tg, graph, tmp / "unused.db"),
        tmp / "forwarder.log",
    )
    await fwd.start()
    try:
        return await measure("forwarder", fwd, tg, http, args, first=1_000_000)
    finally:
        await fwd.stop()


async def run(args: argparse.Namespace) -> int:
    graph, tg = FakeGraph(user_token=USER_TOKEN), TimedTelegram(token=TG_TOKEN)
    await graph.start()
    await tg.start()
    graph.add_page(PAGE, "Bench Page", PAGE_TOKEN)
    tg.add_chat(CHAT, "Bench", admins={ADMIN_ID})
    print(
        f"load:      {args.comments} comments on {args.posts} posts, {args.senders} senders; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        flush=True,
    )
    if args.postgres:
        print("database:  PostgreSQL (--postgres), emptied first", flush=True)
    try:
        connector = aiohttp.TCPConnector(limit=args.senders * 2)
        async with aiohttp.ClientSession(connector=connector) as http:
            server = await bench_server(tg, graph, http, args)
            if args.skip_forwarder:
                return 0
            fwd = await bench_forwarder(tg, graph, http, args)
    finally:
        await graph.stop()
        await tg.stop()
    print(
        f"ratio:     {server['cpu_ms'] / fwd['cpu_ms']:.1f}× the forwarder's CPU per comment "
        f"(target ≤ 8); server drained {server['rate']:.0f}/s (target ≥ 300)"
    )
    return 0


# --- the minimal forwarder, a process of its own ----------------------------------------


async def forwarder() -> None:
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    secret = os.environ["FB_APP_SECRET"]
    chat = int(os.environ["BENCH_CHAT_ID"])
    session = AiohttpSession(api=TelegramAPIServer.from_base(os.environ["TELEGRAM_API_URL"]))
    bot = Bot(os.environ["TELEGRAM_BOT_TOKEN"], session=session)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(secret, body, request.headers.get("X-Hub-Signature-256")):
            return web.Response(status=403)
        for entry in json.loads(body).get("entry", []):
            for change in entry.get("changes", []):
                v = change.get("value", {})
                who = v.get("from", {}).get("name", "")
                await bot.send_message(chat, f"{who}: {v.get('message', '')}")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhooks/facebook", handle)
    await serve_until_signalled(app)
    await bot.session.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--comments", type=int, default=3000)
    ap.add_argument("--posts", type=int, default=50)
    ap.add_argument("--senders", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--skip-forwarder", action="store_true")
    ap.add_argument("--profile", help="py-spy the server during the load into this file")
    ap.add_argument("--py-spy", default="py-spy", help="the py-spy executable")
    ap.add_argument(
        "--postgres",
        metavar="URL",
        help="serve on this PostgreSQL database (postgresql+asyncpg://…), emptied first",
    )
    ap.add_argument("--forwarder", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.forwarder:
        asyncio.run(forwarder())
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
