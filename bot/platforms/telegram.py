"""Telegram as a chat platform: a task is a forum topic of the connected supergroup."""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReactionTypeEmoji,
    ReplyParameters,
)

from bot.errors import DeliveryError
from bot.ports import ChatPost, RootMessage, ThreadRef

log = logging.getLogger(__name__)

T = TypeVar("T")
MESSAGE_MAX = 4096
DELIVERED_REACTION = "👍"


async def call(action: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Run one Bot API call, turning aiogram's errors into what the outbox acts on."""
    try:
        return await fn()
    except TelegramRetryAfter as e:
        raise DeliveryError(
            f"Telegram flood control on {action}", retryable=True, retry_after=float(e.retry_after)
        ) from None
    except (TelegramNetworkError, TelegramServerError) as e:
        raise DeliveryError(
            f"Telegram unavailable on {action}: {e.message}", retryable=True
        ) from None
    except TelegramAPIError as e:
        raise DeliveryError(f"Telegram refused {action}: {e.message}", retryable=False) from None


def _clip(text: str, limit: int = MESSAGE_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mention(assignee: str) -> str:
    if assignee.lstrip("-").isdigit():
        return f'<a href="tg://user?id={assignee}">{assignee}</a>'
    name = assignee if assignee.startswith("@") else "@" + assignee
    return html.escape(name)


def render_root(root: RootMessage) -> str:
    parts = [f"<b>{html.escape(root.title)}</b>"]
    if root.description:
        parts.append(html.escape(_clip(root.description, 2500)))
    if root.assignees:
        parts.append("Assignees: " + " ".join(_mention(a) for a in root.assignees))
    if root.tags:
        parts.append(" ".join("#" + html.escape(t) for t in root.tags))
    parts.append(f"<blockquote>{html.escape(root.additional_data)}</blockquote>")
    status = {"open": "🟢 open", "merged": "🔀 merged"}.get(root.status, "✅ closed")
    parts.append(f"Status: {status} · task #{root.task_id}")
    return _clip("\n\n".join(parts))


def render_post(post: ChatPost) -> str:
    if post.kind == "digest":
        head = f"<i>{len(post.items)} comments arrived together:</i>"
        return _clip("\n".join([head, *(render_post(i) for i in post.items)]))
    if post.kind == "notice":
        return html.escape(_clip(post.text))
    who = html.escape(post.author or "Someone")
    if post.kind == "page":
        who += " (Page)"
    text = html.escape(post.text)
    if post.fb_status == "removed":
        return _clip(f"<b>{who}</b>: <s>{text}</s>\n<i>removed on Facebook</i>")
    if post.fb_status == "hidden":
        return _clip(f"<b>{who}</b>: {text}\n<i>hidden on Facebook</i>")
    label = " (edited)" if post.fb_status == "edited" else ""
    arrow = "↪ " if post.is_reply else ""
    return _clip(f"{arrow}<b>{who}</b>{label}: {text}")


class TelegramPlatform:
    name = "telegram"

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def create_thread(self, chat_id: str, title: str) -> str | None:
        topic = await call(
            "createForumTopic",
            lambda: self.bot.create_forum_topic(chat_id=int(chat_id), name=title),
        )
        return str(topic.message_thread_id)

    async def post_root(self, chat_id: str, thread_id: str | None, root: RootMessage) -> ThreadRef:
        assert thread_id is not None
        msg = await call(
            "sendMessage",
            lambda: self.bot.send_message(
                chat_id=int(chat_id),
                message_thread_id=int(thread_id),
                text=render_root(root),
                parse_mode="HTML",
            ),
        )
        return ThreadRef(thread_id, str(msg.message_id))

    async def post(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str:
        params = (
            ReplyParameters(message_id=int(reply_to), allow_sending_without_reply=True)
            if reply_to
            else None
        )
        markup = (
            InlineKeyboardMarkup(
                inline_keyboard=[
                    [InlineKeyboardButton(text=label, callback_data=value)]
                    for label, value in post.choices
                ]
            )
            if post.choices
            else None
        )
        msg = await call(
            "sendMessage",
            lambda: self.bot.send_message(
                chat_id=int(chat_id),
                message_thread_id=int(thread_id) if thread_id else None,
                text=render_post(post),
                parse_mode="HTML",
                reply_parameters=params,
                reply_markup=markup,
            ),
        )
        return str(msg.message_id)

    async def edit(self, chat_id: str, thread_id: str, message_id: str, post: ChatPost) -> None:
        try:
            await call(
                "editMessageText",
                lambda: self.bot.edit_message_text(
                    chat_id=int(chat_id),
                    message_id=int(message_id),
                    text=render_post(post),
                    parse_mode="HTML",
                ),
            )
        except DeliveryError as e:
            if "not modified" not in e.reason:
                raise

    async def set_thread_state(self, chat_id: str, thread: ThreadRef, root: RootMessage) -> None:
        try:
            if root.status != "open":
                await self.bot.close_forum_topic(
                    chat_id=int(chat_id), message_thread_id=int(thread.thread_id)
                )
            else:
                await self.bot.reopen_forum_topic(
                    chat_id=int(chat_id), message_thread_id=int(thread.thread_id)
                )
        except TelegramBadRequest as e:
            # TOPIC_NOT_MODIFIED: a staff member closed or reopened it by hand already
            if "NOT_MODIFIED" not in e.message.upper():
                await call("closeForumTopic", self._raise(e))
        except TelegramAPIError as e:
            await call("closeForumTopic", self._raise(e))
        try:
            await call(
                "editMessageText",
                lambda: self.bot.edit_message_text(
                    chat_id=int(chat_id),
                    message_id=int(thread.root_message_id),
                    text=render_root(root),
                    parse_mode="HTML",
                ),
            )
        except DeliveryError as e:
            if "not modified" not in e.reason:
                raise

    @staticmethod
    def _raise(e: Exception) -> Callable[[], Awaitable[None]]:
        async def again() -> None:
            raise e

        return again

    async def mark_delivered(self, chat_id: str, thread_id: str, message_id: str) -> None:
        try:
            await call(
                "setMessageReaction",
                lambda: self.bot.set_message_reaction(
                    chat_id=int(chat_id),
                    message_id=int(message_id),
                    reaction=[ReactionTypeEmoji(emoji=DELIVERED_REACTION)],
                ),
            )
        except DeliveryError as e:
            if e.retryable:
                raise
            # reactions can be turned off in a group: say it in words instead
            await self.post(
                chat_id,
                thread_id,
                ChatPost(kind="notice", author="", text="✅ Delivered to Facebook"),
                reply_to=message_id,
            )

    def thread_link(self, chat_id: str, thread: ThreadRef) -> str | None:
        if chat_id.startswith("-100"):
            return f"https://t.me/c/{chat_id[4:]}/{thread.thread_id}"
        return None

    async def notify_assignee(self, chat_id: str, thread: ThreadRef, user: str, title: str) -> bool:
        if not user.lstrip("-").isdigit():
            return False  # a @username cannot be messaged directly; the mention notifies
        url = self.thread_link(chat_id, thread)
        link = f"\n{url}" if url else ""
        try:
            await self.bot.send_message(chat_id=int(user), text=f"New task for you: {title}{link}")
        except TelegramAPIError:
            return False  # the user never started a chat with the bot
        return True
