"""Telegram edge, after intake: stored updates fed through aiogram's own router and filters.
Staff messages in task topics, commands (the words of ``bot.commands``), edits, buttons."""

from __future__ import annotations

import contextlib
import json
import logging

from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, Filter
from aiogram.types import CallbackQuery, Message, Update

from bot import routing
from bot.commands import (
    CHAT_WORDS,
    TASK_WORDS,
    ChatCommands,
    Invocation,
    Menu,
    Reply,
    is_chat_command,
    parse_quick_choice,
    parse_write_choice,
)
from bot.config import Settings
from bot.core.context import Core
from bot.core.desk import (
    CANCEL_DELETE,
    CONFIRM_DELETE,
    StaffDesk,
    StaffMessage,
    parse_moderation_choice,
)
from bot.jobs.kinds import ChatNotice
from bot.rules.access import Actor, may_delete_comment
from bot.storage.models import InboxItem

log = logging.getLogger(__name__)

PLATFORM = "telegram"
NO_TOPICS = (
    "This group has no topics, and every task needs one. Turn them on: group settings → "
    "Topics (the group becomes a forum), make me an admin with the “Manage topics” right, "
    "then run /connect again."
)


def reply_to_in_topic(m: Message) -> str | None:
    """The message a staff member chose to reply to. Every message in a topic replies to
    the topic's creation message; only another target is a choice."""
    reply_to = m.reply_to_message
    if reply_to is None or reply_to.message_id == m.message_thread_id:
        return None
    return str(reply_to.message_id)


def staff_media(m: Message) -> tuple[tuple[str, str], ...]:
    """The picture or file of a staff message, as (kind, file id): the largest size of a
    photo; a document by its type. Stickers and GIFs are not sent on."""
    if m.photo:
        return (("image", m.photo[-1].file_id),)
    if m.video:
        return (("video", m.video.file_id),)
    if m.audio or m.voice:
        item = m.audio or m.voice
        assert item is not None
        return (("audio", item.file_id),)
    if m.document:
        mime = m.document.mime_type or ""
        kind = "image" if mime.startswith("image/") else "file"
        return ((kind, m.document.file_id),)
    return ()


def anonymous_admin(m: Message) -> bool:
    """An admin writing as the group itself (Telegram's anonymous admins)."""
    return m.sender_chat is not None and m.sender_chat.id == m.chat.id


LINK_SENT = (
    "I sent you a link in a private message. Nothing came? Open a chat with me, press "
    "Start, then run /connect here again."
)


class FromPeople(Filter):
    """People, and admins writing as the group; not bots, not channels."""

    async def __call__(self, m: Message) -> bool:
        return m.from_user is not None and (not m.from_user.is_bot or anonymous_admin(m))


class ChatCommand(Filter):
    """A command about the chat and its Pages (``/connect``, ``/quick list``…), wherever
    it is typed; ``/quick <name>`` in a task's topic is the task's."""

    async def __call__(self, m: Message) -> bool:
        command = routing.parse_command(m.text or "")
        return command is not None and is_chat_command(
            command.name, command.args, in_task=bool(m.is_topic_message)
        )


class TelegramEdge:
    def __init__(
        self,
        bot: Bot,
        settings: Settings,
        core: Core,
        desk: StaffDesk,
        commands: ChatCommands,
    ) -> None:
        self.bot = bot
        self.settings = settings
        self.core = core
        self.desk = desk
        self.commands = commands
        self.dispatcher = Dispatcher(name="pagedesk")
        self.dispatcher.include_router(self.router())

    def router(self) -> Router:
        router = Router(name=__name__)
        router.message.filter(FromPeople())
        words = (*CHAT_WORDS, "start", "quick")
        router.message.register(self.on_chat_command, Command(*words), ChatCommand())
        in_group = F.chat.type.in_({"group", "supergroup"})
        router.message.register(self.on_topic_message, in_group, F.is_topic_message)
        router.message.register(self.on_stray_task_command, in_group, Command(*TASK_WORDS))
        router.edited_message.register(self.on_edited, F.is_topic_message, F.from_user)
        router.callback_query.register(self.on_quick_pick, F.data.startswith("q:"))
        router.callback_query.register(self.on_write_pick, F.data.startswith("w:"))
        router.callback_query.register(self.on_moderation, F.data.startswith("m:"))
        return router

    async def handle_item(self, item: InboxItem) -> None:
        """One stored update (called by the inbox worker); an error leaves it to retry."""
        update = Update.model_validate(json.loads(item.payload), context={"bot": self.bot})
        await self.dispatcher.feed_update(self.bot, update)

    # --- who is writing -------------------------------------------------------------------

    async def is_chat_admin(self, m: Message) -> bool:
        if anonymous_admin(m):
            return True
        if m.from_user is None or m.chat.type == "private":
            return False
        try:
            member = await self.bot.get_chat_member(chat_id=m.chat.id, user_id=m.from_user.id)
        except TelegramAPIError as e:
            log.warning("getChatMember failed", extra={"error": e.message})
            return False
        return member.status in ("creator", "administrator")

    async def actor(self, m: Message) -> Actor:
        anonymous = anonymous_admin(m)
        user = "" if anonymous or m.from_user is None else str(m.from_user.id)
        operator = bool(user) and user in self.settings.admin_ids(PLATFORM)
        return Actor(
            platform=PLATFORM,
            user_id=user,
            is_operator=operator,
            is_chat_admin=operator or await self.is_chat_admin(m),
            anonymous=anonymous,
        )

    async def say(self, m: Message, reply: Reply, task_id: int | None = None) -> None:
        if isinstance(reply, Menu) and task_id is not None:
            await self.desk.say_in_task(
                task_id, reply.text, choices=reply.choices, reply_to=str(m.message_id)
            )
            return
        text = reply.text if isinstance(reply, Menu) else reply
        if not text:
            return
        thread = str(m.message_thread_id) if m.is_topic_message else None
        await self.core.say(
            ChatNotice(PLATFORM, str(m.chat.id), text, thread_id=thread, reply_to=str(m.message_id))
        )

    def invocation(self, m: Message, command: routing.Command, task_id: int | None) -> Invocation:
        token = self.settings.fb_access_token
        user = m.from_user

        async def actor() -> Actor:
            return await self.actor(m)

        async def has_topics() -> str | None:
            return None if m.chat.type == "supergroup" and m.chat.is_forum else NO_TOPICS

        async def privately(text: str) -> str:
            # a private chat's id is the person's user id
            await self.core.say(ChatNotice(PLATFORM, str(user.id) if user else "", text))
            return LINK_SENT

        return Invocation(
            platform=PLATFORM,
            chat_id=str(m.chat.id),
            name=command.name,
            args=command.args,
            user_id=str(user.id) if user else "",
            by=user.full_name if user else "Staff",
            actor=actor,
            prefix="/",
            task_id=task_id,
            chat_message_id=str(m.message_id),
            chat_label=f"the Telegram group “{m.chat.title or m.chat.id}”",
            user_token=token.get_secret_value() if token else None,
            prepare=has_topics,
            reply_to_chat_message_id=reply_to_in_topic(m),
            privately=privately if user is not None else None,
        )

    # --- the handlers -------------------------------------------------------------------

    async def on_chat_command(self, m: Message) -> None:
        command = routing.parse_command(m.text or "")
        assert command is not None  # the ChatCommand filter parsed it
        await self.say(m, await self.commands.run(self.invocation(m, command, None)))

    async def on_stray_task_command(self, m: Message) -> None:
        command = routing.parse_command(m.text or "")
        assert command is not None
        await self.say(m, f"/{command.name} works inside a task's topic.")

    async def on_topic_message(self, m: Message) -> None:
        has_content = (
            m.text is not None
            or m.caption is not None
            or bool(
                m.photo or m.document or m.video or m.voice or m.audio or m.sticker or m.animation
            )
        )
        if not has_content or m.message_thread_id is None or m.from_user is None:
            return  # service messages: topic created, closed, pinned…
        reply_to = m.reply_to_message
        # Every message in a topic replies to the topic's creation message; only another
        # target is a reply the staff member chose.
        explicit = (
            str(reply_to.message_id)
            if reply_to is not None and reply_to.message_id != m.message_thread_id
            else None
        )
        result = await self.desk.staff_message(
            StaffMessage(
                platform=PLATFORM,
                chat_id=str(m.chat.id),
                thread_id=str(m.message_thread_id),
                user_id=str(m.from_user.id),
                text=m.text if m.text is not None else (m.caption or ""),
                chat_message_id=str(m.message_id),
                reply_to_chat_message_id=explicit,
                media=staff_media(m),
            )
        )
        command = routing.parse_command(m.text or "")
        if result is None:
            if command is not None and command.name in TASK_WORDS:
                await self.say(m, "This topic is not a task.")
            return
        if isinstance(result.decision, routing.Command):
            inv = self.invocation(m, result.decision, result.task_id)
            await self.say(m, await self.commands.run(inv), result.task_id)

    async def on_edited(self, m: Message) -> None:
        """Facebook keeps what was sent: an edit of a delivered answer is not sent again."""
        await self.desk.staff_changed(
            PLATFORM,
            str(m.chat.id),
            str(m.message_thread_id),
            str(m.message_id),
            deleted=False,
        )

    async def on_quick_pick(self, q: CallbackQuery) -> None:
        """A quick reply chosen from the inline buttons."""
        picked = parse_quick_choice(q.data or "")
        if picked is None:
            return
        task_id, name = picked
        where = str(q.message.chat.id) if q.message is not None else ""
        reason = await self.desk.send_quick(
            task_id,
            name,
            user_id=str(q.from_user.id),
            by=q.from_user.full_name,
            chat=(PLATFORM, where),
        )
        with contextlib.suppress(TelegramAPIError):
            await self.bot.answer_callback_query(
                q.id, text=reason or f"Sending “{name}” to Facebook…"
            )
        if reason and where:
            thread = await self.desk.task_thread(task_id, PLATFORM, where)
            await self.core.say(ChatNotice(PLATFORM, where, reason, thread_id=thread))

    async def on_write_pick(self, q: CallbackQuery) -> None:
        """A contact card's "Write in Messenger" / "Reply to latest comment" button: that
        channel's task is opened for writing first."""
        picked = parse_write_choice(q.data or "")
        if picked is None or q.message is None:
            return
        where = str(q.message.chat.id)
        said = await self.commands.cards.write_first(
            picked[0],
            picked[1],
            None,
            user_id=str(q.from_user.id),
            by=q.from_user.full_name,
            chat=(PLATFORM, where),
        )
        with contextlib.suppress(TelegramAPIError):
            await self.bot.answer_callback_query(q.id, text=said[:200])
        thread = getattr(q.message, "message_thread_id", None)
        await self.core.say(
            ChatNotice(PLATFORM, where, said, thread_id=str(thread) if thread else None)
        )

    async def on_moderation(self, q: CallbackQuery) -> None:
        """A relayed comment's Hide / Unhide / Like / Delete button, or the Yes / Cancel of
        a delete's confirmation. Only a comment of a task of this chat is acted on."""
        picked = parse_moderation_choice(q.data or "")
        if picked is None or q.message is None:
            return
        message_id, action = picked
        chat_id = str(q.message.chat.id)
        reason: str | None = None
        if action == CANCEL_DELETE:
            toast = "Not deleted."
            with contextlib.suppress(TelegramAPIError):
                await self.bot.edit_message_text(
                    chat_id=q.message.chat.id,
                    message_id=q.message.message_id,
                    text="Not deleted.",
                )
        else:
            confirmed = action == CONFIRM_DELETE
            act = routing.MOD_DELETE if confirmed else action
            may_delete = act == routing.MOD_DELETE and may_delete_comment(
                await self.callback_actor(q)
            )
            reason = await self.desk.moderate(
                act,
                by=q.from_user.full_name,
                chat=(PLATFORM, chat_id),
                may_delete=may_delete,
                confirmed=confirmed,
                message_id=message_id,
            )
            toast = reason or (
                "Asking first…"
                if act == routing.MOD_DELETE and not confirmed
                else "Sent to Facebook…"
            )
            if confirmed and reason is None:
                with contextlib.suppress(TelegramAPIError):
                    await self.bot.edit_message_text(
                        chat_id=q.message.chat.id,
                        message_id=q.message.message_id,
                        text=f"Deleting on Facebook (asked by {q.from_user.full_name})…",
                    )
        with contextlib.suppress(TelegramAPIError):
            await self.bot.answer_callback_query(q.id, text=toast[:200])
        if reason:
            thread = getattr(q.message, "message_thread_id", None)
            await self.core.say(
                ChatNotice(
                    PLATFORM,
                    chat_id,
                    f"{q.from_user.full_name}: {reason}",
                    thread_id=str(thread) if thread else None,
                    reply_to=str(q.message.message_id),
                )
            )

    async def callback_actor(self, q: CallbackQuery) -> Actor:
        """Who clicked a button, as far as permissions go."""
        user = str(q.from_user.id)
        operator = user in self.settings.admin_ids(PLATFORM)
        admin = operator
        if not admin and q.message is not None:
            try:
                member = await self.bot.get_chat_member(
                    chat_id=q.message.chat.id, user_id=q.from_user.id
                )
                admin = member.status in ("creator", "administrator")
            except TelegramAPIError as e:
                log.warning("getChatMember failed", extra={"error": e.message})
        return Actor(PLATFORM, user, is_operator=operator, is_chat_admin=admin)
