"""Steady load (issue 10, target 2): comments at a fixed rate, open-loop, to the real
``python -m bot serve`` against the fake Telegram, set up as bench/e2e.py does it.

    .venv/bin/python bench/steady.py                        # 100 comments/s for 30 s, 50 posts
    .venv/bin/python bench/steady.py --rate 20 --duration 10
    .venv/bin/python bench/steady.py --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/b

Open-loop: delivery i is sent at start + i/rate by the clock, whether or not earlier ones
were answered (as Facebook does), each on its own connection when it needs one. Latency is
from a delivery's 200 to the fake Telegram answering the sendMessage (or edit) that shows
it. The server kept up when the chat was within a second of the last send. The generator
shares the machine with the server: sends it started 100 ms or more late are counted and
printed (each goes out with the next ones: the load came in bursts, never lighter), and
do not decide the verdict. Target: p99 < 250 ms at 100/s, kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

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
    delivery,
    post_signed,
    postgres_cpu_seconds,
    prepare,
    reset_postgres,
    server_env,
    wait_shown,
    while_alive,
)

from bot.emulators.graph import FakeGraph

KEPT_UP = 1.0  # seconds: the chat this far behind the last send means a backlog built up
LATE = 0.1  # seconds: a send the generator started this late is counted


def percentile(values: list[float], q: float) -> float:
    """Nearest rank, as bench/e2e.py reports p99."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def open_loop(
    http: aiohttp.ClientSession, url: str, rate: float, count: int, posts: int
) -> tuple[dict[int, float], dict[int, float], list[float], int]:
    """Send ``count`` deliveries at ``rate`` a second by the clock. Returns when each was sent
    and when its 200 came, how late each send started, and how many were re-sent after an
    answer other than 200."""
    bodies = [delivery(i % posts, i) for i in range(count)]
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    retries = 0

    async def send(number: int, body: bytes) -> None:
        nonlocal retries
        sent[number] = time.monotonic()
        retries += await post_signed(http, url, body)
        acked[number] = time.monotonic()

    start = time.monotonic()
    late: list[float] = []
    tasks = []
    for i, body in enumerate(bodies):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        late.append(time.monotonic() - due)
        tasks.append(asyncio.create_task(send(i, body)))
    await asyncio.gather(*tasks)
    return sent, acked, late, retries


async def run(args: argparse.Namespace) -> int:
    count = int(args.rate * args.duration)
    graph, tg = FakeGraph(user_token=USER_TOKEN), TimedTelegram(token=TG_TOKEN)
    await graph.start()
    await tg.start()
    graph.add_page(PAGE, "Bench Page", PAGE_TOKEN)
    tg.add_chat(CHAT, "Bench", admins={ADMIN_ID})
    print(
        f"load:      {count} comments at {args.rate:g}/s for {args.duration:g} s on {args.posts} "
        f"open posts, open-loop; {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{'PostgreSQL' if args.postgres else 'SQLite'}",
        flush=True,
    )
    if args.postgres:
        await reset_postgres(args.postgres)
    server = Child(
        [sys.executable, "-m", "bot", "serve"],
        server_env(tg, graph, args, "steady"),
        Path(args.workdir) / "serve.log",
    )
    try:
        # a connection per delivery in flight: the generator never waits for a free one
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await server.start()
            await prepare(server, tg, http, args)
            await asyncio.sleep(1.0)  # the opening's last jobs settle
            cpu0, pg0, t0 = cpu_seconds(server.pid), postgres_cpu_seconds(), time.monotonic()
            sent, acked, late, retries = await while_alive(
                server, open_loop(http, server.url, args.rate, count, args.posts)
            )
            last_sent = max(sent.values())
            ok = await while_alive(server, wait_shown(tg, list(range(count)), args.timeout))
            t1, cpu1, pg1 = time.monotonic(), cpu_seconds(server.pid), postgres_cpu_seconds()
    finally:
        await server.stop()
        await graph.stop()
        await tg.stop()
    if not ok:
        missing = sum(1 for n in range(count) if n not in tg.shown)
        print(f"NOT DRAINED: {missing} comments not in the chat after {args.timeout} s")
        return 1
    to_chat = [max(0.0, tg.shown[n] - acked[n]) * 1000 for n in range(count)]
    to_ack = [(acked[n] - sent[n]) * 1000 for n in range(count)]
    behind = max(tg.shown.values()) - last_sent
    print(
        f"sent:      {count} in {last_sent - t0:.2f} s ({(count - 1) / (last_sent - t0):.1f}/s); "
        f"latest send {max(late) * 1000:.1f} ms behind its time, "
        f"{sum(1 for x in late if x >= LATE)} more than {LATE * 1000:.0f} ms; {retries} re-sent"
    )
    print(
        f"200:       p50 {percentile(to_ack, 0.5):7.1f} ms  p99 {percentile(to_ack, 0.99):7.1f} ms"
        " (send → 200)"
    )
    print(
        f"200→chat:  p50 {percentile(to_chat, 0.5):7.1f} ms  p95 {percentile(to_chat, 0.95):7.1f}"
        f" ms  p99 {percentile(to_chat, 0.99):7.1f} ms  max {max(to_chat):7.1f} ms"
    )
    print(
        f"drained:   the last comment in the chat {behind:.2f} s after the last send "
        f"({count / (t1 - t0):.0f}/s over the run)"
    )
    cpu = cpu1 - cpu0
    print(
        f"server:    CPU {cpu * 1000 / count:.2f} ms/comment, {cpu / (t1 - t0) * 100:.0f} % of "
        "one core over the run"
    )
    if args.postgres:
        print(
            f"postgres:  CPU {(pg1 - pg0) * 1000 / count:.2f} ms/comment (every postgres process)"
        )
    third = max(1, count // 3)
    first, last = to_chat[:third], to_chat[-third:]
    kept_up = behind < KEPT_UP
    p99 = percentile(to_chat, 0.99)
    print(
        f"kept up:   {'yes' if kept_up else 'no'} (the chat within {KEPT_UP:g} s of the last send);"
        f" 200→chat p50 of the first third {percentile(first, 0.5):.0f} ms, "
        f"of the last third {percentile(last, 0.5):.0f} ms"
    )
    if max(late) >= LATE:
        # the generator shares the machine: a late send goes out with the next ones, so
        # the load was burstier than planned, never lighter
        print(
            f"generator: {sum(1 for x in late if x >= LATE)} sends started {LATE * 1000:.0f} ms "
            f"or more late (the load came in bursts, none lighter than {args.rate:g}/s)"
        )
    print(f"target:    p99 < 250 ms at 100/s: {'met' if p99 < 250 and kept_up else 'not met'}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0, help="comments a second")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--posts", type=int, default=50)
    ap.add_argument("--senders", type=int, default=16, help="for opening the tasks")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to drain")
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
