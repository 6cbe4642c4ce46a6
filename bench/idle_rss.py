"""Idle memory (issue 10, target 5b): a Slack-only server, a Telegram-only one and one with
both, each ``python -m bot serve`` on a fresh SQLite database against the local fakes.

    .venv/bin/python bench/idle_rss.py
    .venv/bin/python bench/idle_rss.py --settle 10 --runs 3

Each server starts (migrations included), answers ``/healthz``, and after ``--settle``
seconds idle its RSS (VmRSS), peak RSS (VmHWM) and the CPU its start took are read. A
Slack-only server never imports aiogram (tests/test_imports.py checks that).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import TG_TOKEN, USER_TOKEN, Child, TimedTelegram, base_env, cpu_seconds

from bot.emulators.graph import FakeGraph
from bot.emulators.slack import FakeSlack

SLACK_TOKEN = "xoxb-bench"
SLACK_SIGNING = "bench-signing-secret"


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def environment(
    chats: str, tg: TimedTelegram, slack: FakeSlack, graph: FakeGraph, db: Path
) -> dict[str, str]:
    env = base_env(tg, graph, db)  # Telegram only, webhook mode
    if chats == "slack":
        for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL", "TELEGRAM_WEBHOOK_SECRET"):
            env.pop(name)
        env["BOT_ADMINS"] = "slack:U1"
    if chats in ("slack", "both"):
        env.update(
            SLACK_BOT_TOKEN=SLACK_TOKEN,
            SLACK_SIGNING_SECRET=SLACK_SIGNING,
            SLACK_API_URL=slack.api_url,
        )
    return env


async def one(
    chats: str,
    run: int,
    tg: TimedTelegram,
    slack: FakeSlack,
    graph: FakeGraph,
    args: argparse.Namespace,
) -> tuple[float, float, float]:
    work = Path(args.workdir) / f"{chats}-{run}"
    work.mkdir()
    server = Child(
        [sys.executable, "-m", "bot", "serve"],
        environment(chats, tg, slack, graph, work / "idle.db"),
        work / "serve.log",
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as r:
            assert r.status == 200, r.status
        await asyncio.sleep(args.settle)
        return (
            status_mb(server.pid, "VmRSS"),
            status_mb(server.pid, "VmHWM"),
            cpu_seconds(server.pid),
        )
    finally:
        await server.stop()


async def main_async(args: argparse.Namespace) -> int:
    graph = FakeGraph(user_token=USER_TOKEN)
    tg, slack = TimedTelegram(token=TG_TOKEN), FakeSlack(token=SLACK_TOKEN)
    for fake in (graph, tg, slack):
        await fake.start()
    print(
        f"idle servers: {args.runs} run(s) each, {args.settle:g} s idle after start; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLite",
        flush=True,
    )
    try:
        for chats in ("slack", "telegram", "both"):
            runs = [await one(chats, i, tg, slack, graph, args) for i in range(args.runs)]
            rss, peak, cpu = (statistics.median(x) for x in zip(*runs, strict=True))
            print(
                f"{chats + ' only' if chats != 'both' else 'both':<14} idle RSS {rss:5.0f} MB | "
                f"peak {peak:5.0f} MB | CPU by then {cpu:4.1f} s",
                flush=True,
            )
    finally:
        for fake in (graph, tg, slack):
            await fake.stop()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading")
    ap.add_argument("--runs", type=int, default=1, help="servers of each kind (median shown)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
