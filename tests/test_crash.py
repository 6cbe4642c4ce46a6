"""kill -9 in the middle of a burst of 1,000 comments, then a restart: every comment reaches
staff, in order within its task; at most one duplicate message per call in flight."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

from bot.emulators.graph import FakeGraph
from bot.emulators.stage import comment_delivery
from bot.emulators.telegram import FakeTelegram
from bot.fb.signature import sign
from tests.conftest import ADMIN, ADMIN_ID, CHAT_ID, PAGE_ID, PAGE_TOKEN
from tests.helpers import DIGEST_HEAD, plain

POSTS = 5
PER_POST = 200
TG_TOKEN = "123456:CRASH-token"
SECRET = "crash-app-secret"
TG_SECRET = "crash-webhook-secret"
LINE = re.compile(r"^(?:↪ )?P(\d+) U\d+: (\d+)$")


class Server:
    """`python -m bot serve` as a child process on a port of its own choosing."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> None:
        start = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "serve",
            env=self.env,
            stdout=out,
            stderr=out,
            cwd=str(self.log.parent),
        )
        out.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[start:].decode(errors="replace")
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
                return
            assert self.proc.returncode is None, text
            await asyncio.sleep(0.05)
        raise TimeoutError("serve did not start: " + self.log.read_text())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> None:
        if self.proc is not None:
            await self.proc.wait()


async def test_kill_9_during_a_burst_loses_nothing(tmp_path: Path) -> None:
    graph, tg = FakeGraph(user_token="crash-user-token"), FakeTelegram(token=TG_TOKEN)
    await graph.start()
    await tg.start()
    graph.add_page(PAGE_ID, "Bottender Coffee", PAGE_TOKEN)
    tg.add_chat(CHAT_ID, "Support", admins={ADMIN_ID})
    env = {
        **os.environ,
        "BOT_ADMINS": f"telegram:{ADMIN_ID}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}",
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "INFO",
        "SECRET_KEY": "crash-secret-key",
        "FB_APP_SECRET": SECRET,
        "FB_ACCESS_TOKEN": "crash-user-token",
        "FB_GRAPH_URL": graph.url,
        "TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "TELEGRAM_API_URL": tg.url,
        "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
        "PUBLIC_URL": "https://pagedesk.example",
        "RATE_TELEGRAM_GROUP_PER_MIN": "1000000",
        "RATE_TELEGRAM_GLOBAL_PER_SEC": "1000000",
    }
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "TEST_POSTGRES_URL"):
        env.pop(name, None)
    server = Server(env, tmp_path / "serve.log")
    await server.start()
    acked = 0
    restarted = asyncio.Event()
    burst_underway = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as http:
            update = tg.user_message(CHAT_ID, ADMIN, f"/connect {PAGE_ID}")
            async with http.post(
                server.url + "/webhooks/telegram",
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET},
            ) as r:
                assert r.status == 200
            deadline = time.monotonic() + 30
            while not any(
                "Connected the Page" in m.get("text", "")
                for m in tg.chats[CHAT_ID].messages.values()
            ):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

            async def deliver(body: bytes) -> None:
                """As Facebook does: again and again until a 200."""
                nonlocal acked
                while True:
                    try:
                        async with http.post(
                            server.url + "/webhooks/facebook",
                            data=body,
                            headers={
                                "Content-Type": "application/json",
                                "X-Hub-Signature-256": sign(SECRET, body),
                            },
                        ) as r:
                            if r.status == 200:
                                acked += 1
                                if acked >= 300:
                                    burst_underway.set()
                                return
                    except (aiohttp.ClientError, OSError):
                        pass
                    await asyncio.sleep(0.05)

            async def post_sender(p: int) -> None:
                post = f"{PAGE_ID}_{9000 + p}"
                for n in range(PER_POST):
                    body = comment_delivery(
                        PAGE_ID, post, f"{9000 + p}_{n}", (f"u{n % 7}", f"P{p} U{n % 7}"), str(n)
                    )
                    await deliver(json.dumps(body).encode())

            async def crash_and_restart() -> None:
                await burst_underway.wait()
                server.kill()
                await server.wait()
                await server.start()
                restarted.set()

            await asyncio.gather(crash_and_restart(), *(post_sender(p) for p in range(POSTS)))
            assert restarted.is_set() and acked >= POSTS * PER_POST

            def seen() -> dict[int, list[list[tuple[int, int]]]]:
                """Per topic: its messages, each a list of (post, comment number)."""
                out: dict[int, list[list[tuple[int, int]]]] = defaultdict(list)
                chat = tg.chats[CHAT_ID]
                for mid in sorted(chat.messages):
                    m = chat.messages[mid]
                    if not m.get("from", {}).get("is_bot") or "message_thread_id" not in m:
                        continue
                    lines = plain(m.get("text", "")).splitlines()
                    if lines and DIGEST_HEAD.match(lines[0]):
                        lines = lines[1:]
                    items = [
                        (int(x.group(1)), int(x.group(2))) for x in map(LINE.match, lines) if x
                    ]
                    if items:
                        out[m["message_thread_id"]].append(items)
                return out

            deadline = time.monotonic() + 120
            while True:
                got = {c for msgs in seen().values() for msg in msgs for c in msg}
                if len(got) == POSTS * PER_POST or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
    finally:
        if server.proc is not None and server.proc.returncode is None:
            server.proc.send_signal(signal.SIGTERM)
            await server.wait()
        await graph.stop()
        await tg.stop()

    everything = {(p, n) for p in range(POSTS) for n in range(PER_POST)}
    assert got == everything, f"lost {len(everything - got)} comments"
    duplicate_messages = 0
    for thread, messages in seen().items():
        shown: set[tuple[int, int]] = set()
        order: list[tuple[int, int]] = []
        for msg in messages:
            if set(msg) <= shown:
                duplicate_messages += 1  # a call that was in flight at the kill, made again
                continue
            order.extend(c for c in msg if c not in shown)
            shown |= set(msg)
        posts = {p for p, _ in order}
        assert len(posts) == 1, f"topic {thread} mixes posts {posts}"
        numbers = [n for _, n in order]
        assert numbers == sorted(numbers), f"topic {thread} out of order"
    print(
        f"crash test: {acked} acknowledged deliveries, killed after 300, "
        f"{sum(len(m) for m in seen().values())} messages in {len(seen())} topics, "
        f"{duplicate_messages} duplicate messages"
    )
    # at most one duplicate per call in flight (the outbox runs at most 16 at once)
    assert duplicate_messages <= 16
    assert acked >= POSTS * PER_POST
