"""Telegram edge: updates in (webhook or long polling, both stored first), commands, staff
messages in task topics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramServerError
from aiogram.types import BotCommand, CallbackQuery, Message, Update
from aiohttp import web

from bot import routing
from bot.commands import ChatCommands, Menu, parse_quick_choice
from bot.config import Settings
from bot.handlers import Handler
from bot.intake import Intake, IntakeClosed
from bot.metrics import Metrics
from bot.service import Service, ServiceError
from bot.storage.models import InboxItem

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]

COMMANDS = [
    BotCommand(command="connect", description="Admins: connect a Facebook Page to this chat"),
    BotCommand(command="disconnect", description="Admins: stop receiving a Page's tasks"),
    BotCommand(command="close", description="In a task's topic: close the task"),
    BotCommand(command="reopen", description="In a task's topic: reopen the task"),
    BotCommand(command="quick", description="Quick replies: <name> in a task, or list/add/remove"),
    BotCommand(command="contact", description="In a task: the customer's card; merge <n>"),
    BotCommand(command="merge", description="In a task: merge another task into this one"),
    BotCommand(command="template", description="Admins: show or set the task template"),
    BotCommand(command="help", description="What this bot does"),
]

HELP = (
    "Pagedesk turns comments on your Facebook Page into tasks: one topic per post.\n"
    "• Write in a task's topic to answer the latest comment as the Page; reply to a comment "
    "to answer that one.\n"
    "• Start with note: or private: to keep a message internal.\n"
    "• In a topic: /close, /reopen, /quick <name> (or /quick for buttons), /contact, "
    "/contact merge <n>, /merge <task>.\n"
    "• /quick list; admins: /connect <page>, /disconnect <page>, /template, /quick add|remove."
)

NO_TOPICS = (
    "This group has no topics, and every task needs one. Turn them on: group settings → "
    "Topics (the group becomes a forum), make me an admin with the “Manage topics” right, "
    "then run /connect again."
)


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
            await intake.submit("telegram", str(update_id), raw.decode())
        except IntakeClosed:
            return web.Response(status=503, text="shutting down")
        metrics.deliveries.labels("telegram").inc()
        return web.Response(text="ok")

    return handle


async def poll_updates(bot: Bot, intake: Intake, stop: asyncio.Event) -> None:
    """Long polling: each update is stored before the offset moves past it, so an update
    that was not stored is sent again by Telegram."""
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
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)
            continue
        except TelegramAPIError as e:
            log.error("getUpdates refused", extra={"error": e.message})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)
            continue
        for u in updates:
            await intake.submit(
                "telegram",
                str(u.update_id),
                u.model_dump_json(by_alias=True, exclude_none=True),
            )
            offset = u.update_id + 1


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


class TelegramHandler:
    """Handles one stored update at a time (called by the inbox worker)."""

    def __init__(self, bot: Bot, service: Service, settings: Settings) -> None:
        self.bot = bot
        self.service = service
        self.settings = settings
        self.commands = ChatCommands(service)

    async def handle_item(self, item: InboxItem) -> None:
        update = Update.model_validate(json.loads(item.payload), context={"bot": self.bot})
        if update.message is not None:
            await self.on_message(update.message)
        elif update.edited_message is not None:
            await self.on_edited(update.edited_message)
        elif update.callback_query is not None:
            await self.on_callback(update.callback_query)

    async def say(self, m: Message, text: str, *, in_thread: bool = True) -> None:
        thread = str(m.message_thread_id) if in_thread and m.is_topic_message else None
        async with self.service.tx() as s:
            self.service.notice(
                s, PLATFORM, str(m.chat.id), text, thread_id=thread, reply_to=str(m.message_id)
            )

    def is_operator(self, m: Message) -> bool:
        return m.from_user is not None and str(m.from_user.id) in self.settings.admin_ids(PLATFORM)

    async def is_chat_admin(self, m: Message) -> bool:
        if m.sender_chat is not None and m.sender_chat.id == m.chat.id:
            return True  # an anonymous admin writes as the group itself
        if m.from_user is None or m.chat.type == "private":
            return False
        try:
            member = await self.bot.get_chat_member(chat_id=m.chat.id, user_id=m.from_user.id)
        except TelegramAPIError as e:
            log.warning("getChatMember failed", extra={"error": e.message})
            return False
        return member.status in ("creator", "administrator")

    async def is_admin(self, m: Message) -> bool:
        """May manage this chat's Pages: the chat's admins and BOT_ADMINS."""
        return self.is_operator(m) or await self.is_chat_admin(m)

    async def actor(self, m: Message) -> routing.Actor:
        anonymous = m.sender_chat is not None and m.sender_chat.id == m.chat.id
        operator = self.is_operator(m) and not anonymous
        return routing.Actor(
            platform=PLATFORM,
            user_id="" if anonymous or m.from_user is None else str(m.from_user.id),
            is_operator=operator,
            is_chat_admin=operator or await self.is_chat_admin(m),
            anonymous=anonymous,
        )

    async def on_message(self, m: Message) -> None:
        anonymous_admin = m.sender_chat is not None and m.sender_chat.id == m.chat.id
        if m.from_user is None or (m.from_user.is_bot and not anonymous_admin):
            return
        text = m.text if m.text is not None else (m.caption or "")
        command = routing.parse_command(text) if m.text is not None else None
        if command is not None and command.name in ("connect", "disconnect", "help", "start"):
            await self.admin_command(m, command)
            return
        if command is not None and command.name == "template":
            if not await self.is_admin(m):
                await self.say(m, "Only admins of this chat can change templates.")
                return
            await self.say(m, await self.commands.template(PLATFORM, str(m.chat.id), command.args))
            return
        if (
            command is not None
            and command.name == "quick"
            and (
                command.args.split(" ", 1)[0] in ("add", "remove", "list", "help")
                or not m.is_topic_message
            )
        ):
            action = command.args.split(" ", 1)[0]
            admin = action in ("add", "remove") and await self.is_admin(m)
            await self.say(
                m, await self.commands.quick(PLATFORM, str(m.chat.id), command.args, is_admin=admin)
            )
            return
        if m.chat.type not in ("group", "supergroup"):
            return
        if not m.is_topic_message or m.message_thread_id is None:
            if command is not None and command.name in ("close", "reopen"):
                await self.say(m, f"/{command.name} works inside a task's topic.")
            return
        has_content = (
            m.text is not None
            or m.caption is not None
            or bool(
                m.photo or m.document or m.video or m.voice or m.audio or m.sticker or m.animation
            )
        )
        if not has_content:
            return  # service messages: topic created, closed, pinned…
        reply_to = m.reply_to_message
        # Every message in a topic replies to the topic's creation message; only another
        # target is a reply the staff member chose.
        explicit = (
            str(reply_to.message_id)
            if reply_to is not None and reply_to.message_id != m.message_thread_id
            else None
        )
        result = await self.service.staff_message(
            platform=PLATFORM,
            chat_id=str(m.chat.id),
            thread_id=str(m.message_thread_id),
            user_id=str(m.from_user.id),
            text=text,
            chat_message_id=str(m.message_id),
            reply_to_chat_message_id=explicit,
        )
        if result is None:
            if command is not None and command.name in ("close", "reopen"):
                await self.say(m, "This topic is not a task.")
            return
        task, decision = result
        if isinstance(decision, routing.Command):
            await self.task_command(m, task.id, decision)

    async def task_command(self, m: Message, task_id: int, command: routing.Command) -> None:
        user = m.from_user
        result = await self.commands.in_task(
            task_id,
            command,
            user_id=str(user.id) if user else "",
            by=user.full_name if user else "Staff",
            prefix="/",
            chat_message_id=str(m.message_id),
        )
        if isinstance(result, Menu):
            await self.service.say_in_task(
                task_id, result.text, choices=result.choices, reply_to=str(m.message_id)
            )
        elif result:
            await self.say(m, result)

    async def on_callback(self, q: CallbackQuery) -> None:
        """A quick reply chosen from the inline buttons."""
        picked = parse_quick_choice(q.data or "")
        if picked is None:
            return
        task_id, name = picked
        where = (PLATFORM, str(q.message.chat.id)) if q.message is not None else None
        reason = await self.service.send_quick(
            task_id,
            name,
            user_id=str(q.from_user.id),
            by=q.from_user.full_name,
            chat=where or (PLATFORM, ""),
        )
        with contextlib.suppress(TelegramAPIError):
            await self.bot.answer_callback_query(
                q.id, text=reason or f"Sending “{name}” to Facebook…"
            )
        if reason:
            await self.service.say_in_task(task_id, reason)

    async def admin_command(self, m: Message, command: routing.Command) -> None:
        if command.name in ("help", "start"):
            await self.say(m, HELP)
            return
        if command.name == "connect":
            await self.connect(m, command.args)
            return
        if not await self.is_admin(m):
            await self.say(m, f"Only admins of this chat can run /{command.name}.")
            return
        if command.name == "disconnect":
            if not command.args:
                await self.say(m, "Usage: /disconnect <page id or name>")
                return
            try:
                text = await self.service.disconnect_page(PLATFORM, str(m.chat.id), command.args)
            except ServiceError as e:
                text = str(e)
            await self.say(m, text)

    async def connect(self, m: Message, ref: str) -> None:
        actor = await self.actor(m)
        if not (actor.is_operator or actor.is_chat_admin):
            # a stranger: refused before anything else is looked at or said
            await self.say(m, routing.binding_refusal(actor))
            return
        if m.chat.type != "supergroup" or not m.chat.is_forum:
            await self.say(m, NO_TOPICS)
            return
        token = self.settings.fb_access_token
        title = m.chat.title or str(m.chat.id)
        text = await self.service.connect(
            ref,
            user_token=token.get_secret_value() if token else None,
            platform=PLATFORM,
            chat_id=str(m.chat.id),
            actor=actor,
            chat_label=f"the Telegram group “{title}”",
        )
        await self.say(m, text)

    async def on_edited(self, m: Message) -> None:
        """Facebook keeps what was sent: an edit of a delivered answer is not sent again."""
        if m.from_user is None or m.from_user.is_bot or not m.is_topic_message:
            return
        async with self.service.db.read() as s:
            task = await self.service.repo.tasks.by_thread(
                s, PLATFORM, str(m.chat.id), str(m.message_thread_id)
            )
            if task is None:
                return
            msg = await self.service.repo.messages.by_chat_id(s, task.id, str(m.message_id))
        if msg is not None and msg.direction == "staff" and msg.state == "delivered":
            await self.say(
                m,
                "Edits are not sent to Facebook: the customer still sees the first text. "
                "Send a new message to correct it.",
            )
