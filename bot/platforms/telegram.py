"""Telegram as a chat platform: a task is a forum topic of the connected supergroup.

What the messages say is built in ``bot.platforms.telegram_text``; every message goes
out with link previews off (a customer's link must not unfold into a card in the chat).
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    ReactionTypeEmoji,
    ReplyParameters,
)

from bot.errors import DeliveryError, ThreadGone
from bot.platforms.telegram_text import (
    TITLE_MAX,
    inert,
    render_caption,
    render_edit,
    render_post,
    render_root,
)
from bot.platforms.text import shorten
from bot.ports import ChatPost, RootMessage, ThreadRef

log = logging.getLogger(__name__)

T = TypeVar("T")
DELIVERED_REACTION = "👍"
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
TOPIC_NAME_MAX = 128  # UTF-16 units, like a message
# what Telegram answers when a person deleted the topic the bot writes to or edits in
THREAD_GONE = ("message thread not found", "TOPIC_ID_INVALID", "TOPIC_DELETED")
ROOT_GONE = (*THREAD_GONE, "message to edit not found")


async def call(action: str, fn: Callable[[], Awaitable[T]], *, gone: tuple[str, ...] = ()) -> T:
    """Run one Bot API call, turning aiogram's errors into what the outbox acts on.
    A refusal naming one of ``gone`` means the task's topic was deleted: ThreadGone."""
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
        if any(marker.lower() in e.message.lower() for marker in gone):
            raise ThreadGone(f"Telegram: the topic is gone ({action}: {e.message})") from None
        raise DeliveryError(f"Telegram refused {action}: {e.message}", retryable=False) from None


MODERATION_LABELS = {
    "hide": "🙈 Hide",
    "unhide": "👁 Unhide",
    "like": "👍 Like",
    "delete": "🗑 Delete",
}


def keyboard(post: ChatPost) -> InlineKeyboardMarkup | None:
    """Choices one per row; a relayed comment's moderation buttons in one row, their data
    ``m:{message id}:{action}`` (Telegram allows 64 bytes)."""
    if post.choices:
        rows = [
            [InlineKeyboardButton(text=label, callback_data=value)] for label, value in post.choices
        ]
        return InlineKeyboardMarkup(inline_keyboard=rows)
    mod = post.moderation
    if mod is None or not mod.actions or post.message_id is None:
        return None
    row = [
        InlineKeyboardButton(
            text=MODERATION_LABELS.get(a, a), callback_data=f"m:{post.message_id}:{a}"
        )
        for a in mod.actions
    ]
    return InlineKeyboardMarkup(inline_keyboard=[row])


class TelegramPlatform:
    name = "telegram"

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def create_thread(self, chat_id: str, title: str) -> str:
        topic = await call(
            "createForumTopic",
            lambda: self.bot.create_forum_topic(
                chat_id=int(chat_id), name=shorten(title, TOPIC_NAME_MAX) or "Task"
            ),
        )
        return str(topic.message_thread_id)

    async def _send(
        self,
        chat_id: str,
        thread_id: str | None,
        text: str,
        *,
        reply_to: int | None = None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> Message:
        return await call(
            "sendMessage",
            partial(
                self.bot.send_message,
                chat_id=int(chat_id),
                message_thread_id=int(thread_id) if thread_id else None,
                text=text,
                parse_mode="HTML",
                link_preview_options=NO_PREVIEW,
                reply_parameters=(
                    ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
                    if reply_to
                    else None
                ),
                reply_markup=markup,
            ),
            gone=THREAD_GONE if thread_id else (),
        )

    async def _edit(
        self,
        chat_id: str,
        message_id: str,
        text: str,
        *,
        gone: tuple[str, ...] = (),
        markup: InlineKeyboardMarkup | None = None,
    ) -> None:
        try:
            await call(
                "editMessageText",
                lambda: self.bot.edit_message_text(
                    chat_id=int(chat_id),
                    message_id=int(message_id),
                    text=text,
                    parse_mode="HTML",
                    link_preview_options=NO_PREVIEW,
                    reply_markup=markup,
                ),
                gone=gone,
            )
        except DeliveryError as e:
            if "not modified" not in e.reason:
                raise

    async def post_root(self, chat_id: str, thread_id: str | None, root: RootMessage) -> ThreadRef:
        assert thread_id is not None
        msg = await self._send(chat_id, thread_id, render_root(root))
        return ThreadRef(thread_id, str(msg.message_id))

    async def post(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str:
        """Shows the post whole: a text longer than one message goes out in parts, each
        later part replying to the first, whose id stands for the post."""
        markup = keyboard(post)
        first: int | None = None
        for text in render_post(post):
            if first is None:
                msg = await self._send(
                    chat_id,
                    thread_id,
                    text,
                    reply_to=int(reply_to) if reply_to else None,
                    markup=markup,
                )
                first = msg.message_id
            else:
                await self._send(chat_id, thread_id, text, reply_to=first)
        assert first is not None
        return str(first)

    def _media_sender(self, kind: str) -> tuple[str, Callable[..., Awaitable[Message]], str]:
        """The Bot API method that shows a file of this kind, and its file parameter."""
        if kind == "image":
            return "sendPhoto", self.bot.send_photo, "photo"
        if kind == "video":
            return "sendVideo", self.bot.send_video, "video"
        if kind == "audio":
            return "sendAudio", self.bot.send_audio, "audio"
        return "sendDocument", self.bot.send_document, "document"

    async def post_media(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str:
        """Each picture or file as itself (Telegram fetches the URL), the first carrying the
        post's line as its caption; a line too long for a caption goes first as text. A
        URL Telegram refuses (too big, not reachable) is shown as a link instead."""
        caption = render_caption(post)
        first: str | None = None
        if caption is None:
            first = await self.post(chat_id, thread_id, replace(post, media=()), reply_to)
        for kind, url in post.media:
            method, send, field = self._media_sender(kind)
            target = first or reply_to
            args: dict[str, Any] = {
                field: url,
                "chat_id": int(chat_id),
                "message_thread_id": int(thread_id) if thread_id else None,
                "reply_parameters": (
                    ReplyParameters(message_id=int(target), allow_sending_without_reply=True)
                    if target
                    else None
                ),
            }
            if first is None:
                # the captioned item stands for the comment: it carries its buttons
                args.update(caption=caption, parse_mode="HTML", reply_markup=keyboard(post))
            try:
                msg = await call(
                    method, partial(send, **args), gone=THREAD_GONE if thread_id else ()
                )
                shown = str(msg.message_id)
            except DeliveryError as e:
                if e.retryable:
                    raise
                log.info("media shown as a link", extra={"method": method, "reason": e.reason})
                alone = post if first is None else replace(post, text="", author=post.author)
                shown = await self.post(
                    chat_id, thread_id, replace(alone, media=((kind, url),)).with_links(), target
                )
            first = first or shown
        assert first is not None
        return first

    async def edit(self, chat_id: str, thread_id: str, message_id: str, post: ChatPost) -> None:
        if post.media:
            caption = render_caption(post)
            if caption is not None:
                try:
                    await call(
                        "editMessageCaption",
                        lambda: self.bot.edit_message_caption(
                            chat_id=int(chat_id),
                            message_id=int(message_id),
                            caption=caption,
                            parse_mode="HTML",
                            reply_markup=keyboard(post),
                        ),
                    )
                    return
                except DeliveryError as e:
                    if e.retryable:
                        raise
                    if "not modified" in e.reason:
                        return
                    # shown as text after all (a refused URL, a long line): edit the text
            post = post.with_links()
        await self._edit(chat_id, message_id, render_edit(post), markup=keyboard(post))

    async def set_thread_state(self, chat_id: str, thread: ThreadRef, root: RootMessage) -> None:
        is_open = root.status == "open"
        toggle = self.bot.reopen_forum_topic if is_open else self.bot.close_forum_topic
        try:
            await call(
                "reopenForumTopic" if is_open else "closeForumTopic",
                partial(toggle, chat_id=int(chat_id), message_thread_id=int(thread.thread_id)),
                gone=THREAD_GONE,
            )
        except DeliveryError as e:
            # TOPIC_NOT_MODIFIED: a staff member closed or reopened it by hand already
            if "NOT_MODIFIED" not in e.reason.upper():
                raise
        await self._edit(chat_id, thread.root_message_id, render_root(root), gone=ROOT_GONE)

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

    async def fetch_file(self, file_id: str) -> tuple[bytes, str]:
        """A file posted in the chat (``FileFetch``): getFile, then its download. Bots may
        download files up to 20 MB."""
        file = await call("getFile", partial(self.bot.get_file, file_id))
        if not file.file_path:
            raise DeliveryError("Telegram gave no path for the file", retryable=False)
        data = await self.bot.download_file(file.file_path)
        if data is None:
            raise DeliveryError("the file could not be downloaded", retryable=True)
        kind = mimetypes.guess_type(file.file_path)[0] or "application/octet-stream"
        return data.read(), kind

    def thread_link(self, chat_id: str, thread: ThreadRef) -> str | None:
        if chat_id.startswith("-100"):
            return f"https://t.me/c/{chat_id[4:]}/{thread.thread_id}"
        return None

    async def notify_assignee(self, chat_id: str, thread: ThreadRef, user: str, title: str) -> bool:
        if not user.lstrip("-").isdigit():
            return False  # a @username cannot be messaged directly; the mention notifies
        url = self.thread_link(chat_id, thread)
        link = f"\n{url}" if url else ""
        text = f"New task for you: {shorten(inert(title), TITLE_MAX)}{link}"
        try:
            await self.bot.send_message(
                chat_id=int(user), text=text, link_preview_options=NO_PREVIEW
            )
        except TelegramAPIError:
            return False  # the user never started a chat with the bot
        return True
