"""Domain events and values: what the edges turn platform payloads into. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class TaskStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    MERGED = "merged"  # closed into another task, which carries on


class Channel(StrEnum):
    """Which Facebook object a task's answers go to."""

    COMMENTS = "comments"
    MESSENGER = "messenger"


class Direction(StrEnum):
    CUSTOMER = "customer"  # written by the person on Facebook
    PAGE = "page"  # written as the Page on Facebook itself (not through us)
    STAFF = "staff"  # an answer staff wrote in the chat
    NOTE = "note"  # internal, never leaves the chat


class MessageState(StrEnum):
    PENDING = "pending"
    RELAYED = "relayed"  # a customer or page message shown in the chat
    SENDING = "sending"  # a staff answer whose call to Facebook may have happened
    DELIVERED = "delivered"
    FAILED = "failed"
    INTERNAL = "internal"


@dataclass(frozen=True)
class FbUser:
    id: str
    name: str | None = None


@dataclass(frozen=True)
class CommentEvent:
    """A feed change about a comment. ``verb``: add, edited, remove, hide, unhide."""

    page_id: str
    post_id: str
    comment_id: str
    parent_id: str | None
    verb: str
    author: FbUser
    text: str
    created_time: datetime
    # a photo, video, sticker or GIF with the comment (the feed change's photo/video)
    attachments: tuple[Attachment, ...] = ()
    # on the Page's Instagram account: ``page_id`` is then the Instagram account's id (until
    # the core maps it to its Page) and ``post_id`` the media's
    instagram: bool = False

    @property
    def is_reply(self) -> bool:
        return self.parent_id is not None and self.parent_id != self.post_id


@dataclass(frozen=True)
class PostRemovedEvent:
    page_id: str
    post_id: str


@dataclass(frozen=True)
class Attachment:
    """A file in a Messenger message: ``kind`` is Facebook's type (image, video, audio,
    file, …), ``url`` where Facebook serves it."""

    kind: str
    url: str | None

    @property
    def is_media(self) -> bool:
        """Shown in the chat as a picture or file (others stay a link in the text)."""
        return self.url is not None and self.kind in MEDIA_KINDS


MEDIA_KINDS = ("image", "video", "audio", "file")


@dataclass(frozen=True)
class MessengerEvent:
    """A direct message to the page (or, with ``is_echo``, one the page sent).

    ``app_id``/``metadata`` come with echoes: the app that sent it and what that app
    attached (ours: ``pagedesk:<message id>``); no app id means a person wrote it in the
    Page's inbox."""

    page_id: str
    sender_id: str
    recipient_id: str
    mid: str
    text: str
    timestamp: datetime
    is_echo: bool = False
    app_id: str | None = None
    metadata: str | None = None
    attachments: tuple[Attachment, ...] = ()
    is_deleted: bool = False  # the person deleted the message ``mid``


FacebookEvent = CommentEvent | PostRemovedEvent | MessengerEvent


@dataclass(frozen=True)
class PostInfo:
    id: str
    text: str
    url: str | None
    created_time: datetime | None


@dataclass(frozen=True)
class PageAccount:
    """A page the operator's token manages, with the page's own token."""

    id: str
    name: str
    access_token: str


@dataclass(frozen=True)
class PageInfo:
    id: str
    name: str
