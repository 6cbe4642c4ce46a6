"""SQLAlchemy 2 typed models. Times are UTC; scheduling fields are epoch seconds (floats)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Page(Base):
    """A connected Facebook Page and the chat that receives its tasks."""

    __tablename__ = "pages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    token_encrypted: Mapped[str] = mapped_column(Text)
    chat_platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64), index=True)
    connected_by: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(default=True)
    token_alerted: Mapped[bool] = mapped_column(default=False)
    # the Instagram business account connected to the Page: its comments come as its own
    ig_account_id: Mapped[str | None] = mapped_column(String(64), index=True)
    connected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fb_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    picture_url: Mapped[str | None] = mapped_column(Text)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    fields: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Post(Base):
    """A page post as read once from the Graph API."""

    __tablename__ = "posts"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    page_id: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    permalink_url: Mapped[str | None] = mapped_column(Text)
    created_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fetch_error: Mapped[str | None] = mapped_column(Text)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # One open task per post, enforced by the database so that concurrent workers or
        # replicas cannot open two topics for the same post.
        Index(
            "uq_tasks_open_post",
            "page_id",
            "post_id",
            unique=True,
            sqlite_where=text("status = 'open' AND post_id IS NOT NULL"),
            postgresql_where=text("status = 'open' AND post_id IS NOT NULL"),
        ),
        # One open Messenger task per contact and page.
        Index(
            "uq_tasks_open_dm",
            "page_id",
            "contact_id",
            unique=True,
            sqlite_where=text("status = 'open' AND channel = 'messenger'"),
            postgresql_where=text("status = 'open' AND channel = 'messenger'"),
        ),
        Index("ix_tasks_thread", "chat_platform", "chat_id", "thread_id"),
        # a post's tasks, newest first (the merged one a new comment may lead to)
        Index("ix_tasks_post", "page_id", "post_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    page_id: Mapped[str] = mapped_column(ForeignKey("pages.id"))
    channel: Mapped[str] = mapped_column(String(16))  # "comments" | "messenger"
    post_id: Mapped[str | None] = mapped_column(String(128))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")
    title: Mapped[str] = mapped_column(Text)
    root_text: Mapped[str] = mapped_column(Text)
    additional_data: Mapped[str] = mapped_column(Text, default="")
    assignees: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    chat_platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    thread_id: Mapped[str | None] = mapped_column(String(64))
    root_message_id: Mapped[str | None] = mapped_column(String(64))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Message(Base):
    """One relayed customer comment, page comment, staff answer or internal note."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("fb_id", name="uq_messages_fb_id"),
        Index("ix_messages_task", "task_id", "id"),
        Index("ix_messages_chat", "task_id", "chat_message_id"),
        Index("ix_messages_post", "fb_post_id", "created_at"),
        # A staff message is handled once, even if two replicas handle its update at once.
        # (Customer comments may share a chat message: a digest.)
        Index(
            "uq_messages_staff_chat",
            "task_id",
            "chat_message_id",
            unique=True,
            sqlite_where=text("direction IN ('staff', 'note') AND chat_message_id IS NOT NULL"),
            postgresql_where=text("direction IN ('staff', 'note') AND chat_message_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    # "customer" | "page" | "staff" | "note"
    direction: Mapped[str] = mapped_column(String(16))
    fb_id: Mapped[str | None] = mapped_column(String(128))
    fb_parent_id: Mapped[str | None] = mapped_column(String(128))
    # the post a comment is on (a merged task holds comments of several posts)
    fb_post_id: Mapped[str | None] = mapped_column(String(128))
    author_fb_id: Mapped[str | None] = mapped_column(String(64))
    author_name: Mapped[str] = mapped_column(String(255), default="")
    staff_user_id: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text, default="")
    # the customer message a staff answer goes to
    answers_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    # moderation from the chat: the last action done on Facebook ("hide", "unhide", "like",
    # "delete"), by whom (a display name), and whether the Page likes the comment
    moderation: Mapped[str | None] = mapped_column(String(16))
    moderated_by: Mapped[str | None] = mapped_column(String(255))
    liked: Mapped[bool] = mapped_column(default=False)
    # id of this message in the chat (the relayed copy, or the staff member's own message)
    chat_message_id: Mapped[str | None] = mapped_column(String(64))
    # "pending" | "relayed" | "sending" | "delivered" | "failed" | "internal"
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # "edited" | "hidden" | "removed" | None
    fb_status: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # pictures and files: [{"type": "image", "url": …}] of a customer's message, or
    # [{"type": "image", "file_id": …}] of a staff answer (a file in the chat platform)
    media: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)


class Template(Base):
    __tablename__ = "templates"

    page_id: Mapped[str] = mapped_column(ForeignKey("pages.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "task" | "contact"
    body: Mapped[dict[str, object]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class InboxItem(Base):
    """A delivery as received, stored before it is acknowledged (durable intake)."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("source", "dedupe_key", name="uq_inbox_source_key"),
        Index("ix_inbox_pending", "processed_at", "id"),
        # the unprocessed deliveries of a lane, oldest first: which one is the lane's head
        Index(
            "ix_inbox_lane_pending",
            "lane",
            "id",
            sqlite_where=text("processed_at IS NULL"),
            postgresql_where=text("processed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # "facebook" | "telegram" | "slack"
    dedupe_key: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[float] = mapped_column(Float)
    processed_at: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    # The ordering key (a Facebook page, a Telegram chat, a Slack channel): replicas take
    # only the oldest unprocessed delivery of a lane (and those right behind it), so one
    # lane is handled in arrival order while other lanes run elsewhere. None: no order.
    lane: Mapped[str | None] = mapped_column(String(128))
    # a replica's lease on the delivery (PostgreSQL; SQLite serves one process)
    claimed_until: Mapped[float | None] = mapped_column(Float)


class OutboxJob(Base):
    """A call to a platform, persisted so that a restart loses nothing.

    Jobs of one ``lane`` run strictly in id order: the messages of one task keep their order.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_state_lane", "state", "lane", "id"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lane: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    # a runner's lease: while it lasts, no other runner (or replica) starts the job
    claimed_until: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateLimit(Base):
    """The pacing state of one destination (``tg:chat:-100…``, ``tg:global``, ``fb:page:…``)
    shared by every replica (PostgreSQL): GCRA's theoretical arrival time and the send times
    still inside the limit's window. Updated under ``SELECT … FOR UPDATE`` by the claim."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    tat: Mapped[float] = mapped_column(Float, default=0.0)
    sent: Mapped[list[float]] = mapped_column(JSON, default=list)


class Lease(Base):
    """Work that one replica does at a time (catch-up and pruning, Telegram long polling):
    held while renewed, taken over by another replica once ``until`` has passed."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    until: Mapped[float] = mapped_column(Float)


class QuickReply(Base):
    __tablename__ = "quick_replies"

    page_id: Mapped[str] = mapped_column(ForeignKey("pages.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)


class ConnectLink(Base):
    """A one-time link to connect Pages in the browser, bound to the chat and the person
    that asked. Only hashes of the secrets (the link's code, the OAuth ``state``, the
    browser's cookie, the form's token) are stored: a read of the table opens nothing."""

    __tablename__ = "connect_links"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    chat_platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    opened_at: Mapped[float | None] = mapped_column(Float)
    state_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    browser_hash: Mapped[str | None] = mapped_column(String(64))
    form_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    # the long-lived user token between Facebook's answer and the ticked form, sealed with
    # SECRET_KEY; wiped once the Pages are bound
    user_token_encrypted: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[float | None] = mapped_column(Float)


class PageTokenHealth(Base):
    """What the last debug_token check said of a Page's token. Times are epoch seconds."""

    __tablename__ = "page_token_health"

    page_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # valid | expiring | invalid | unknown
    reason: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[float | None] = mapped_column(Float)
    data_access_expires_at: Mapped[float | None] = mapped_column(Float)
    checked_at: Mapped[float] = mapped_column(Float)
    # the deadline the chat was warned about: one warning per deadline
    warned_deadline: Mapped[float | None] = mapped_column(Float)


class DataDeletionRequest(Base):
    """A person's data deletion request from Facebook: what was deleted, by confirmation
    code. The person's Facebook id is not kept."""

    __tablename__ = "data_deletion_requests"

    confirmation_code: Mapped[str] = mapped_column(String(32), primary_key=True)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    summary: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


class PrivateReply(Base):
    """A private reply (``/dm``) to a person's comment: one per comment, as Facebook
    allows. ``psid``: whom it reached in Messenger (the Send API's ``recipient_id``), so
    that their answer's task links back to the comment's."""

    __tablename__ = "private_replies"

    comment_fb_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    psid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MediaLink(Base):
    """A file staff posted in a thread, offered to Facebook at ``{PUBLIC_URL}/media/{token}``
    until ``expires_at`` (epoch seconds): Facebook fetches it from there. The token is the
    only key: unguessable, one per file sent."""

    __tablename__ = "media_links"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))  # the chat platform holding the file
    file_id: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
