"""``create_app(settings)`` wires everything; nothing lives at module level."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot.assembly import Parts, assemble
from bot.browser_connect import BindPage, Say
from bot.config import ConfigError, Settings
from bot.core.maintenance import Maintenance
from bot.crypto import TokenBox
from bot.fb.graph import GraphClient
from bot.handlers import facebook, media, ops, slack
from bot.handlers.slack_events import SlackEdge
from bot.intake import Intake
from bot.jobs.kinds import ChatNotice
from bot.leases import Leases
from bot.limits import Limit, Limiter, LocalLimiter, Pacer, SharedLimiter
from bot.metrics import Metrics
from bot.outbox import Outbox
from bot.page_access import PAGE_ACCESS, PageAccess
from bot.platforms.slack import SlackPlatform
from bot.priority import AcksFirst
from bot.storage.db import Database
from bot.storage.models import Page
from bot.worker import InboxWorker

if TYPE_CHECKING:
    # aiogram is imported only where Telegram is configured (_start_telegram): importing it
    # costs a Slack-only server about 50 MB and seconds of CPU at every start.
    from aiogram import Bot

    from bot.handlers.telegram_routes import TelegramEdge

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # Facebook and Telegram deliveries are a few KB
CATCH_UP_EVERY = 600.0  # seconds between reconciliations of open tasks' posts
KEEP_HANDLED = timedelta(days=7)  # how long processed deliveries and done jobs are kept


async def periodic_loop(maintenance: Maintenance, stop: asyncio.Event, every: float) -> None:
    """At start (after downtime) and then periodically: what did webhooks miss? And the
    housekeeping of the inbox and outbox tables."""
    while not stop.is_set():
        try:
            await maintenance.catch_up()
        except Exception:
            log.exception("catch-up failed")
        try:
            await maintenance.prune(KEEP_HANDLED)
        except Exception:
            log.exception("pruning failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


def rate_limits(settings: Settings) -> dict[str, Limit]:
    def per(rate: float, window: float) -> Limit:
        return Limit(count=max(1, int(rate)), window=window)

    return {
        "tg:chat": per(settings.rate_telegram_group_per_min, 60.0),
        "tg:global": per(settings.rate_telegram_global_per_sec, 1.0),
        "slack:channel": per(settings.rate_slack_channel_per_sec, 1.0),
        "fb:page": per(settings.rate_fb_page_per_min, 60.0),
    }


def pacer_for(settings: Settings) -> Pacer:
    return Pacer(rate_limits(settings))


def limiter_for(settings: Settings, db: Database) -> Limiter:
    """SQLite serves one process: its own pacer. PostgreSQL may serve several replicas:
    one budget per destination in the database, for all of them together."""
    if db.is_sqlite:
        return LocalLimiter(pacer_for(settings))
    return SharedLimiter(rate_limits(settings))


@dataclass
class Components:
    settings: Settings
    db: Database
    metrics: Metrics
    parts: Parts
    intake: Intake
    worker: InboxWorker
    outbox: Outbox
    call_timeout: float
    http: aiohttp.ClientSession | None = None
    graph: GraphClient | None = None
    bot: Bot | None = None
    slack_client: AsyncWebClient | None = None
    bolt: AsyncApp | None = None
    socket_mode: AsyncSocketModeHandler | None = None
    telegram: TelegramEdge | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


COMPONENTS = web.AppKey("components", Components)


def create_app(
    settings: Settings, *, outbox_base_delay: float = 1.0, call_timeout: float = 30.0
) -> web.Application:
    db = Database(settings.database_url)
    metrics = Metrics()
    tokens = TokenBox(settings.secret_key.get_secret_value()) if settings.secret_key else None
    # processing waits while deliveries wait for their acknowledgement (bot/priority.py)
    acks = AcksFirst()
    metrics.watch(acks)
    parts = assemble(db, tokens, metrics, acks)
    worker = InboxWorker(db, {}, metrics, acks)
    intake = Intake(db, on_stored=worker.wake, acks=acks)
    outbox = Outbox(
        db,
        parts.jobs.execute,
        parts.jobs.failed,
        metrics,
        limiter_for(settings, db),
        base_delay=outbox_base_delay,
        acks=acks,
    )
    parts.core.on_enqueued = outbox.wake
    c = Components(settings, db, metrics, parts, intake, worker, outbox, call_timeout)

    app = web.Application(client_max_size=MAX_BODY)
    app[COMPONENTS] = c
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz_handler(db))
    app.router.add_get("/metrics", ops.metrics_handler(metrics))
    app.router.add_get(
        "/webhooks/facebook",
        facebook.verify_handler(
            settings.fb_verify_token.get_secret_value() if settings.fb_verify_token else None
        ),
    )
    app.router.add_post(
        "/webhooks/facebook",
        facebook.delivery_handler(
            settings.fb_app_secret.get_secret_value() if settings.fb_app_secret else None,
            intake,
            metrics,
        ),
    )
    if settings.slack_enabled:
        assert settings.slack_bot_token is not None
        c.slack_client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url,
            timeout=int(max(1, call_timeout)),
        )
        c.bolt = slack.build_bolt(settings, c.slack_client, intake, metrics)
        if settings.slack_app_token is None:
            app.router.add_post("/webhooks/slack", slack.http_handler(c.bolt))
    if settings.telegram_webhook_secret is not None:
        from bot.handlers import telegram as tg

        app.router.add_post(
            "/webhooks/telegram",
            tg.webhook_handler(
                settings.telegram_webhook_secret.get_secret_value(), intake, metrics
            ),
        )
    # --- issue 13: Pages connected in the browser, token health, data deletion ---------
    access = PageAccess.build(settings, db, tokens, metrics, lambda: c.graph, *core_seams(parts))
    access.add_routes(app)
    parts.pages.links = access.links  # /connect without a Page offers a login link
    app[PAGE_ACCESS] = access
    # ------------------------------------------------------------------------------------
    # --- issue 12: pictures and files staff send, fetched by Facebook from PUBLIC_URL ----
    parts.media.public_url = settings.public_url
    app.router.add_get("/media/{token}", media.media_handler(parts.media))
    # ------------------------------------------------------------------------------------
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    return app


def core_seams(parts: Parts) -> tuple[BindPage, Say]:
    """What the browser connect and the token checks need of the core: bind a Page to a
    chat (``/connect``'s own step: the caller subscribed the app already), and say
    something in a chat (a stored notice, sent by the outbox)."""

    async def bind_page(
        page_id: str, name: str, token: str, platform: str, chat_id: str, by_user: str
    ) -> str:
        return await parts.pages.connect_page(
            page_id=page_id,
            name=name,
            token=token,
            platform=platform,
            chat_id=chat_id,
            by_user=by_user,
        )

    async def say(platform: str, chat_id: str, text: str) -> None:
        await parts.core.say(ChatNotice(platform=platform, chat_id=chat_id, text=text))

    return bind_page, say


async def reseal_page_tokens(db: Database, tokens: TokenBox) -> int:
    """Seal every stored page token under the first SECRET_KEY, so that after one start the
    keys behind it (and the pre-HKDF derivation) can be dropped. Returns how many changed."""
    resealed = unreadable = 0
    async with db.write() as session:
        for page in await session.scalars(select(Page)):
            if tokens.is_current(page.token_encrypted):
                continue
            try:
                page.token_encrypted = tokens.rotate(page.token_encrypted)
            except ValueError:
                unreadable += 1  # reported where the token is used: /connect the page again
                continue
            resealed += 1
    if resealed:
        log.info("page tokens re-sealed under the first SECRET_KEY", extra={"count": resealed})
    if unreadable:
        log.warning(
            "page tokens that no SECRET_KEY opens: connect those pages again",
            extra={"count": unreadable},
        )
    return resealed


async def _startup(app: web.Application) -> None:
    try:
        await _start(app)
    except BaseException:
        # aiohttp does not run on_cleanup for an app whose startup failed: release what
        # was opened (the database pool, HTTP sessions) before the error goes up.
        await _cleanup(app)
        raise


async def _start(app: web.Application) -> None:
    c = app[COMPONENTS]
    s = c.settings
    await c.db.migrate()
    leases = Leases(c.db)  # work one replica does at a time (always this one on SQLite)
    async with c.db.read() as session:
        if c.parts.core.tokens is None and await c.parts.core.repo.pages.any_connected(session):
            raise ConfigError("SECRET_KEY: required once a page is connected")
    if c.parts.core.tokens is not None:
        await reseal_page_tokens(c.db, c.parts.core.tokens)
    # One session (one connection pool) for every Graph and Slack call. slack_sdk opens a
    # new session per call unless it is given one, and then applies no timeout of its own.
    c.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=c.call_timeout))
    if c.slack_client is not None:
        c.slack_client.session = c.http
    c.graph = GraphClient(
        s.fb_graph_url,
        s.fb_api_version,
        c.http,
        timeout=c.call_timeout,
        app_secret=s.fb_app_secret.get_secret_value() if s.fb_app_secret else None,
    )
    core, parts = c.parts.core, c.parts
    core.graph = c.graph
    c.worker.register("facebook", parts.events.handle_item, parts.events.handle_many)
    if s.telegram_bot_token is not None:
        await _start_telegram(c, leases)
    if c.slack_client is not None and c.bolt is not None:
        core.platforms["slack"] = SlackPlatform(c.slack_client)
        edge = SlackEdge(c.slack_client, s, core, parts.desk, parts.commands)
        c.worker.register("slack", edge.handle_item)
        if s.slack_app_token is not None:
            c.socket_mode = AsyncSocketModeHandler(
                c.bolt,
                s.slack_app_token.get_secret_value(),
                web_client=AsyncWebClient(base_url=s.slack_api_url),
            )
    c.intake.start()
    c.worker.start()
    await c.outbox.start()
    # periodic work runs on one replica at a time (the lease holder), not once per replica
    periodic = functools.partial(periodic_loop, parts.maintenance, every=CATCH_UP_EVERY)
    c.background.append(asyncio.create_task(leases.run("periodic", periodic, c.stopping)))
    # issue 13: page token checks at start, then every few hours (issue 11: on one replica)
    token_checks = app[PAGE_ACCESS].run
    c.background.append(asyncio.create_task(leases.run("page-tokens", token_checks, c.stopping)))
    if c.socket_mode is not None:
        try:
            await c.socket_mode.connect_async()  # type: ignore[no-untyped-call]
        except Exception as e:
            log.error("Slack Socket Mode connection failed", extra={"error": str(e)})
    log.info(
        "pagedesk started",
        extra={
            "telegram": "webhook"
            if s.telegram_webhook_mode
            else ("polling" if s.telegram_enabled else "off"),
            "facebook": s.facebook_enabled,
        },
    )


async def _start_telegram(c: Components, leases: Leases) -> None:
    """The Telegram platform, its edge, its setup and (without a webhook) its poller. Only
    here is aiogram imported: a server without TELEGRAM_BOT_TOKEN never loads it."""
    from aiogram import Bot
    from aiogram.client.telegram import TelegramAPIServer

    from bot.handlers import telegram as tg
    from bot.handlers.telegram_routes import TelegramEdge
    from bot.platforms.telegram import TelegramPlatform
    from bot.platforms.telegram_session import HeldModelsSession

    s, core, parts = c.settings, c.parts.core, c.parts
    assert s.telegram_bot_token is not None
    tg_session = HeldModelsSession(
        api=TelegramAPIServer.from_base(s.telegram_api_url), timeout=c.call_timeout
    )
    c.bot = Bot(s.telegram_bot_token.get_secret_value(), session=tg_session)
    core.platforms["telegram"] = TelegramPlatform(c.bot)
    c.telegram = TelegramEdge(c.bot, s, core, parts.desk, parts.commands)
    c.worker.register("telegram", c.telegram.handle_item)
    try:
        await tg.start_telegram(c.bot, s)
    except Exception as e:
        # Telegram being down must not keep Facebook deliveries from being stored.
        log.error("Telegram setup failed; will still serve", extra={"error": str(e)})
    if not s.telegram_webhook_mode:
        # one poller per bot (Telegram answers 409 to a second): the lease holder
        poll = functools.partial(tg.poll_updates, c.bot, c.intake)
        c.background.append(asyncio.create_task(leases.run("telegram-polling", poll, c.stopping)))


async def _cleanup(app: web.Application) -> None:
    """Graceful stop: store what was handed in, finish what is in flight, keep the rest."""
    c = app[COMPONENTS]
    c.stopping.set()
    if c.socket_mode is not None:
        await c.socket_mode.close_async()  # type: ignore[no-untyped-call]
    if c.background:
        # Let them see the stop (a task cancelled inside a query would leak its connection);
        # a long poll still waiting on Telegram is cancelled after that.
        _, pending = await asyncio.wait(c.background, timeout=3)
        for t in pending:
            t.cancel()
        for t in c.background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    await c.intake.close()
    await c.worker.stop()
    await c.outbox.stop()
    if c.bot is not None:
        await c.bot.session.close()
    if c.http is not None:
        await c.http.close()
    await c.db.close()
