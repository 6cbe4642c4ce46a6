"""The product's rules, pure: Facebook events and staff messages in, decisions out.

Nothing here talks to a network or a database. The caller (``bot.core``) loads the
views these functions need, calls them, and carries out what they decide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from bot.domain import (
    Attachment,
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
    created_at: datetime | None = None

    @property
    def channel(self) -> str:
        """Comments carry the post they are on; Messenger messages have none."""
        return Channel.COMMENTS if self.post_id else Channel.MESSENGER


# --- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class BindEcho:
    """The page's comment (or Messenger message) is our own staff answer coming back:
    remember its id, show nothing. ``part``: which of the answer's files it is, for a file
    Messenger sent as a message of its own; None for the answer's text."""

    message_id: int
    part: int | None = None


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
    our_app_id: str | None = None,
) -> CommentDecision:
    """Messenger: one open task per contact on the page's inbox. Echoes of our own sends
    are known by their mid (stored from the Send API's answer) or, when the echo comes
    first, by the metadata we sent along; anything else the Page sent was written by a
    person in the Page's inbox and is shown as the Page."""
    if ev.is_deleted:
        if known is None or known.direction != Direction.CUSTOMER:
            return Ignore("deletion of a message we never relayed")
        return MarkRelayed(known.id, "removed", None)
    if known is not None:
        return Ignore("message already seen")  # our own send's echo: its mid is stored
    if ev.is_echo:
        ours = our_send_id(ev.metadata)
        part = our_send_part(ev.metadata)
        if ours is not None and part is not None:
            # one of an answer's files: kept on that file, also after its text came back
            return BindEcho(ours, part)
        if ours is not None:
            # the echo overtook the Send API's answer: bind it, by our id, not by text
            for answer in unconfirmed_answers:
                if answer.id == ours:
                    return BindEcho(answer.id)
            return Ignore("echo of our own send")
        if ev.app_id is not None and ev.app_id == our_app_id:
            return Ignore("echo of a send of this app")
        # no marker of ours: a person wrote it in the Page's inbox (Meta Business Suite)
        if open_task is None:
            return Ignore("page message without an open task")
        return JoinTask(open_task.id, as_page=True)
    if open_task is not None:
        return JoinTask(open_task.id)
    return OpenTask()


SEND_MARK = "pagedesk:"


def send_metadata(message_id: int, part: int | None = None) -> str:
    """What our Send API calls carry as ``metadata``; echoes bring it back. An answer's
    text carries its message id; each of its files also the file's place in the answer
    (``pagedesk:12:0``)."""
    return f"{SEND_MARK}{message_id}" + (f":{part}" if part is not None else "")


def _send_mark(metadata: str | None) -> tuple[int, int | None] | None:
    if not metadata or not metadata.startswith(SEND_MARK):
        return None
    head, _, part = metadata[len(SEND_MARK) :].partition(":")
    if not head.isdigit() or (part and not part.isdigit()):
        return None
    return int(head), int(part) if part else None


def our_send_id(metadata: str | None) -> int | None:
    mark = _send_mark(metadata)
    return mark[0] if mark else None


def our_send_part(metadata: str | None) -> int | None:
    """Which file of our answer an echo is (None: the answer's text, or not ours)."""
    mark = _send_mark(metadata)
    return mark[1] if mark else None


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
    # pictures and files sent with it: (kind, file id in the chat platform)
    media: tuple[tuple[str, str], ...] = ()


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
    media: tuple[tuple[str, str], ...] = (),
    media_sendable: bool = True,
) -> StaffDecision:
    """A staff member wrote in a task's thread: note, command, or answer to the customer.

    The answer goes to the comment the staff member replied to, else to the latest
    customer message of the task. ``media``: the pictures and files with it, (kind, file
    id); ``media_sendable``: whether the chat platform lets us fetch them for Facebook.
    """
    stripped = text.strip()
    if not stripped and not media:
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
    if media and not media_sendable:
        return Refuse("pictures and files from this chat are not sent yet; send the text alone")
    return Answer(target, stripped, media)


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
    """``POST /{comment_id}/comments``. ``rerouted``: the message answered came through
    the other channel (a merged task), so the answer goes under ``via`` instead."""

    comment_id: str
    rerouted: bool = False


@dataclass(frozen=True)
class MessengerSend:
    """The Send API, to the person's page-scoped id."""

    psid: str
    rerouted: bool = False


def answer_destination(
    task: TaskView, target: MessageView, latest_on_channel: MessageView | None = None
) -> CommentReply | MessengerSend | Refuse:
    """The channel belongs to the task (contract behaviour 9): a Messenger task answers
    through the Send API, a comment task under the comment (the top-level one: Facebook
    threads one deep). An answer to a message that came through the other channel (it
    was merged in) goes through the task's channel, to ``latest_on_channel``, the task's
    latest customer message on its own channel: never a comment call with a Messenger id
    or the reverse."""
    rerouted = target.channel != task.channel
    if rerouted:
        if latest_on_channel is None or latest_on_channel.channel != task.channel:
            where = "Messenger" if task.channel == Channel.MESSENGER else "a comment"
            return Refuse(f"this task answers through {where} and has no customer message there")
        target = latest_on_channel
    if task.channel == Channel.MESSENGER:
        if not target.author_fb_id:
            return Refuse("the person's Messenger id is not known")
        return MessengerSend(target.author_fb_id, rerouted)
    return CommentReply(comment_reply_target(target), rerouted)


@dataclass(frozen=True)
class AnswerCall:
    """One call to Facebook of an answer: its text ("" for none) and/or one attachment
    (kind, file id in the chat platform). ``part``: for a file that goes as a message of
    its own (Messenger), its place among the answer's media; None for the text, or a
    comment that carries its picture."""

    text: str
    attachment: tuple[str, str] | None = None
    part: int | None = None


def answer_calls(
    to: CommentReply | MessengerSend,
    text: str,
    media: Sequence[tuple[str, str]],
    *,
    instagram: bool = False,
) -> list[AnswerCall] | Refuse:
    """How an answer with text and/or media goes out. Messenger sends text and an
    attachment as separate messages: the text first, then each file. A comment takes its
    text and one picture in one call (``attachment_url``); Instagram replies take text only."""
    files = [(kind, file_id) for kind, file_id in media]
    if isinstance(to, MessengerSend):
        calls = [AnswerCall(text)] if text else []
        return calls + [AnswerCall("", f, part) for part, f in enumerate(files)]
    if not files:
        return [AnswerCall(text)]
    if instagram:
        return Refuse("Instagram replies take text only: send the text alone")
    if len(files) > 1 or files[0][0] != "image":
        return Refuse("a comment can carry one picture, not other files")
    return [AnswerCall(text, files[0])]


def rerouted_note(to: CommentReply | MessengerSend) -> str | None:
    """What the thread is told when an answer took the task's channel, not the one the
    message answered came through."""
    if not to.rerouted:
        return None
    if isinstance(to, MessengerSend):
        return (
            "Sent in Messenger, this task's channel, to the person's latest message: "
            "the message answered came as a comment."
        )
    return (
        "Sent as a reply to the latest comment, this task's channel: the message answered "
        "came through Messenger."
    )


# --- Messenger's windows -------------------------------------------------------------------

STANDARD_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
PRIVATE_REPLY_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class SendRule:
    """How a Send API message goes out: ``messaging_type`` and, with MESSAGE_TAG, the tag.
    ``note``: what the thread is told, when it is not the plain rule."""

    messaging_type: str
    tag: str | None = None
    note: str | None = None


def messenger_send_rule(
    last_customer_at: datetime | None, now: datetime, *, written_by_person: bool
) -> SendRule | Refuse:
    """Facebook's 24-hour rule, by the timestamp Facebook gave the person's last message:
    within it, RESPONSE; after it, only an answer a person wrote may go, tagged
    HUMAN_AGENT, up to 7 days; past that (or automatic, like a quick reply) it is refused
    here, before Facebook refuses it."""
    if last_customer_at is None:
        return Refuse("the person has not written in Messenger, so the Page may not write first")
    age = now - last_customer_at
    if age <= STANDARD_WINDOW:
        return SendRule("RESPONSE")
    hours = int(age.total_seconds() // 3600)
    if age > HUMAN_AGENT_WINDOW:
        return Refuse(
            f"the person's last message is {age.days} days old; Messenger allows answers "
            "for 7 days (HUMAN_AGENT tag) and only after they write again"
        )
    if not written_by_person:
        return Refuse(
            f"the person's last message is {hours} hours old; after 24 hours only an answer "
            "a person wrote may be sent (HUMAN_AGENT tag), not a quick reply"
        )
    return SendRule(
        "MESSAGE_TAG",
        "HUMAN_AGENT",
        f"Sent with the HUMAN_AGENT tag: the person's last message is {hours} hours old "
        "(more than 24). It may be sent until 7 days after it.",
    )


def private_reply_refusal(
    comment: MessageView | None, now: datetime, *, already_sent: bool
) -> str | None:
    """Why a private reply (``/dm``) to this comment cannot go, or None. Facebook allows
    one per comment, within 7 days of it."""
    if comment is None or comment.channel != Channel.COMMENTS or comment.fb_id is None:
        return "there is no comment in this task to answer privately"
    if comment.direction != Direction.CUSTOMER:
        return "only a person's comment can be answered privately"
    if already_sent:
        return "this comment was already answered privately: Facebook allows one per comment"
    if comment.created_at is not None and now - comment.created_at > PRIVATE_REPLY_WINDOW:
        return (
            f"the comment is {(now - comment.created_at).days} days old: Facebook allows a "
            "private reply within 7 days of it"
        )
    return None


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


# --- moderation of a relayed comment ----------------------------------------------------------

MOD_HIDE = "hide"
MOD_UNHIDE = "unhide"
MOD_LIKE = "like"
MOD_DELETE = "delete"
MODERATION_ACTIONS = (MOD_HIDE, MOD_UNHIDE, MOD_LIKE, MOD_DELETE)
MODERATION_DONE = {
    MOD_HIDE: "hidden",
    MOD_UNHIDE: "unhidden",
    MOD_LIKE: "liked",
    MOD_DELETE: "deleted",
}


@dataclass(frozen=True)
class CommentState:
    """What moderation looks at of a relayed message: its view, and what is known of it on
    Facebook (``fb_status``: "edited" | "hidden" | "removed"; ``liked``: by the Page)."""

    message: MessageView
    fb_status: str | None = None
    liked: bool = False


def moderation_offer(c: CommentState) -> tuple[str, ...]:
    """The actions a relayed comment's buttons offer now: none for what is not a customer's
    comment or is gone from Facebook; Hide or Unhide by its state; Like until liked."""
    m = c.message
    if m.direction != Direction.CUSTOMER or not m.fb_id or m.channel != Channel.COMMENTS:
        return ()
    if c.fb_status == "removed":
        return ()
    offer = [MOD_UNHIDE if c.fb_status == "hidden" else MOD_HIDE]
    if not c.liked and not is_instagram_media(m.post_id):  # Instagram: no likes as a Page
        offer.append(MOD_LIKE)
    offer.append(MOD_DELETE)
    return tuple(offer)


def moderation_refusal(
    c: CommentState | None, action: str, *, may_delete: bool, page_here: bool = True
) -> str | None:
    """Why ``action`` cannot be done on this message, or None. Delete is for the chat's
    admins (and BOT_ADMINS) alone: it cannot be undone and takes the customer's words away
    for good; hiding, which anyone may do and undo, keeps them."""
    if action not in MODERATION_ACTIONS:
        return f"unknown action {action!r}"
    if c is None:
        return "reply to a relayed comment with the command, or use its buttons"
    m = c.message
    if m.direction != Direction.CUSTOMER or not m.fb_id:
        return "only a customer's comment can be moderated"
    if m.channel != Channel.COMMENTS:
        return "a Messenger message cannot be hidden, liked or deleted"
    if not page_here:
        return "the Page is no longer connected to this chat"
    if c.fb_status == "removed":
        return "the comment is no longer on Facebook"
    if action == MOD_HIDE and c.fb_status == "hidden":
        return "the comment is already hidden"
    if action == MOD_UNHIDE and c.fb_status != "hidden":
        return "the comment is not hidden"
    if action == MOD_LIKE and is_instagram_media(m.post_id):
        return "an Instagram comment cannot be liked as the Page"
    if action == MOD_LIKE and c.liked:
        return "the Page already likes this comment"
    if action == MOD_DELETE and not may_delete:
        return "only the chat's admins can delete a comment (hide it instead: that can be undone)"
    return None


def moderation_result(action: str, fb_status: str | None) -> tuple[str | None, bool | None]:
    """The comment's new (fb_status, liked) once Facebook did ``action``; None for liked:
    unchanged."""
    if action == MOD_HIDE:
        return "hidden", None
    if action == MOD_UNHIDE:
        return (None if fb_status == "hidden" else fb_status), None
    if action == MOD_DELETE:
        return "removed", None
    return fb_status, True


def moderation_line(
    fb_status: str | None, liked: bool, action: str | None, by: str | None
) -> str | None:
    """The state line under a moderated comment: "hidden by Ines", "deleted on Facebook by
    Sal · liked as the Page". None when nobody moderated it (the platform shows
    Facebook's own status then)."""
    if not action or action not in MODERATION_DONE:
        return None
    who = by or "staff"
    parts: list[str] = []
    if fb_status == "removed":
        parts.append(
            f"deleted on Facebook by {who}" if action == MOD_DELETE else "removed on Facebook"
        )
    elif fb_status == "hidden":
        parts.append(f"hidden by {who}" if action == MOD_HIDE else "hidden on Facebook")
    elif action == MOD_UNHIDE:
        parts.append(f"unhidden by {who}")
    if liked:
        parts.append(f"liked as the Page by {who}" if action == MOD_LIKE else "liked as the Page")
    return " · ".join(parts) or None


def is_instagram_media(post_id: str | None) -> bool:
    """Facebook names a Page's post ``{page-id}_{post-id}``; an Instagram media id is a
    number alone. A comment task's "post" of the second kind is an Instagram media."""
    return bool(post_id) and post_id is not None and post_id.isdigit()


# --- pictures and files ---------------------------------------------------------------


def media_to_show(attachments: Sequence[Attachment]) -> list[dict[str, str]] | None:
    """What of a customer's attachments the thread shows as media (pictures, videos,
    audio, files with a URL), as stored on their message; None when nothing."""
    shown = [{"type": a.kind, "url": a.url} for a in attachments if a.is_media and a.url]
    return shown or None


# --- writing first from a contact card ------------------------------------------------


@dataclass(frozen=True)
class WriteFirst:
    """Write to the contact in ``task_id`` (reopened first with ``reopen``), answering
    ``target_id``, their latest message on the channel."""

    task_id: int
    target_id: int
    reopen: bool = False


def write_first(
    channel: str,
    target: MessageView | None,
    target_task: TaskView | None,
    *,
    open_on_post: TaskView | None,
    last_in_messenger: datetime | None,
    now: datetime,
) -> WriteFirst | Refuse:
    """Staff write first to a contact on one of their channels: in Messenger (within the
    24-hour / HUMAN_AGENT 7-day rule) or under their latest comment. It goes through that
    channel's task: the open one (of the comment's post too), else the latest, reopened.
    ``target_task`` is the surviving task of ``target``."""
    if target is None or target_task is None:
        if channel == Channel.MESSENGER:
            return Refuse("the person has not written in Messenger: the Page may not write first")
        return Refuse("the person has no comment on this chat's Pages")
    if channel == Channel.MESSENGER:
        rule = messenger_send_rule(last_in_messenger, now, written_by_person=True)
        if isinstance(rule, Refuse):
            return rule
    if target_task.status == TaskStatus.OPEN:
        return WriteFirst(target_task.id, target.id)
    if open_on_post is not None and open_on_post.status == TaskStatus.OPEN:
        return WriteFirst(open_on_post.id, target.id)
    return WriteFirst(target_task.id, target.id, reopen=True)
