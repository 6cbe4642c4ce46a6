"""The words admins and staff type, the same in every chat: templates, quick replies,
contact cards and merges. Handlers parse their platform's payloads and call these; each
returns what to tell the user."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot import routing
from bot.service import Service, ServiceError
from bot.templates import (
    TEMPLATE_HELP,
    TemplateError,
    apply_change,
    check_pattern,
    describe,
    parse_template_command,
)

QUICK_NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
QUICK_HELP = (
    "Quick replies are canned answers of a page, with the same {{variables}} as templates.\n"
    "/quick list — the page's quick replies\n"
    "/quick add <name> <text> — add or replace one (admins)\n"
    "/quick remove <name> — remove one (admins)\n"
    "In a task: /quick <name> sends it to the latest comment; /quick alone offers them all."
)


@dataclass(frozen=True)
class Menu:
    """A message with choices (Telegram: inline buttons; Slack: a select)."""

    text: str
    choices: tuple[tuple[str, str], ...]


def quick_choice(task_id: int, name: str) -> str:
    return f"q:{task_id}:{name}"  # Telegram allows 64 bytes of callback data


def parse_quick_choice(value: str) -> tuple[int, str] | None:
    kind, _, rest = value.partition(":")
    task, _, name = rest.partition(":")
    if kind != "q" or not task.isdigit() or not QUICK_NAME.match(name):
        return None
    return int(task), name


class ChatCommands:
    def __init__(self, service: Service) -> None:
        self.service = service

    async def template(self, platform: str, chat_id: str, args: str) -> str:
        """/template (admins): show, help, or change the task or contact template."""
        refs = await self.service.page_refs(platform, chat_id)
        try:
            change = parse_template_command(args, refs)
        except TemplateError as e:
            return f"Nothing changed: {e}."
        if change.kind == "help":
            return TEMPLATE_HELP
        try:
            page = await self.service.resolve_page(platform, chat_id, change.page)
        except ServiceError as e:
            return str(e)
        task, contact = await self.service.templates_of(page.id)
        if change.kind == "show":
            return describe(page.name, task, contact)
        task, contact = apply_change(task, contact, change)
        await self.service.set_templates(page.id, task, contact)
        return "Saved. New tasks and contacts use it from now on.\n" + describe(
            page.name, task, contact
        )

    async def quick(self, platform: str, chat_id: str, args: str, *, is_admin: bool) -> str:
        """/quick list|add|remove, per page."""
        refs = await self.service.page_refs(platform, chat_id)
        words = args.split(maxsplit=1)
        page_ref = None
        if words and words[0] in refs:
            page_ref, args = words[0], (words[1] if len(words) > 1 else "")
        action, _, rest = args.strip().partition(" ")
        if action in ("", "help"):
            return QUICK_HELP
        if action not in ("list", "add", "remove"):
            return f"Unknown /quick {action!r}.\n{QUICK_HELP}"
        try:
            page = await self.service.resolve_page(platform, chat_id, page_ref)
        except ServiceError as e:
            return str(e)
        if action == "list":
            items = await self.service.quick_list(page.id)
            if not items:
                return f"{page.name} has no quick replies yet: /quick add <name> <text>."
            return f"Quick replies of {page.name}:\n" + "\n".join(
                f"• {name}: {text}" for name, text in items
            )
        if not is_admin:
            return f"Only admins can {action} quick replies."
        name, _, text = rest.strip().partition(" ")
        name = name.lower()
        if not QUICK_NAME.match(name):
            return "Nothing changed: a quick reply's name is 1-32 of a-z, 0-9, _ and -."
        if action == "remove":
            if await self.service.quick_remove(page.id, name):
                return f"Removed the quick reply {name}."
            return f"Nothing changed: there is no quick reply {name}."
        text = text.strip()
        if not text:
            return "Nothing changed: usage /quick add <name> <text>."
        try:
            check_pattern(text)
        except TemplateError as e:
            return f"Nothing changed: {e}."
        replaced = await self.service.quick_add(page.id, name, text)
        return f"{'Replaced' if replaced else 'Added'} the quick reply {name}."

    async def in_task(
        self,
        task_id: int,
        command: routing.Command,
        *,
        user_id: str,
        by: str,
        prefix: str,
        chat_message_id: str | None,
    ) -> str | Menu | None:
        """A command in a task's thread. None: done, nothing to say."""
        name, args = command.name, command.args
        if name == "close":
            return await self.service.close_task(task_id, user_id)
        if name == "reopen":
            return await self.service.reopen_task(task_id, user_id)
        if name == "contact":
            sub, _, rest = args.partition(" ")
            if sub == "merge":
                return await self.service.merge_contacts(task_id, rest.strip())
            if sub:
                return f"Usage: {prefix}contact, or {prefix}contact merge <contact number>"
            return await self.service.contact_card(task_id)
        if name == "merge":
            return await self.service.merge_tasks(task_id, args.strip())
        if name == "quick":
            if not args:
                task = await self.service.task(task_id)
                items = await self.service.quick_list(task.page_id) if task else []
                if not items:
                    return "No quick replies yet: an admin adds them with /quick add <name> <text>."
                return Menu(
                    "Send a quick reply to the latest comment:",
                    tuple((n, quick_choice(task_id, n)) for n, _ in items),
                )
            reason = await self.service.send_quick(
                task_id,
                args.split()[0].lower(),
                user_id=user_id,
                by=by,
                chat_message_id=chat_message_id,
            )
            return reason
        return (
            f"Unknown command {prefix}{name}. In a task: {prefix}close, {prefix}reopen, "
            f"{prefix}quick <name>, {prefix}contact, {prefix}contact merge <n>, "
            f"{prefix}merge <task>; start with note: for an internal note."
        )
