"""Slack as a chat platform: a task is a channel message (Block Kit) and its thread.

What the messages say is built in ``bot.platforms.slack_text``; here are the calls, and
``slack_to_plain``, which turns a staff member's Slack markup into what Facebook shows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import DeliveryError
from bot.platforms.slack_api import call
from bot.platforms.slack_files import SlackFiles
from bot.platforms.slack_text import (
    escape,
    media_blocks,
    post_messages,
    post_text,
    root_blocks,
    root_text,
)
from bot.ports import ChatPost, RootMessage, ThreadRef

__all__ = ["SlackPlatform", "escape", "slack_to_plain", "unescape"]

log = logging.getLogger(__name__)

T = TypeVar("T")
DELIVERED_REACTION = "white_check_mark"


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# --- staff markup to plain text -------------------------------------------------------

SPECIAL = re.compile(r"<([^<>]*)>")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(?://)?")


def _link(target: str, label: str) -> str:
    target = target.removeprefix("mailto:")
    if not label or label == target:
        return target
    # Slack makes <http://example.com|example.com> when a person types example.com
    if label == SCHEME.sub("", target, count=1):
        return label
    return f"{label} ({target})"


def slack_to_plain(text: str, user_name: Callable[[str], str | None]) -> str:
    """A staff message as a person reads it in Slack, for Facebook: links, mentions and
    channel names as their visible text, Slack's escapes undone. ``user_name`` gives a
    user id's display name (None when unknown: the mention's label, else the id, is used)."""

    def visible(m: re.Match[str]) -> str:
        inner = m.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            uid = target[1:]
            return "@" + (user_name(uid) or label.lstrip("@") or uid)
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!date^"):
            return label  # the fallback text Slack shows where it cannot format the date
        if target.startswith("!"):  # !here, !channel, !everyone, !subteam^S…|@team
            return "@" + (label.lstrip("@") or target[1:].removeprefix("subteam^"))
        return _link(target, label)

    return unescape(SPECIAL.sub(visible, text))


class SlackPlatform:
    name = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self.files = SlackFiles(client)

    async def post_root(self, chat_id: str, thread_id: str | None, root: RootMessage) -> ThreadRef:
        resp = await call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=chat_id,
                text=root_text(root),
                blocks=root_blocks(root),
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        ts = str(resp["ts"])
        return ThreadRef(ts, ts)

    async def post(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str:
        """Posts the post (in several messages if its blocks need it) and returns the ts of
        the first, which stands for all of them."""
        gone = ("thread_not_found",) if thread_id else ()
        if post.only_for:
            resp = await call(
                "chat.postEphemeral",
                lambda: self.client.chat_postEphemeral(
                    channel=chat_id,
                    user=post.only_for or "",
                    text=post_text(post),
                    thread_ts=thread_id or None,
                ),
                gone=gone,
            )
            return str(resp.get("message_ts", ""))
        first = ""
        for text, blocks in post_messages(post):
            ts = await self._post_message(chat_id, thread_id, text, blocks)
            first = first or ts
        return first

    async def _post_message(
        self, chat_id: str, thread_id: str, text: str, blocks: list[dict[str, Any]] | None
    ) -> str:
        """One chat.postMessage, never unfurled; a thread that is gone raises ThreadGone."""
        resp = await call(
            "chat.postMessage",
            partial(
                self.client.chat_postMessage,
                channel=chat_id,
                thread_ts=thread_id or None,
                text=text,
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
            ),
            gone=("thread_not_found",) if thread_id else (),
        )
        return str(resp["ts"])

    async def post_media(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str:
        """The post with its pictures as image blocks and other files as links; links
        alone when Slack cannot download a picture."""
        messages = post_messages(replace(post, media=()))
        last_text, last_blocks = messages[-1]
        if last_blocks is None or len(last_blocks) + len(post.media) > 50:
            return await self.post(chat_id, thread_id, post.with_links(), reply_to)
        first = ""
        for text, blocks in [*messages[:-1], (last_text, [*last_blocks, *media_blocks(post)])]:
            try:
                ts = await self._post_message(chat_id, thread_id, text, blocks)
            except DeliveryError as e:
                if e.retryable or first:
                    raise
                log.info("media shown as links", extra={"reason": e.reason})
                return await self.post(chat_id, thread_id, post.with_links(), reply_to)
            first = first or ts
        return first

    async def edit(self, chat_id: str, thread_id: str, message_id: str, post: ChatPost) -> None:
        if post.media:
            text, blocks = post_messages(replace(post, media=()))[0]
            try:
                await call(
                    "chat.update",
                    lambda: self.client.chat_update(
                        channel=chat_id,
                        ts=message_id,
                        text=text,
                        blocks=[*(blocks or []), *media_blocks(post)][:50],
                    ),
                )
                return
            except DeliveryError as e:
                if e.retryable:
                    raise
            post = post.with_links()
        # a post that took several messages is edited in its first; one that needs more
        # than 50 blocks now keeps the first 50 (only an edit can make a comment grow)
        text, blocks = post_messages(post)[0]
        await call(
            "chat.update",
            lambda: self.client.chat_update(
                channel=chat_id, ts=message_id, text=text, blocks=blocks
            ),
        )

    async def set_thread_state(self, chat_id: str, thread: ThreadRef, root: RootMessage) -> None:
        await call(
            "chat.update",
            lambda: self.client.chat_update(
                channel=chat_id,
                ts=thread.root_message_id,
                text=root_text(root),
                blocks=root_blocks(root),
            ),
            gone=("message_not_found",),
        )

    async def mark_delivered(self, chat_id: str, thread_id: str, message_id: str) -> None:
        try:
            await call(
                "reactions.add",
                lambda: self.client.reactions_add(
                    channel=chat_id, timestamp=message_id, name=DELIVERED_REACTION
                ),
            )
        except DeliveryError as e:
            if "already_reacted" not in e.reason:
                raise

    async def check_file(self, file_id: str) -> None:
        """``FileCheck``: whether a file staff shared can go to Facebook (files.info)."""
        await self.files.check(file_id)

    async def fetch_file(self, file_id: str) -> tuple[bytes, str]:
        """``FileFetch``: files.info, then the download with the bot token, at most 25 MB."""
        return await self.files.fetch(file_id)

    def thread_link(self, chat_id: str, thread: ThreadRef) -> str | None:
        # Slack opens archive links of the signed-in workspace
        return f"https://slack.com/archives/{chat_id}/p{thread.root_message_id.replace('.', '')}"

    async def notify_assignee(self, chat_id: str, thread: ThreadRef, user: str, title: str) -> bool:
        who = user.lstrip("@")
        try:
            link = await self.client.chat_getPermalink(
                channel=chat_id, message_ts=thread.root_message_id
            )
            await self.client.chat_postMessage(
                channel=who,
                text=f"New task for you: {escape(title)}\n{link.get('permalink', '')}",
                unfurl_links=False,
                unfurl_media=False,
            )
        except (SlackApiError, SlackClientError, aiohttp.ClientError) as e:
            log.info("assignee not notified directly", extra={"error": type(e).__name__})
            return False
        return True
