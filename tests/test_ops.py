"""Health, readiness, metrics, and a graceful stop of the real `serve` process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from bot.emulators.base import runner_port
from bot.emulators.stage import Stage, comment_delivery
from bot.handlers.ops import readyz_handler
from bot.storage.db import Database
from tests.conftest import PAGE_ID


async def test_healthz_readyz_metrics(connected: Stage) -> None:
    assert connected.http is not None
    await connected.deliver_facebook(
        comment_delivery(PAGE_ID, f"{PAGE_ID}_1", "c1", ("u1", "Ann"), "hello")
    )
    await connected.settled()
    async with connected.http.get(connected.url + "/healthz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ok"})
    async with connected.http.get(connected.url + "/readyz") as r:
        assert (r.status, (await r.json())["database"]) == (200, "up")
    async with connected.http.get(connected.url + "/metrics") as r:
        body = await r.text()
    assert r.headers["Content-Type"].startswith("text/plain")
    assert 'pagedesk_deliveries_total{source="facebook"} 1.0' in body
    assert "pagedesk_tasks_opened_total 1.0" in body
    assert "pagedesk_messages_relayed_total 1.0" in body
    assert (
        "pagedesk_outbox_backlog" in body
        and "pagedesk_answers_total"
        not in body.split("# TYPE pagedesk_answers_total counter")[0][-1:]
    )


async def test_readyz_says_when_the_database_is_gone() -> None:
    # a real database that does not answer: nothing listens on port 1
    db = Database("postgresql+asyncpg://pagedesk@127.0.0.1:1/pagedesk")
    app = web.Application()
    app.router.add_get("/readyz", readyz_handler(db))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{runner_port(runner)}/readyz") as r,
        ):
            assert r.status == 503
            assert (await r.json()) == {"status": "unavailable", "database": "down"}
    finally:
        await runner.cleanup()
        await db.close()


async def test_serve_migrates_listens_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "HOST": "127.0.0.1",
        "PORT": "0",
        "FB_APP_SECRET": "s",
        "LOG_LEVEL": "INFO",
    }
    for name in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        env=env,
        cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    port = None
    lines = []
    while port is None:
        line = (await asyncio.wait_for(proc.stderr.readline(), timeout=30)).decode()
        assert line, "serve exited early: " + "".join(lines)
        lines.append(line)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        port = int(m.group(1)) if m else None
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as r:
        assert r.status == 200
    proc.send_signal(signal.SIGTERM)
    rc = await asyncio.wait_for(proc.wait(), timeout=30)
    rest = (await proc.stderr.read()).decode()
    assert rc == 0, rest
    assert "stopping: finishing work in flight" in rest
    assert (tmp_path / "serve.db").exists()
