"""The product's rules, pure: Facebook events and staff messages in, decisions out.

Nothing here talks to a network or a database. The caller (``bot.service``) loads the
views these functions need, calls them, and carries out what they decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain import CommentEvent, MessengerEvent, PageInfo, PostInfo
from bot.templates import TITLE_MAX, TaskTemplate, excerpt, render

# --- views of stored state the rules look at ------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    id: int
    status: str  # "open" | "closed"


@dataclass(frozen=True)
class MessageView:
    id: int
    direction: str  # "customer" | "page" | "staff" | "note"
    fb_id: str | None
    fb_parent_id: str | None
    text: str
    state: str
    post_id: str | None = None


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
            if known.direction == "staff" or known.text == ev.text:
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


# --- who may do what ------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """A person in a staff chat, as far as permissions go.

    ``is_operator``: listed in ``BOT_ADMINS`` (in Slack, whose app lives in one workspace, a
    workspace admin or owner too). ``is_chat_admin``: an admin of the chat they typed in.
    Anyone can add the bot to a group of their own and be its admin there, so chat admin
    alone proves nothing about the operator's Pages.
    """

    platform: str
    user_id: str
    is_operator: bool
    is_chat_admin: bool
    anonymous: bool = False  # a Telegram admin writing as the group: no user id to name


def may_bind_page(actor: Actor, *, connected_here: bool) -> bool:
    """Binding a Page to a chat (new, or moved from another chat) is the operator's;
    managing it where it is connected (reconnect) is also for that chat's admins."""
    if connected_here:
        return actor.is_operator or actor.is_chat_admin
    return actor.is_operator


def may_manage_page(actor: Actor) -> bool:
    """Disconnect, templates, adding and removing quick replies of this chat's Pages."""
    return actor.is_operator or actor.is_chat_admin


def binding_refusal(actor: Actor) -> str:
    """What a person who may not bind a Page is told: no Page named, their own id given."""
    if actor.anonymous or not actor.user_id:
        return (
            "Only the operator of this Pagedesk can connect a Facebook Page to a chat. "
            "You are writing anonymously (as the group): write as yourself to see your "
            "user id, and hand it to the operator for BOT_ADMINS."
        )
    key = f"{actor.platform}:{actor.user_id}"
    return (
        "Only the operator of this Pagedesk can connect a Facebook Page to a chat. "
        f"Your user id is {actor.user_id}: ask the operator to add {key} to BOT_ADMINS."
    )


# --- what a new task looks like ----------------------------------------------------------


@dataclass(frozen=True)
class TaskContent:
    title: str
    description: str
    assignees: tuple[str, ...]
    additional_data: str
    tags: tuple[str, ...] = ()


def additional_data(
    *,
    page: PageInfo,
    post: PostInfo | None,
    contact_name: str,
    contact_fb_id: str,
    first_message_at: datetime,
    opened_at: datetime,
) -> str:
    """System data about a task. Built here only; staff cannot edit it."""
    lines = []
    if post is not None:
        lines.append(f"Post: {post.url or post.id}")
    lines.append(f"Page: {page.name} ({page.id})")
    lines.append(f"Customer: {contact_name} (facebook id {contact_fb_id})")
    lines.append(f"First message: {first_message_at:%Y-%m-%d %H:%M} UTC")
    lines.append(f"Task opened: {opened_at:%Y-%m-%d %H:%M} UTC")
    return "\n".join(lines)


def template_values(
    *,
    page: PageInfo,
    post: PostInfo | None,
    contact_name: str,
    first_text: str,
    data: str,
) -> dict[str, str]:
    post_text = post.text if post is not None else ""
    if post is None:
        post_excerpt = f"Message from {contact_name}"
    elif post_text:
        post_excerpt = excerpt(post_text)
    else:
        post_excerpt = f"Post {post.id.rsplit('_', 1)[-1]}"
    post_date = post.created_time.strftime("%Y-%m-%d") if post and post.created_time else ""
    return {
        "post.text": post_text,
        "post.excerpt": post_excerpt,
        "post.url": (post.url or "") if post else "",
        "post.date": post_date,
        "contact.name": contact_name,
        "comment.text": first_text,
        "page.name": page.name,
        "task.additional_data": data,
    }


def task_content(template: TaskTemplate, values: dict[str, str]) -> TaskContent:
    title = " ".join(render(template.title, values).split()).strip(" ·-") or "New task"
    if len(title) > TITLE_MAX:
        title = title[: TITLE_MAX - 1] + "…"
    return TaskContent(
        title=title,
        description=render(template.description, values).strip(),
        assignees=template.assignees,
        additional_data=values["task.additional_data"],
        tags=template.tags,
    )


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
    if target is not None and target.direction != "customer":
        target = None
    target = target or latest_customer
    if target is None:
        return Refuse("there is no customer message in this task to answer")
    return Answer(target, stripped)


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
