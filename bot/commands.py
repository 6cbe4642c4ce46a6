"""The words admins and staff type, once for every chat: what each command is, who may
run it, its help line, and what it does. The edges turn a platform's message into an
``Invocation`` and say the ``Reply``; Telegram types ``/close``, Slack (which refuses
slash commands in threads) ``!close``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.core.contacts import ContactCards
from bot.core.context import CoreError
from bot.core.desk import StaffDesk
from bot.core.pages import PageAdmin
from bot.routing import MOD_DELETE, MODERATION_ACTIONS
from bot.rules.access import Actor, binding_refusal, may_delete_comment, may_manage_page
from bot.templates import (
    TEMPLATE_HELP,
    TemplateError,
    apply_change,
    check_pattern,
    describe,
    parse_template_command,
)

QUICK_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")


class Where(StrEnum):
    CHAT = "chat"  # anywhere in the chat
    TASK = "task"  # in a task's thread


class Who(StrEnum):
    EVERYONE = "everyone"
    MANAGERS = "managers"  # the chat's admins and BOT_ADMINS: rules.access.may_manage_page
    BINDERS = "binders"  # rules.access.may_bind_page (decided with the Page in hand)


@dataclass(frozen=True)
class Spec:
    name: str
    where: Where
    who: Who
    usage: str
    help: str


SPECS = (
    Spec("close", Where.TASK, Who.EVERYONE, "", "close the task"),
    Spec("reopen", Where.TASK, Who.EVERYONE, "", "reopen the task"),
    Spec("quick", Where.TASK, Who.EVERYONE, "<name>", "send a quick reply (alone: a list)"),
    Spec("contact", Where.TASK, Who.EVERYONE, "", "the customer's card; merge <n> joins one"),
    Spec("merge", Where.TASK, Who.EVERYONE, "<task>", "merge another task into this one"),
    Spec("dm", Where.TASK, Who.EVERYONE, "<text>", "answer the commenter privately in Messenger"),
    Spec(
        "write",
        Where.TASK,
        Who.EVERYONE,
        "messenger|comment <text>",
        "write first to the customer: in Messenger, or under their latest comment",
    ),
    Spec("hide", Where.TASK, Who.EVERYONE, "", "hide the comment replied to on Facebook"),
    Spec("unhide", Where.TASK, Who.EVERYONE, "", "unhide the comment replied to"),
    Spec("like", Where.TASK, Who.EVERYONE, "", "like the comment replied to as the Page"),
    Spec("delete", Where.TASK, Who.MANAGERS, "", "delete the comment replied to (admins)"),
    Spec("connect", Where.CHAT, Who.BINDERS, "<page>", "connect a Facebook Page to this chat"),
    Spec("disconnect", Where.CHAT, Who.MANAGERS, "<page>", "stop receiving a Page's tasks"),
    Spec("template", Where.CHAT, Who.MANAGERS, "", "show or set the task template"),
    Spec("help", Where.CHAT, Who.EVERYONE, "", "what this bot does"),
)
CHAT_WORDS = frozenset(s.name for s in SPECS if s.where == Where.CHAT)
TASK_WORDS = frozenset(s.name for s in SPECS if s.where == Where.TASK)
# /quick list|add|remove|help are chat commands; /quick <name> is a task's
QUICK_CHAT_ACTIONS = ("add", "remove", "list", "help")
ADMINS = {"telegram": "admins of this chat", "slack": "workspace admins"}

QUICK_HELP = (
    "Quick replies are canned answers of a page, with the same {{variables}} as templates.\n"
    "/quick list — the page's quick replies\n"
    "/quick add <name> <text> — add or replace one (admins)\n"
    "/quick remove <name> — remove one (admins)\n"
    "In a task: /quick <name> sends it to the latest comment; /quick alone offers them all."
)


def help_text(task_prefix: str, where: str) -> str:
    """The same help everywhere; only the prefix of in-thread commands differs."""
    in_task = ", ".join(
        f"{task_prefix}{s.name}" + (f" {s.usage}" if s.usage else "")
        for s in SPECS
        if s.where == Where.TASK
    )
    return (
        f"Pagedesk turns comments on your Facebook Page into tasks: one {where} per post.\n"
        f"• Write in a task's {where} to answer the latest comment as the Page; reply to a "
        "comment to answer that one.\n"
        "• Start with note: or private: to keep a message internal.\n"
        f"• In a task: {in_task}, {task_prefix}contact merge <n>.\n"
        "• /quick list; admins: /connect <page>, /disconnect <page>, /template, "
        "/quick add|remove."
    )


@dataclass(frozen=True)
class Menu:
    """A message with choices (Telegram: inline buttons; Slack: a select)."""

    text: str
    choices: tuple[tuple[str, str], ...]


Reply = str | Menu | None


@dataclass(frozen=True)
class Invocation:
    """A command as typed, with what the edge knows of where and by whom.

    ``actor`` is asked only when a command needs it (it may cost a platform call).
    ``prepare`` runs before a Page is bound, after the person was found allowed: the
    platform's own precondition (Telegram: the group has topics; Slack: the bot joined
    the channel); it returns what is wrong, or None."""

    platform: str
    chat_id: str
    name: str
    args: str
    user_id: str
    by: str
    actor: Callable[[], Awaitable[Actor]]
    prefix: str = "/"
    task_id: int | None = None
    chat_message_id: str | None = None
    chat_label: str = "another chat"
    user_token: str | None = None
    prepare: Callable[[], Awaitable[str | None]] | None = None
    # says something to this person alone, returning what to say in the chat (Telegram:
    # a private message, as a group's messages are seen by all; None: replies are private)
    privately: Callable[[str], Awaitable[str]] | None = None
    reply_to_chat_message_id: str | None = None  # the message the command answers


def quick_choice(task_id: int, name: str) -> str:
    return f"q:{task_id}:{name}"  # Telegram allows 64 bytes of callback data


def parse_quick_choice(value: str) -> tuple[int, str] | None:
    kind, _, rest = value.partition(":")
    task, _, name = rest.partition(":")
    if kind != "q" or not task.isdigit() or not QUICK_NAME.match(name):
        return None
    return int(task), name


WRITE_CHANNELS = {"messenger": "messenger", "comment": "comments", "comments": "comments"}
WRITE_LABELS = {"messenger": "✉️ Write in Messenger", "comments": "💬 Reply to latest comment"}


def write_choice(task_id: int, channel: str) -> str:
    return f"w:{task_id}:{channel}"  # the contact card's buttons


def parse_write_choice(value: str) -> tuple[int, str] | None:
    kind, _, rest = value.partition(":")
    task, _, channel = rest.partition(":")
    if kind != "w" or not task.isdigit() or channel not in WRITE_LABELS:
        return None
    return int(task), channel


def is_chat_command(name: str, args: str, *, in_task: bool) -> bool:
    """Whether a command is about the chat (its Pages) rather than the task it is in."""
    if name == "quick":
        return args.split(" ", 1)[0] in QUICK_CHAT_ACTIONS or not in_task
    return name in CHAT_WORDS


class ChatCommands:
    def __init__(
        self, pages: PageAdmin, desk: StaffDesk, cards: ContactCards, *, where: dict[str, str]
    ) -> None:
        self.pages = pages
        self.desk = desk
        self.cards = cards
        self.where = where  # platform → what a task is there ("topic", "message and thread")

    async def run(self, inv: Invocation) -> Reply:
        if inv.task_id is not None and not is_chat_command(inv.name, inv.args, in_task=True):
            return await self.in_task(inv, inv.task_id)
        match inv.name:
            case "help" | "start" | "pagedesk":
                return help_text(inv.prefix, self.where.get(inv.platform, "thread"))
            case "connect":
                return await self.connect(inv)
            case "disconnect":
                return await self.managed(inv, self.disconnect)
            case "template":
                return await self.managed(inv, self.template, what="change templates")
            case "quick":
                return await self.quick(inv)
            case name if name in TASK_WORDS:
                return f"{inv.prefix}{name} works inside a task's thread."
        return None

    async def managed(
        self, inv: Invocation, run: Callable[[Invocation], Awaitable[str]], what: str = ""
    ) -> str:
        if not may_manage_page(await inv.actor()):
            admins = ADMINS.get(inv.platform, "admins")
            return f"Only {admins} can {what or f'run /{inv.name}'}."
        return await run(inv)

    async def connect(self, inv: Invocation) -> str:
        actor = await inv.actor()
        if not (actor.is_operator or actor.is_chat_admin):
            # a stranger: refused before anything else is looked at or said
            return binding_refusal(actor)
        if inv.prepare is not None:
            problem = await inv.prepare()
            if problem is not None:
                return problem
        if not inv.args:
            link = await self.pages.login_link(inv.platform, inv.chat_id, actor)
            if link is not None:
                return await inv.privately(link) if inv.privately else link
        return await self.pages.connect(
            inv.args,
            user_token=inv.user_token,
            platform=inv.platform,
            chat_id=inv.chat_id,
            actor=actor,
            chat_label=inv.chat_label,
        )

    async def disconnect(self, inv: Invocation) -> str:
        if not inv.args:
            return "Usage: /disconnect <page id or name>"
        try:
            return await self.pages.disconnect_page(inv.platform, inv.chat_id, inv.args)
        except CoreError as e:
            return str(e)

    async def template(self, inv: Invocation) -> str:
        """/template: show, help, or change the task or contact template."""
        refs = await self.pages.page_refs(inv.platform, inv.chat_id)
        try:
            change = parse_template_command(inv.args, refs)
        except TemplateError as e:
            return f"Nothing changed: {e}."
        if change.kind == "help":
            return TEMPLATE_HELP
        try:
            page = await self.pages.resolve_page(inv.platform, inv.chat_id, change.page)
        except CoreError as e:
            return str(e)
        task, contact = await self.pages.templates_of(page.id)
        if change.kind == "show":
            return describe(page.name, task, contact)
        task, contact = apply_change(task, contact, change)
        await self.pages.set_templates(page.id, task, contact)
        return "Saved. New tasks and contacts use it from now on.\n" + describe(
            page.name, task, contact
        )

    async def quick(self, inv: Invocation) -> str:
        """/quick list|add|remove, per page."""
        refs = await self.pages.page_refs(inv.platform, inv.chat_id)
        words = inv.args.split(maxsplit=1)
        page_ref, args = None, inv.args
        if words and words[0] in refs:
            page_ref, args = words[0], (words[1] if len(words) > 1 else "")
        action, _, rest = args.strip().partition(" ")
        if action in ("", "help"):
            return QUICK_HELP
        if action not in ("list", "add", "remove"):
            return f"Unknown /quick {action!r}.\n{QUICK_HELP}"
        try:
            page = await self.pages.resolve_page(inv.platform, inv.chat_id, page_ref)
        except CoreError as e:
            return str(e)
        if action == "list":
            items = await self.pages.quick_list(page.id)
            if not items:
                return f"{page.name} has no quick replies yet: /quick add <name> <text>."
            return f"Quick replies of {page.name}:\n" + "\n".join(
                f"• {name}: {text}" for name, text in items
            )
        if not may_manage_page(await inv.actor()):
            return f"Only admins can {action} quick replies."
        name, _, text = rest.strip().partition(" ")
        name = name.lower()
        if not QUICK_NAME.match(name):
            return "Nothing changed: a quick reply's name is 1-32 of a-z, 0-9, _ and -."
        if action == "remove":
            if await self.pages.quick_remove(page.id, name):
                return f"Removed the quick reply {name}."
            return f"Nothing changed: there is no quick reply {name}."
        text = text.strip()
        if not text:
            return "Nothing changed: usage /quick add <name> <text>."
        try:
            check_pattern(text)
        except TemplateError as e:
            return f"Nothing changed: {e}."
        replaced = await self.pages.quick_add(page.id, name, text)
        return f"{'Replaced' if replaced else 'Added'} the quick reply {name}."

    async def in_task(self, inv: Invocation, task_id: int) -> Reply:
        """A command in a task's thread. None: done, nothing to say."""
        name, args, p = inv.name, inv.args, inv.prefix
        if name == "close":
            return await self.desk.close_task(task_id)
        if name == "reopen":
            return await self.desk.reopen_task(task_id)
        if name == "contact":
            sub, _, rest = args.partition(" ")
            if sub == "merge":
                return await self.cards.merge_contacts(task_id, rest.strip())
            if sub:
                return f"Usage: {p}contact, or {p}contact merge <contact number>"
            card = await self.cards.contact_card(task_id)
            channels = await self.cards.write_channels(task_id)
            if not channels:
                return card
            return Menu(card, tuple((WRITE_LABELS[c], write_choice(task_id, c)) for c in channels))
        if name == "write":
            where, _, text = args.strip().partition(" ")
            channel = WRITE_CHANNELS.get(where.lower())
            if channel is None or not text.strip():
                return f"Usage: {p}write messenger <text>, or {p}write comment <text>"
            return await self.cards.write_first(
                task_id, channel, text, user_id=inv.user_id, by=inv.by
            )
        if name == "merge":
            return await self.desk.merge_tasks(task_id, args.strip())
        if name == "dm":
            return await self.desk.private_reply(
                task_id,
                args,
                user_id=inv.user_id,
                chat_message_id=inv.chat_message_id,
                reply_to_chat_message_id=inv.reply_to_chat_message_id,
            )
        if name in MODERATION_ACTIONS:
            # deleting is the chat's admins' (routing.moderation_refusal says why)
            may_delete = name == MOD_DELETE and may_delete_comment(await inv.actor())
            return await self.desk.moderate(
                name,
                by=inv.by,
                chat=(inv.platform, inv.chat_id),
                may_delete=may_delete,
                task_id=task_id,
                reply_to_chat_message_id=inv.reply_to_chat_message_id,
            )
        if name == "quick":
            if not args:
                names = await self.desk.quick_names(task_id)
                if not names:
                    return "No quick replies yet: an admin adds them with /quick add <name> <text>."
                return Menu(
                    "Send a quick reply to the latest comment:",
                    tuple((n, quick_choice(task_id, n)) for n in names),
                )
            return await self.desk.send_quick(
                task_id,
                args.split()[0].lower(),
                user_id=inv.user_id,
                by=inv.by,
                chat_message_id=inv.chat_message_id,
            )
        return (
            f"Unknown command {p}{name}. In a task: {p}close, {p}reopen, {p}quick <name>, "
            f"{p}contact, {p}contact merge <n>, {p}merge <task>; start with note: for an "
            "internal note."
        )
