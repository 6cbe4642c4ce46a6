"""The product's rules, pure: Facebook events and staff messages in, decisions out.

Nothing here talks to a network or a database. The caller (``bot.core``) loads the
views these functions need, calls them, and carries out what they decide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot.domain import (
    Channel,
    CommentEvent,
    Direction,
    MessengerEvent,
    PageInfo,
    TaskStatus,
)

T = TypeVar("T")

# --- views of stored state the rules look at ------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    id: int
    status: str  # TaskStatus
    merged_into_id: int | None = None
    channel: str = Channel.COMMENTS


@dataclass(frozen=True)
class MessageView:
    id: int
    direction: str  # Direction
    fb_id: str | None
    fb_parent_id: str | None
    text: str
    state: str
    post_id: str | None = None
    author_fb_id: str | None = None


# --- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class BindEcho:
    """The page's comment is our own staff answer coming back: remember its id, show nothing."""

    message_id: int


@dataclass(frozen=True)
class JoinTask:
    task_id: int
    as_page: bool = False


@dataclass(frozen=True)
class OpenTask:
    pass


@dataclass(frozen=True)
class MarkRelayed:
    """An edit, hide, unhide or removal of a message already relayed."""

    message_id: int
    fb_status: str  # "edited" | "hidden" | "removed" | "visible"
    text: str | None


CommentDecision = Ignore | BindEcho | JoinTask | OpenTask | MarkRelayed


def route_comment(
    ev: CommentEvent,
    page: PageInfo,
    *,
    known: MessageView | None,
    open_task: TaskView | None,
    unconfirmed_answers: Sequence[MessageView] = (),
) -> CommentDecision:
    """Decide what a comment feed event does.

    ``known`` is the message already stored under this comment id (a repeat delivery, our
    own answer, or the comment an edit refers to). ``unconfirmed_answers`` are staff answers
    on this post that were sent but whose Facebook id we have not stored yet: the webhook
    echo of an answer can overtake the Graph API's reply to our POST.
    """
    by_page = ev.author.id == page.id
    if ev.verb in ("edited", "hide", "unhide", "remove"):
        if known is None:
            return Ignore(f"{ev.verb} of a comment we never relayed")
        if ev.verb == "edited":
            if known.direction == Direction.STAFF or known.text == ev.text:
                return Ignore("edit echo of our own answer or no change")
            return MarkRelayed(known.id, "edited", ev.text)
        status = {"hide": "hidden", "unhide": "visible", "remove": "removed"}[ev.verb]
        return MarkRelayed(known.id, status, None)
    if ev.verb != "add":
        return Ignore(f"comment verb {ev.verb!r}")
    if known is not None:
        return Ignore("comment already seen")
    if by_page:
        for answer in unconfirmed_answers:
            if answer.text.strip() == ev.text.strip():
                return BindEcho(answer.id)
        if open_task is None:
            return Ignore("page comment on a post without an open task")
        return JoinTask(open_task.id, as_page=True)
    if open_task is not None:
        return JoinTask(open_task.id)
    return OpenTask()


def route_direct_message(
    ev: MessengerEvent,
    page: PageInfo,
    *,
    known: MessageView | None,
    open_task: TaskView | None,
    unconfirmed_answers: Sequence[MessageView] = (),
) -> CommentDecision:
    """Messenger: one open task per contact on the page's inbox."""
    if known is not None:
        return Ignore("message already seen")
    if ev.is_echo:
        for answer in unconfirmed_answers:
            if answer.text.strip() == ev.text.strip():
                return BindEcho(answer.id)
        if open_task is None:
            return Ignore("page message without an open task")
        return JoinTask(open_task.id, as_page=True)
    if open_task is not None:
        return JoinTask(open_task.id)
    return OpenTask()


# --- staff messages in a task's thread -----------------------------------------------------


INTERNAL_PREFIXES = ("note:", "private:")


@dataclass(frozen=True)
class Internal:
    text: str


@dataclass(frozen=True)
class Command:
    name: str
    args: str


@dataclass(frozen=True)
class Answer:
    """Post ``text`` to Facebook as the Page, answering ``target``."""

    target: MessageView
    text: str


@dataclass(frozen=True)
class Refuse:
    reason: str


StaffDecision = Internal | Command | Answer | Refuse


def parse_command(text: str, prefixes: str = "/") -> Command | None:
    stripped = text.strip()
    if not stripped or stripped[0] not in prefixes:
        return None
    head, _, args = stripped[1:].partition(" ")
    name = head.split("@", 1)[0].lower()  # Telegram: /close@pagedesk_bot
    if not name or not name.replace("_", "").isalnum():
        return None
    return Command(name, args.strip())


def route_staff_message(
    text: str,
    *,
    explicit_target: MessageView | None,
    latest_customer: MessageView | None,
    command_prefixes: str = "/",
    page_here: bool = True,
) -> StaffDecision:
    """A staff member wrote in a task's thread: note, command, or answer to the customer.

    The answer goes to the comment the staff member replied to, else to the latest
    customer message of the task.
    """
    stripped = text.strip()
    if not stripped:
        return Refuse("only text can be sent to Facebook")
    if stripped.lower().startswith(INTERNAL_PREFIXES):
        return Internal(stripped)
    command = parse_command(stripped, command_prefixes)
    if command is not None:
        return Command(command.name, command.args)
    if not page_here:
        return Refuse("the Page is no longer connected to this chat")
    target = explicit_target
    if target is not None and target.direction != Direction.CUSTOMER:
        target = None
    target = target or latest_customer
    if target is None:
        return Refuse("there is no customer message in this task to answer")
    return Answer(target, stripped)


# --- a task's life: removal of its post, close, reopen, merge --------------------------------


@dataclass(frozen=True)
class CloseTask:
    note: str


def route_post_removed(open_task: TaskView | None) -> CloseTask | Ignore:
    """A removed post ends its conversation: its open task closes, with a note."""
    if open_task is None:
        return Ignore("no open task on the removed post")
    return CloseTask("The post was removed on Facebook: task closed.")


def close_refusal(task: TaskView) -> str | None:
    if task.status != TaskStatus.OPEN:
        return "This task is already closed."
    return None


def reopen_refusal(task: TaskView, *, page_here: bool, newer_open: int | None) -> str | None:
    """Why a task cannot be reopened, or None. One open task per post: a newer one for
    the same post must be closed first. A task of a Page that left this chat stays shut."""
    if task.status == TaskStatus.OPEN:
        return "This task is already open."
    if task.merged_into_id is not None:
        return f"This task was merged into #{task.merged_into_id}: work there."
    if not page_here:
        return "Not reopened: the Page is no longer connected to this chat."
    if newer_open is not None:
        return f"A newer task for this post is open (#{newer_open}): close it first."
    return None


def merge_refusal(
    task: TaskView,
    other: TaskView | None,
    other_ref: int,
    *,
    other_in_chat: bool,
    other_survivor: int | None,
    task_survivor: int,
) -> str | None:
    """Why ``other`` cannot be merged into ``task``, or None. A task of another chat's
    Pages is answered like one that does not exist: one chat never reaches another."""
    if other is None or not other_in_chat:
        return f"There is no task #{other_ref} among this chat's Pages."
    if other.id == task.id or other_survivor == task.id:
        return "That task is already this one."
    if task_survivor == other.id:
        return f"This task was merged into #{other.id}: merge there instead."
    if task.status != TaskStatus.OPEN:
        return "Reopen this task first: a closed task cannot take another one in."
    return None


def visible_tasks(tasks: Sequence[T], chat_pages: set[str], page_of: Callable[[T], str]) -> list[T]:
    """What a contact card in a chat may list: tasks of the Pages connected there."""
    return [t for t in tasks if page_of(t) in chat_pages]


# --- where a staff answer goes -------------------------------------------------------------


@dataclass(frozen=True)
class CommentReply:
    """``POST /{comment_id}/comments``."""

    comment_id: str


@dataclass(frozen=True)
class MessengerSend:
    """The Send API, to the person's page-scoped id."""

    psid: str


def answer_destination(task: TaskView, target: MessageView) -> CommentReply | MessengerSend:
    """The channel belongs to the task: a Messenger task answers through the Send API,
    a comment task under the comment (the top-level one: Facebook threads one deep)."""
    if task.channel == Channel.MESSENGER:
        return MessengerSend(target.author_fb_id or "")
    return CommentReply(comment_reply_target(target))


def comment_reply_target(target: MessageView) -> str:
    """The Facebook object a comment answer is posted under.

    Facebook threads comments one level deep: a reply to a reply goes under the top-level
    comment, so answering a reply posts to its parent.
    """
    assert target.fb_id is not None
    parent = target.fb_parent_id
    if parent and parent != target.post_id:
        return parent
    return target.fb_id
