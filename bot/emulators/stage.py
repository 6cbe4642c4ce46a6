"""The real server between local emulators, all in one event loop, all on port 0.

Used by ``python -m bot demo`` and by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import func, select

from bot.app import COMPONENTS, Components, create_app
from bot.config import Settings, load_settings
from bot.emulators.base import runner_port
from bot.emulators.graph import FakeGraph
from bot.emulators.slack import FakeSlack
from bot.emulators.telegram import FakeTelegram
from bot.fb.signature import sign

APP_SECRET = "demo-app-secret"
VERIFY_TOKEN = "demo-verify-token"
TG_SECRET = "demo-webhook-secret"
TG_TOKEN = "123456:DEMO-token"
USER_TOKEN = "demo-user-token"
SLACK_TOKEN = "xoxb-demo-token"
SLACK_SIGNING_SECRET = "demo-slack-signing-secret"
# The demo's operator: listed in BOT_ADMINS, so only this Telegram user binds Pages.
OPERATOR_TELEGRAM_ID = 1998627310


class Stage:
    def __init__(self, database_url: str, *, call_timeout: float = 2.0, **overrides: Any) -> None:
        self.database_url = database_url
        self.call_timeout = call_timeout
        # the app's own address as PUBLIC_URL (a browser follows the links it makes)
        self.public_url_is_self = bool(overrides.pop("public_url_is_self", False))
        self.overrides = overrides
        self.graph = FakeGraph(user_token=USER_TOKEN, app_secret=APP_SECRET)
        self.telegram = FakeTelegram(token=TG_TOKEN, **overrides.pop("telegram_options", {}))
        self.slack = FakeSlack(token=SLACK_TOKEN, **overrides.pop("slack_options", {}))
        self.app: web.Application | None = None
        self.runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = ""
        self.settings: Settings | None = None

    @property
    def c(self) -> Components:
        assert self.app is not None
        return self.app[COMPONENTS]

    async def start(self) -> Stage:
        await self.graph.start()
        await self.telegram.start()
        await self.slack.start()
        self.http = aiohttp.ClientSession()
        await self.start_app(call_timeout=self.call_timeout)
        return self

    async def start_app(
        self, *, outbox_base_delay: float = 0.05, call_timeout: float = 2.0
    ) -> None:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "public_url": "https://pagedesk.example",
            "secret_key": "demo-secret-key",
            "fb_app_secret": APP_SECRET,
            "fb_verify_token": VERIFY_TOKEN,
            "fb_access_token": USER_TOKEN,
            "bot_admins": f"telegram:{OPERATOR_TELEGRAM_ID}",
            "fb_graph_url": self.graph.url,
            "fb_login_url": self.graph.url,  # the fake serves Facebook Login's dialog too
            "telegram_bot_token": TG_TOKEN,
            "telegram_api_url": self.telegram.url,
            "telegram_webhook_secret": TG_SECRET,
            "slack_bot_token": SLACK_TOKEN,
            "slack_signing_secret": SLACK_SIGNING_SECRET,
            "slack_api_url": self.slack.api_url,
            "rate_telegram_group_per_min": 100_000,
            "rate_telegram_global_per_sec": 100_000,
            "rate_fb_page_per_min": 100_000,
            "rate_slack_channel_per_sec": 100_000,
        }
        values.update(self.overrides)
        listen: socket.socket | None = None
        if self.public_url_is_self:
            listen = socket.socket()
            listen.bind(("127.0.0.1", 0))
            values["public_url"] = f"http://127.0.0.1:{listen.getsockname()[1]}"
        self.settings = load_settings(**values)
        self.app = create_app(
            self.settings, outbox_base_delay=outbox_base_delay, call_timeout=call_timeout
        )
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site: web.BaseSite = (
            web.SockSite(self.runner, listen)
            if listen is not None
            else web.TCPSite(self.runner, "127.0.0.1", 0)
        )
        await site.start()
        port = runner_port(self.runner)
        self.url = f"http://127.0.0.1:{port}"

    async def stop_app(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def stop(self) -> None:
        await self.stop_app()
        if self.http is not None:
            await self.http.close()
        await self.graph.stop()
        await self.telegram.stop()
        await self.slack.stop()

    # --- sending things in -------------------------------------------------------------

    async def deliver_facebook(
        self,
        body: Any,
        *,
        signed: bool = True,
        secret: str = APP_SECRET,
        content_type: str = "application/json",
    ) -> aiohttp.ClientResponse:
        assert self.http is not None
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        if signed:
            headers["X-Hub-Signature-256"] = sign(secret, raw)
        async with self.http.post(
            self.url + "/webhooks/facebook",
            data=io.BytesIO(raw) if len(raw) > 64 * 1024 else raw,
            headers=headers,
        ) as resp:
            await resp.read()
            return resp

    async def telegram_update(
        self, update: dict[str, Any], *, secret: str = TG_SECRET
    ) -> aiohttp.ClientResponse:
        assert self.http is not None
        async with self.http.post(
            self.url + "/webhooks/telegram",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
        ) as resp:
            await resp.read()
            return resp

    async def slack_request(
        self,
        body: dict[str, Any] | str,
        *,
        form: bool = False,
        secret: str = SLACK_SIGNING_SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """A request as Slack sends it: JSON events, form-encoded commands and
        interactivity (``payload=``), signed with the signing secret."""
        assert self.http is not None
        if isinstance(body, str):
            raw = body
        elif form:
            raw = urlencode(body)
        else:
            raw = json.dumps(body)
        ts = str(timestamp if timestamp is not None else int(time.time()))
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=raw) or ""
        content_type = "application/x-www-form-urlencoded" if form else "application/json"
        async with self.http.post(
            self.url + "/webhooks/slack",
            data=raw.encode(),
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": signature,
                **(headers or {}),
            },
        ) as resp:
            return resp.status, await resp.text()

    async def slack_interaction(self, payload: dict[str, Any]) -> tuple[int, str]:
        return await self.slack_request({"payload": json.dumps(payload)}, form=True)

    # --- waiting for the work to happen ----------------------------------------------

    async def settled(self, timeout: float = 15.0) -> None:
        """Until every stored delivery is processed and no outbox job is due soon."""
        from bot.storage.models import InboxItem, OutboxJob

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.c.db.read() as s:
                inbox = await s.scalar(
                    select(func.count())
                    .select_from(InboxItem)
                    .where(InboxItem.processed_at.is_(None))
                )
                outbox = await s.scalar(
                    select(func.count()).select_from(OutboxJob).where(OutboxJob.state == "pending")
                )
            if not inbox and not outbox:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"not settled: inbox {inbox}, outbox {outbox}")

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.02)


def comment_delivery(
    page_id: str,
    post_id: str,
    comment_id: str,
    author: tuple[str, str],
    message: str,
    *,
    verb: str = "add",
    parent_id: str | None = None,
    created_time: int | None = None,
) -> dict[str, Any]:
    """A feed delivery in the shape of the real capture in shared/fixtures."""
    return {
        "object": "page",
        "entry": [
            {
                "id": page_id,
                "time": int(time.time()),
                "changes": [
                    {
                        "field": "feed",
                        "value": {
                            "from": {"id": author[0], "name": author[1]},
                            "post_id": post_id,
                            "comment_id": comment_id,
                            "parent_id": parent_id or post_id,
                            "created_time": created_time or int(time.time()),
                            "item": "comment",
                            "verb": verb,
                            "message": message,
                        },
                    }
                ],
            }
        ],
    }
