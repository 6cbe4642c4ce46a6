"""Small ports between the core and the edges. Extra abilities get their own protocol."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from bot.domain import CommentEvent, PageAccount, PostInfo


@dataclass(frozen=True)
class RootMessage:
    """The root of a task's thread, neutral of any chat platform."""

    task_id: int
    title: str
    description: str
    assignees: tuple[str, ...]
    additional_data: str
    status: str  # "open" | "closed"
    tags: tuple[str, ...] = ()
    post_url: str | None = None  # where a shortened description links to


class PostKind(StrEnum):
    CUSTOMER = "customer"  # a relayed comment or message of a person
    PAGE = "page"  # written as the Page on Facebook itself
    NOTICE = "notice"  # the bot speaking
    DIGEST = "digest"  # several comments at once, in ``items``


@dataclass(frozen=True)
class Moderation:
    """The moderation buttons of a relayed comment: which actions to offer ("hide",
    "unhide", "like", "delete"; ``routing.moderation_offer``) and the state line of the
    last one done ("hidden by Ines"). Buttons name the message by ``ChatPost.message_id``."""

    actions: tuple[str, ...] = ()
    state: str | None = None


@dataclass(frozen=True)
class ChatPost:
    """One message in a task's thread: a relayed comment, a page comment or a notice."""

    kind: str  # PostKind
    author: str
    text: str
    fb_status: str | None = None  # "edited" | "hidden" | "removed"
    is_reply: bool = False
    picture_url: str | None = None
    message_id: int | None = None  # our id, for a per-message "Reply" action
    only_for: str | None = None  # a chat user id: shown to that user alone, where possible
    choices: tuple[tuple[str, str], ...] = ()  # (label, value): buttons or a select
    items: tuple[ChatPost, ...] = ()
    moderation: Moderation | None = None  # a relayed comment's buttons and state line
    # pictures and files with it: (kind, url), kind "image" | "video" | "audio" | "file"
    media: tuple[tuple[str, str], ...] = ()

    def with_links(self) -> ChatPost:
        """The post as text alone: its media as links ("[image] https://…") after it, for
        where media cannot be shown (a digest, a platform without ``MediaPosts``, a URL
        the platform refused)."""
        if not self.media and not self.items:
            return self
        links = "\n".join(f"[{kind}] {url}" for kind, url in self.media)
        text = "\n".join(t for t in (self.text, links) if t)
        return replace(self, text=text, media=(), items=tuple(i.with_links() for i in self.items))


@dataclass(frozen=True)
class ThreadRef:
    thread_id: str
    root_message_id: str


class ChatPlatform(Protocol):
    """Where staff work: a thread per task. What every chat platform does; further
    abilities are the small protocols below, checked with ``isinstance``."""

    name: str

    async def post_root(
        self, chat_id: str, thread_id: str | None, root: RootMessage
    ) -> ThreadRef: ...

    async def post(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str: ...

    async def edit(self, chat_id: str, thread_id: str, message_id: str, post: ChatPost) -> None: ...

    async def set_thread_state(
        self, chat_id: str, thread: ThreadRef, root: RootMessage
    ) -> None: ...


@runtime_checkable
class ThreadContainers(Protocol):
    """A platform whose threads are containers made before the root message (Telegram's
    forum topics); elsewhere the root message itself is the thread (Slack)."""

    async def create_thread(self, chat_id: str, title: str) -> str: ...


@runtime_checkable
class DeliveryMarks(Protocol):
    """A platform that marks a delivered answer on its message (a reaction)."""

    async def mark_delivered(self, chat_id: str, thread_id: str, message_id: str) -> None: ...


@runtime_checkable
class MediaPosts(Protocol):
    """A platform that shows a post's ``media`` as pictures and files (elsewhere they are
    links in its text). It falls back to the links itself when the platform refuses a URL."""

    async def post_media(
        self, chat_id: str, thread_id: str, post: ChatPost, reply_to: str | None = None
    ) -> str: ...


@runtime_checkable
class FileFetch(Protocol):
    """A platform whose files (what staff post in a thread) the app can download, to hand
    them on to Facebook: (the bytes, their content type)."""

    async def fetch_file(self, file_id: str) -> tuple[bytes, str]: ...


@runtime_checkable
class FileCheck(Protocol):
    """A platform that can tell, before anything of an answer goes out, whether a file can
    be handed on (it still exists, is not too big, is a file at all), without downloading
    it. Raises ``DeliveryError`` with the reason staff are shown."""

    async def check_file(self, file_id: str) -> None: ...


@runtime_checkable
class ThreadLinks(Protocol):
    def thread_link(self, chat_id: str, thread: ThreadRef) -> str | None:
        """A link staff can open, where the chat has one."""
        ...


@runtime_checkable
class AssigneeNotifier(Protocol):
    async def notify_assignee(self, chat_id: str, thread: ThreadRef, user: str, title: str) -> bool:
        """A direct message with a link to the task, where the platform allows it."""
        ...


class FacebookGateway(Protocol):
    async def accounts(self, user_token: str) -> list[PageAccount]: ...

    async def subscribe_app(self, page_id: str, page_token: str, fields: list[str]) -> None: ...

    async def post(self, post_id: str, page_token: str) -> PostInfo: ...

    async def profile(self, user_id: str, page_token: str) -> tuple[str | None, str | None]: ...

    async def comments(
        self, page_id: str, post_id: str, page_token: str, since: datetime | None
    ) -> list[CommentEvent]: ...

    async def reply_to_comment(
        self, comment_id: str, text: str, page_token: str, *, attachment_url: str | None = None
    ) -> str: ...

    async def send_message(
        self,
        psid: str,
        text: str,
        page_token: str,
        *,
        messaging_type: str = "RESPONSE",
        tag: str | None = None,
        metadata: str | None = None,
        attachment: tuple[str, str] | None = None,
    ) -> str: ...

    async def private_reply(
        self,
        page_id: str,
        comment_id: str,
        text: str,
        page_token: str,
        *,
        metadata: str | None = None,
    ) -> tuple[str, str]:
        """(the person's page-scoped id, the message id)."""
        ...

    async def find_comment_reply(
        self, comment_id: str, page_id: str, text: str, page_token: str
    ) -> str | None:
        """The page's reply with this text under the comment, if Facebook stored one: asked
        after a timeout or 5xx, before the reply is posted again."""
        ...

    async def hide_comment(
        self, comment_id: str, hidden: bool, page_token: str, *, instagram: bool = False
    ) -> None:
        """Hide or unhide a comment (Instagram's field is ``hide``, Facebook's
        ``is_hidden``)."""
        ...

    async def like_comment(self, comment_id: str, page_token: str) -> None: ...

    async def instagram_account(self, page_id: str, page_token: str) -> str | None:
        """The id of the Instagram business account connected to the Page, if any."""
        ...

    async def reply_to_ig_comment(self, comment_id: str, text: str, page_token: str) -> str:
        """``POST /{ig-comment-id}/replies``: an answer under an Instagram comment."""
        ...

    async def delete_comment(self, comment_id: str, page_token: str) -> None: ...

    async def find_sent_message(
        self, page_id: str, psid: str, text: str, page_token: str
    ) -> str | None:
        """The page's Messenger message with this text to the person, if Facebook stored
        one: asked after a timeout or 5xx, before the message is sent again."""
        ...

    async def sent_attachments(
        self, page_id: str, psid: str, page_token: str, *, since: datetime
    ) -> list[str]:
        """The page's Messenger messages to the person that are a picture or file alone,
        sent since ``since``, newest first: asked after a timeout or 5xx of a file's send."""
        ...
