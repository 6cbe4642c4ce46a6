"""Slack as a chat platform: a task is a channel message (Block Kit) and its thread."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.errors import DeliveryError
from bot.ports import ChatPost, RootMessage, ThreadRef

log = logging.getLogger(__name__)

T = TypeVar("T")
DELIVERED_REACTION = "white_check_mark"
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
TEXT_MAX = 2900  # a section's text is limited to 3000 characters


async def call(action: str, fn: Callable[[], Awaitable[AsyncSlackResponse]]) -> AsyncSlackResponse:
    """Run one Web API call, turning slack_sdk's errors into what the outbox acts on."""
    try:
        return await fn()
    except SlackApiError as e:
        status = e.response.status_code
        error = str(e.response.get("error", "unknown_error"))
        retry_after = e.response.headers.get("Retry-After") if e.response.headers else None
        retryable = status == 429 or status >= 500 or error in RETRYABLE_ERRORS
        raise DeliveryError(
            f"Slack refused {action}: {error}",
            retryable=retryable,
            retry_after=float(retry_after) if retry_after else None,
        ) from None
    except (aiohttp.ClientError, TimeoutError, SlackClientError) as e:
        raise DeliveryError(
            f"Slack unavailable on {action} ({type(e).__name__})", retryable=True
        ) from None


def escape(text: str) -> str:
    """Slack's three control characters; everything else is literal."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _clip(text: str, limit: int = TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mention(assignee: str) -> str:
    a = assignee.lstrip("@")
    if a[:1] in ("U", "W") and a[1:].isalnum() and a.upper() == a:
        return f"<@{a}>"
    return escape(assignee)


def root_blocks(root: RootMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(root.title, 150)}}
    ]
    if root.description:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(escape(root.description))}}
        )
    if root.assignees:
        people = " ".join(mention(a) for a in root.assignees)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"Assignees: {people}"}}
        )
    if root.tags:
        tags = " ".join("#" + escape(t) for t in root.tags)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": tags}]})
    quoted = "\n".join("> " + escape(line) for line in root.additional_data.splitlines())
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(quoted)}]})
    status = {
        "open": ":large_green_circle: open",
        "merged": ":twisted_rightwards_arrows: merged",
    }.get(root.status, ":white_check_mark: closed")
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"Status: *{status}* · task #{root.task_id}"}],
        }
    )
    if root.status == "merged":
        return blocks  # work goes on in the surviving task
    toggle = (
        {"text": "Close", "action_id": "task_close", "style": "danger"}
        if root.status == "open"
        else {"text": "Reopen", "action_id": "task_reopen", "style": "primary"}
    )
    blocks.append(
        {
            "type": "actions",
            "block_id": f"task:{root.task_id}",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": toggle["text"]},
                    "action_id": toggle["action_id"],
                    "style": toggle["style"],
                    "value": str(root.task_id),
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Quick reply"},
                    "action_id": "task_quick",
                    "value": str(root.task_id),
                },
            ],
        }
    )
    return blocks


def root_text(root: RootMessage) -> str:
    """The notification and fallback text of the root."""
    return f"{root.title} (task #{root.task_id}, {root.status})"


def post_text(post: ChatPost) -> str:
    if post.kind == "digest":
        head = f"_{len(post.items)} comments arrived together:_"
        return _clip("\n".join([head, *(post_text(i) for i in post.items)]))
    if post.kind == "notice":
        return post.text
    who = (post.author or "Someone") + (" (Page)" if post.kind == "page" else "")
    if post.fb_status == "removed":
        return f"*{escape(who)}*: ~{escape(post.text)}~\n_removed on Facebook_"
    if post.fb_status == "hidden":
        return f"*{escape(who)}*: {escape(post.text)}\n_hidden on Facebook_"
    label = " (edited)" if post.fb_status == "edited" else ""
    arrow = "↪ " if post.is_reply else ""
    return f"{arrow}*{escape(who)}*{label}: {escape(post.text)}"


def post_blocks(post: ChatPost) -> list[dict[str, Any]] | None:
    if post.kind == "digest":
        return [{"type": "section", "text": {"type": "mrkdwn", "text": post_text(post)}}]
    if post.kind == "notice" and post.choices:
        options = [
            {"text": {"type": "plain_text", "text": _clip(label, 75)}, "value": value}
            for label, value in post.choices[:100]
        ]
        return [
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(post.text)}},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "static_select",
                        "action_id": "quick_pick",
                        "placeholder": {"type": "plain_text", "text": "Quick reply"},
                        "options": options,
                    }
                ],
            },
        ]
    if post.kind == "notice":
        return None
    who = escape(post.author or "Someone") + (" (Page)" if post.kind == "page" else "")
    label = {
        "edited": " · edited",
        "hidden": " · hidden on Facebook",
        "removed": " · removed on Facebook",
    }
    header: list[dict[str, Any]] = []
    if post.picture_url:
        header.append({"type": "image", "image_url": post.picture_url, "alt_text": post.author})
    prefix = "↪ " if post.is_reply else ""
    header.append(
        {"type": "mrkdwn", "text": f"{prefix}*{who}*{label.get(post.fb_status or '', '')}"}
    )
    body = escape(post.text) or "_(no text)_"
    if post.fb_status == "removed":
        body = f"~{body}~"
    blocks: list[dict[str, Any]] = [
        {"type": "context", "elements": header},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(body)}},
    ]
    if post.kind == "customer" and post.message_id is not None and post.fb_status != "removed":
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Reply"},
                        "action_id": "comment_reply",
                        "value": str(post.message_id),
                    }
                ],
            }
        )
    return blocks


class SlackPlatform:
    name = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def create_thread(self, chat_id: str, title: str) -> str | None:
        return None  # the root message is the thread

    async def post_root(self, chat_id: str, thread_id: str | None, root: RootMessage) -> ThreadRef:
        resp = await call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=chat_id, text=root_text(root), blocks=root_blocks(root), unfurl_links=False
            ),
        )
        ts = str(resp["ts"])
        return ThreadRef(ts, ts)

    async def post(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str:
        if post.only_for:
            resp = await call(
                "chat.postEphemeral",
                lambda: self.client.chat_postEphemeral(
                    channel=chat_id,
                    user=post.only_for or "",
                    text=post_text(post),
                    thread_ts=thread_id or None,
                ),
            )
            return str(resp.get("message_ts", ""))
        resp = await call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=chat_id,
                thread_ts=thread_id or None,
                text=post_text(post),
                blocks=post_blocks(post),
                unfurl_links=False,
            ),
        )
        return str(resp["ts"])

    async def edit(self, chat_id: str, thread_id: str, message_id: str, post: ChatPost) -> None:
        await call(
            "chat.update",
            lambda: self.client.chat_update(
                channel=chat_id, ts=message_id, text=post_text(post), blocks=post_blocks(post)
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
                channel=who, text=f"New task for you: {title}\n{link.get('permalink', '')}"
            )
        except (SlackApiError, SlackClientError, aiohttp.ClientError) as e:
            log.info("assignee not notified directly", extra={"error": type(e).__name__})
            return False
        return True
