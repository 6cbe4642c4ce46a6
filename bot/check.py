"""``python -m bot check``: each configured platform called once, problems said plainly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bot.config import Settings
from bot.crypto import TokenBox
from bot.errors import DeliveryError
from bot.fb.graph import GraphClient
from bot.storage.db import Database
from bot.storage.models import Page
from bot.token_health import assess, what_to_do


def _missing_sqlite_file(url: str) -> str | None:
    """The SQLite file, if it does not exist (connecting would create an empty one)."""
    if not url.startswith("sqlite"):
        return None
    path = make_url(url).database
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return path


async def _database(url: str, r: Report) -> list[Page]:
    """Does the database answer, and which pages are connected?"""
    db = Database(url)
    try:
        await db.ping()
    except Exception as e:
        r.bad(f"database does not answer ({type(e).__name__}): check DATABASE_URL")
        await db.close()
        return []
    r.ok("database answers")
    try:
        async with db.read() as s:
            return list(await s.scalars(select(Page).where(Page.active.is_(True))))
    except Exception:
        r.bad("database has no schema yet: `python -m bot serve` creates it at start")
        return []
    finally:
        await db.close()


class Report:
    def __init__(self) -> None:
        self.problems = 0

    def ok(self, text: str) -> None:
        print(f"ok       {text}")

    def bad(self, text: str) -> None:
        self.problems += 1
        print(f"PROBLEM  {text}")

    def off(self, text: str) -> None:
        print(f"off      {text}")


async def run_check(settings: Settings) -> int:
    r = Report()
    missing = _missing_sqlite_file(settings.database_url)
    if missing:
        r.bad(f"database {missing} does not exist yet: `serve` creates it at start")
        pages: list[Page] = []
    else:
        pages = await _database(settings.database_url, r)
    async with aiohttp.ClientSession() as http:
        await _facebook(settings, http, pages, r)
    await _telegram(settings, pages, r)
    await _slack(settings, r)
    print("\nall good" if not r.problems else f"\n{r.problems} problem(s) found")
    return 0 if not r.problems else 1


async def _facebook(
    settings: Settings, http: aiohttp.ClientSession, pages: list[Page], r: Report
) -> None:
    if settings.fb_app_secret is None:
        r.bad("FB_APP_SECRET is not set: Facebook deliveries are refused (403)")
    if settings.fb_verify_token is None:
        r.bad("FB_VERIFY_TOKEN is not set: Facebook cannot verify the webhook URL")
    graph = GraphClient(
        settings.fb_graph_url,
        settings.fb_api_version,
        http,
        app_secret=settings.fb_app_secret.get_secret_value() if settings.fb_app_secret else None,
    )
    if settings.fb_access_token is None:
        r.off("FB_ACCESS_TOKEN is not set: /connect cannot read page tokens")
    else:
        try:
            accounts = await graph.accounts(settings.fb_access_token.get_secret_value())
            names = ", ".join(f"{a.name} ({a.id})" for a in accounts) or "none"
            r.ok(f"FB_ACCESS_TOKEN is valid; it manages: {names}")
        except DeliveryError as e:
            r.bad(f"FB_ACCESS_TOKEN: {e.reason}")
    if pages and settings.secret_key is None:
        r.bad("SECRET_KEY is not set but pages are connected: their tokens cannot be read")
        return
    box = TokenBox(settings.secret_key.get_secret_value()) if settings.secret_key else None
    if pages and box is not None and (settings.fb_app_id is None or settings.fb_app_secret is None):
        r.off("FB_APP_ID or FB_APP_SECRET is not set: page tokens' expiry is not checked")
    app_id = settings.fb_app_id if settings.fb_app_secret is not None else None
    for page in pages:
        if box is None:
            break
        token = ""
        try:
            token = box.open(page.token_encrypted)
            fields = await graph.subscribed_fields(page.id, token)
        except (DeliveryError, ValueError) as e:
            if isinstance(e, DeliveryError) and e.token_invalid and app_id is not None:
                await _token_health(graph, app_id, page, token, r)  # says why, plainly
                continue
            reason = e.reason if isinstance(e, DeliveryError) else str(e)
            r.bad(f"page {page.name} ({page.id}): {reason}; run /connect {page.id} again")
            continue
        missing = {"feed", "messages"} - set(fields)
        if missing:
            r.bad(f"page {page.name}: app not subscribed to {', '.join(sorted(missing))}")
        else:
            r.ok(f"page {page.name} ({page.id}): token valid, subscribed to feed and messages")
        if app_id is not None:
            await _token_health(graph, app_id, page, token, r)


async def _token_health(graph: GraphClient, app_id: str, page: Page, token: str, r: Report) -> None:
    """The same words the chat gets from the periodic check (bot.token_health)."""
    try:
        health = assess(await graph.debug_token(app_id, token), datetime.now(UTC))
    except DeliveryError as e:
        r.bad(f"page {page.name} ({page.id}): Facebook could not check its token: {e.reason}")
        return
    if health.state == "valid":
        r.ok(f"page {page.name} ({page.id}): token {health.reason}")
    else:
        todo = what_to_do(page.id, "in its chat")
        r.bad(f"page {page.name} ({page.id}): {health.reason}; {todo}")


async def _telegram(settings: Settings, pages: list[Page], r: Report) -> None:
    if settings.telegram_bot_token is None:
        r.off("TELEGRAM_BOT_TOKEN is not set: Telegram is off")
        return
    # here only, as in serve: a check without Telegram does not load aiogram
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.exceptions import TelegramAPIError

    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(settings.telegram_bot_token.get_secret_value(), session=session)
    try:
        me = await bot.get_me()
        r.ok(f"Telegram bot @{me.username} answers")
        info = await bot.get_webhook_info()
        if settings.telegram_webhook_mode:
            want = (settings.public_url or "").rstrip("/") + "/webhooks/telegram"
            if info.url == want:
                r.ok(f"Telegram webhook set to {want}")
            else:
                r.bad(
                    f"Telegram webhook is {info.url or 'not set'}, expected {want}: "
                    "`serve` sets it at start"
                )
            if info.last_error_message:
                r.bad(f"Telegram's last webhook error: {info.last_error_message}")
        elif info.url:
            r.bad(
                "a Telegram webhook is set but PUBLIC_URL/TELEGRAM_WEBHOOK_SECRET are not: "
                "long polling will remove it at start"
            )
        else:
            r.ok("Telegram long polling (no webhook)")
        for page in pages:
            if page.chat_platform != "telegram":
                continue
            chat = await bot.get_chat(int(page.chat_id))
            if chat.is_forum:
                r.ok(f"chat {chat.title!r} of page {page.name} has topics")
            else:
                r.bad(f"chat {chat.title!r} of page {page.name} has no topics: turn them on")
    except TelegramAPIError as e:
        r.bad(f"Telegram: {e.message} (check TELEGRAM_BOT_TOKEN / TELEGRAM_API_URL)")
    finally:
        await bot.session.close()


async def _slack(settings: Settings, r: Report) -> None:
    if settings.slack_bot_token is None:
        r.off("SLACK_BOT_TOKEN is not set: Slack is off")
        return
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
    )
    try:
        auth = await client.auth_test()
        r.ok(f"Slack bot {auth.get('user')} in workspace {auth.get('team')} answers")
    except SlackApiError as e:
        r.bad(f"Slack: {e.response.get('error')} (check SLACK_BOT_TOKEN)")
    except aiohttp.ClientError as e:
        r.bad(f"Slack cannot be reached ({type(e).__name__}): check SLACK_API_URL")
