"""Telegram edge, intake: updates in (webhook or long polling, both stored first), and the
bot's setup (commands menu, webhook). What happens to a stored update: ``telegram_routes``."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramServerError,
)
from aiogram.types import BotCommand
from aiohttp import web

from bot import lanes
from bot.commands import SPECS
from bot.config import Settings
from bot.handlers import Handler
from bot.intake import Intake, IntakeClosed
from bot.metrics import Metrics

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]

# the menu Telegram shows: the same words and help lines as every chat (bot.commands)
COMMANDS = [BotCommand(command=spec.name, description=spec.help) for spec in SPECS]


def webhook_handler(secret: str, intake: Intake, metrics: Metrics) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        got = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(got.encode(), secret.encode()):
            metrics.rejected.labels("telegram", "secret").inc()
            return web.Response(status=403, text="wrong secret token")
        if request.content_type != "application/json":
            metrics.rejected.labels("telegram", "content_type").inc()
            return web.Response(status=415, text="expected application/json")
        raw = await request.read()
        try:
            body = json.loads(raw)
            update_id = body["update_id"]
            if not isinstance(update_id, int):
                raise TypeError("update_id")
        except (ValueError, KeyError, TypeError):
            metrics.rejected.labels("telegram", "malformed").inc()
            return web.Response(status=400, text="not a Telegram update")
        try:
            await intake.submit("telegram", str(update_id), raw.decode(), lane=lanes.telegram(body))
        except IntakeClosed:
            return web.Response(status=503, text="shutting down")
        metrics.deliveries.labels("telegram").inc()
        return web.Response(text="ok")

    return handle


async def poll_updates(bot: Bot, intake: Intake, stop: asyncio.Event) -> None:
    """Long polling: each update is stored before the offset moves past it, so an update
    that was not stored is sent again by Telegram (and stored once: by ``update_id``).

    Telegram answers only one ``getUpdates`` at a time per bot (409 to the others): with
    several replicas this runs on the one holding the polling lease (``bot.app``)."""
    offset: int | None = None
    delay = 1.0
    while not stop.is_set():
        try:
            updates = await bot.get_updates(
                offset=offset, timeout=25, allowed_updates=ALLOWED_UPDATES
            )
            delay = 1.0
        except (TelegramNetworkError, TelegramServerError) as e:
            log.warning("getUpdates failed, retrying", extra={"error": e.message})
            await _pause(stop, delay)
            delay = min(delay * 2, 60)
            continue
        except TelegramConflictError as e:
            log.error(
                "getUpdates conflicts with another poller or a webhook of this bot",
                extra={"error": e.message},
            )
            await _pause(stop, delay)
            delay = min(delay * 2, 60)
            continue
        except TelegramAPIError as e:
            log.error("getUpdates refused", extra={"error": e.message})
            await _pause(stop, delay)
            delay = min(delay * 2, 60)
            continue
        for u in updates:
            await intake.submit(
                "telegram",
                str(u.update_id),
                u.model_dump_json(by_alias=True, exclude_none=True),
                lane=lanes.telegram(u.model_dump(mode="json", exclude_none=True)),
            )
            offset = u.update_id + 1


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def start_telegram(bot: Bot, settings: Settings) -> None:
    """Commands menu, and the webhook set (or removed, for long polling)."""
    await bot.set_my_commands(COMMANDS)
    if settings.telegram_webhook_mode:
        assert settings.public_url is not None and settings.telegram_webhook_secret is not None
        await bot.set_webhook(
            url=settings.public_url.rstrip("/") + "/webhooks/telegram",
            secret_token=settings.telegram_webhook_secret.get_secret_value(),
            allowed_updates=ALLOWED_UPDATES,
        )
    else:
        await bot.delete_webhook(drop_pending_updates=False)
