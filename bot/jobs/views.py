"""Stored rows as the neutral messages the chat platforms render."""

from __future__ import annotations

from bot import routing
from bot.domain import Direction
from bot.ports import ChatPost, Moderation, PostKind, RootMessage
from bot.storage.db import Database
from bot.storage.models import Message, Task
from bot.storage.repositories import Repositories, message_view


def moderation_of(msg: Message) -> Moderation | None:
    """A relayed comment's buttons and state line; None for what cannot be moderated."""
    state = routing.CommentState(message_view(msg), msg.fb_status, bool(msg.liked))
    offer = routing.moderation_offer(state)
    line = routing.moderation_line(msg.fb_status, bool(msg.liked), msg.moderation, msg.moderated_by)
    if not offer and line is None:
        return None
    return Moderation(offer, line)


def chat_post(msg: Message) -> ChatPost:
    return ChatPost(
        moderation=moderation_of(msg),
        kind=PostKind.PAGE if msg.direction == Direction.PAGE else PostKind.CUSTOMER,
        author=msg.author_name,
        text=msg.text,
        fb_status=msg.fb_status,
        is_reply=bool(msg.fb_parent_id and msg.fb_post_id and msg.fb_parent_id != msg.fb_post_id),
        message_id=msg.id,
        media=tuple(
            (str(m.get("type") or "file"), str(m["url"])) for m in msg.media or () if m.get("url")
        ),
    )


def notice(text: str, choices: tuple[tuple[str, str], ...] = ()) -> ChatPost:
    return ChatPost(kind=PostKind.NOTICE, author="", text=text, choices=choices)


async def root_of(db: Database, repo: Repositories, task: Task) -> RootMessage:
    post_url = None
    if task.post_id is not None:
        async with db.read() as s:
            post = await repo.posts.get(s, task.post_id)
        post_url = post.permalink_url if post is not None else None
    return RootMessage(
        task_id=task.id,
        title=task.title,
        description=task.root_text,
        assignees=tuple(task.assignees),
        additional_data=task.additional_data,
        status=task.status,
        tags=tuple(task.tags),
        post_url=post_url,
    )
