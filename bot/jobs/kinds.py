"""Outbox jobs: one small dataclass per kind, serialised and validated at the storage edge.

A job is stored as its ``kind`` and a JSON payload of its fields, plus the pacing keys the
outbox reads (``pace``, ``pace_cost``). ``decode`` validates a stored payload back into
its dataclass, so a handler gets typed fields or the job fails with the reason. A new kind
is one dataclass here and one handler registered with the runner.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError


class JobKind(StrEnum):
    OPEN_THREAD = "open_thread"
    RELAY = "relay"
    REFRESH = "refresh"
    SHOW_ANSWER = "show_answer"
    MARK_DELIVERED = "mark_delivered"
    NOTICE_IN_TASK = "notice_in_task"
    THREAD_STATE = "thread_state"
    CHAT_NOTICE = "chat_notice"
    FB_ANSWER = "fb_answer"
    FB_PRIVATE_REPLY = "fb_private_reply"
    MODERATE = "moderate"


@dataclass(frozen=True)
class OpenThread:
    """Open a task's thread: a topic (where the platform has them) and the root message."""

    kind: ClassVar[JobKind] = JobKind.OPEN_THREAD
    paced: ClassVar[bool] = True
    task_id: int


@dataclass(frozen=True)
class Relay:
    """Show a customer's (or the Page's own) message in the task's thread."""

    kind: ClassVar[JobKind] = JobKind.RELAY
    paced: ClassVar[bool] = True
    task_id: int
    message_id: int


@dataclass(frozen=True)
class Refresh:
    """A relayed message changed on Facebook (edited, hidden, removed): edit its copy."""

    kind: ClassVar[JobKind] = JobKind.REFRESH
    paced: ClassVar[bool] = False
    task_id: int
    message_id: int


@dataclass(frozen=True)
class ShowAnswer:
    """Show an answer given outside the thread (a modal, a quick-reply button) in it."""

    kind: ClassVar[JobKind] = JobKind.SHOW_ANSWER
    paced: ClassVar[bool] = True
    task_id: int
    message_id: int
    by: str = "Staff"


@dataclass(frozen=True)
class MarkDelivered:
    kind: ClassVar[JobKind] = JobKind.MARK_DELIVERED
    paced: ClassVar[bool] = False
    task_id: int
    message_id: int


@dataclass(frozen=True)
class NoticeInTask:
    """The bot says something in a task's thread (optionally with choices as buttons)."""

    kind: ClassVar[JobKind] = JobKind.NOTICE_IN_TASK
    paced: ClassVar[bool] = True
    task_id: int
    text: str
    reply_to: str | None = None
    choices: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ThreadState:
    """Show the task's status on its root (and close or reopen a Telegram topic)."""

    kind: ClassVar[JobKind] = JobKind.THREAD_STATE
    paced: ClassVar[bool] = False
    task_id: int


@dataclass(frozen=True)
class ChatNotice:
    """The bot says something in a chat, outside any task's lane (command answers,
    failures). ``report``: it tells of a failure (1) or of a report's own failure (2, the
    end of the line: never reported again)."""

    kind: ClassVar[JobKind] = JobKind.CHAT_NOTICE
    paced: ClassVar[bool] = True
    platform: str
    chat_id: str
    text: str
    thread_id: str | None = None
    reply_to: str | None = None
    only_for: str | None = None
    report: int = 0


@dataclass(frozen=True)
class FbAnswer:
    """Post a staff answer to Facebook."""

    kind: ClassVar[JobKind] = JobKind.FB_ANSWER
    paced: ClassVar[bool] = True
    task_id: int
    message_id: int
    # written by a person (not a quick reply or anything automatic): only such answers
    # may go out with Messenger's HUMAN_AGENT tag after the 24-hour window
    human: bool = True


@dataclass(frozen=True)
class FbPrivateReply:
    """Answer a comment privately in Messenger (``/dm``): once per comment, within 7 days."""

    kind: ClassVar[JobKind] = JobKind.FB_PRIVATE_REPLY
    paced: ClassVar[bool] = True
    task_id: int
    message_id: int


@dataclass(frozen=True)
class Moderate:
    """Hide, unhide, like (as the Page) or delete a relayed comment on Facebook; ``by``:
    the name shown in the comment's state line ("hidden by Ines")."""

    kind: ClassVar[JobKind] = JobKind.MODERATE
    paced: ClassVar[bool] = True
    task_id: int
    message_id: int
    action: str  # routing.MODERATION_ACTIONS
    by: str = "Staff"


Job = (
    OpenThread
    | Relay
    | Refresh
    | ShowAnswer
    | MarkDelivered
    | NoticeInTask
    | ThreadState
    | ChatNotice
    | FbAnswer
    | FbPrivateReply
    | Moderate
)
TaskJob = OpenThread | Relay | Refresh | ShowAnswer | MarkDelivered | NoticeInTask | ThreadState

JOB_TYPES: dict[str, type[Job]] = {
    cls.kind: cls
    for cls in (
        OpenThread,
        Relay,
        Refresh,
        ShowAnswer,
        MarkDelivered,
        NoticeInTask,
        ThreadState,
        ChatNotice,
        FbAnswer,
        FbPrivateReply,
        Moderate,
    )
}


class BadJob(ValueError):
    """A stored job that is not a valid job of its kind (unknown kind, wrong fields)."""


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(kind: str, cls: type[Job]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(cls)
    return adapter


def encode(job: Job) -> dict[str, Any]:
    """The payload stored for a job: its fields, JSON-ready."""
    return asdict(job)


def decode(kind: str, payload: dict[str, Any]) -> Job:
    cls = JOB_TYPES.get(kind)
    if cls is None:
        raise BadJob(f"unknown job kind {kind!r}")
    names = {f.name for f in fields(cls)}
    try:
        job: Job = _adapter(kind, cls).validate_python(
            {k: v for k, v in payload.items() if k in names}
        )
    except ValidationError as e:
        raise BadJob(f"{kind} job with bad fields: {e.error_count()} error(s)") from None
    return job


# --- where a job runs and what it counts against ---------------------------------------


def chat_pace(platform: str, chat_id: str) -> list[str]:
    """The pacing keys a message into this chat counts against."""
    if platform == "telegram":
        return [f"tg:chat:{chat_id}", "tg:global"]
    return [f"slack:channel:{chat_id}"]


def page_pace(page_id: str) -> list[str]:
    return [f"fb:page:{page_id}"]


FacebookJob = FbAnswer | FbPrivateReply | Moderate


def task_lane(job: TaskJob | FacebookJob) -> str:
    """A task's chat jobs run one at a time in order (its thread keeps its order); its
    Facebook answers have their own lane, so a slow chat never holds an answer back."""
    if isinstance(job, FbAnswer | FbPrivateReply | Moderate):
        return f"fb:{job.task_id}"
    return f"chat:{job.task_id}"


def notice_lane(job: ChatNotice) -> str:
    return f"notice:{job.platform}:{job.chat_id}:{job.thread_id or ''}"
