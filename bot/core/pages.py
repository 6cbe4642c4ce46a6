"""Page administration: binding Pages to chats (connect, move, disconnect), their
templates and quick replies. Who may: ``bot.rules.access``."""

from __future__ import annotations

import logging
from typing import Protocol

from bot.core.context import Core, CoreError
from bot.domain import TaskStatus
from bot.errors import DeliveryError
from bot.jobs.kinds import ChatNotice, NoticeInTask, ThreadState
from bot.rules.access import Actor, binding_refusal, may_bind_page
from bot.storage.models import Page, utcnow
from bot.templates import ContactTemplate, TaskTemplate

log = logging.getLogger(__name__)

MOVED_AWAY = "The Page moved to another chat: this task is closed here."
LINK_TEXT = (
    "Connect Pages to this chat by logging in to Facebook: {link}\n"
    "The link works once, for you, within 15 minutes."
)


class LinkMaker(Protocol):
    """One-time links to connect Pages in the browser (``bot.browser_connect``)."""

    def missing(self) -> list[str]: ...

    async def new_link(self, platform: str, chat_id: str, user_id: str) -> str | None: ...


class PageAdmin:
    def __init__(self, core: Core) -> None:
        self.core = core
        # set when browser connect is configured (FB_APP_ID, FB_APP_SECRET, PUBLIC_URL)
        self.links: LinkMaker | None = None

    async def login_link(self, platform: str, chat_id: str, actor: Actor) -> str | None:
        """For the operator's ``/connect`` without a Page: a one-time link to Facebook
        Login, bound to this chat and this person; None where it is not configured."""
        if not actor.is_operator or self.links is None or self.links.missing():
            return None
        link = await self.links.new_link(platform, chat_id, actor.user_id)
        return LINK_TEXT.format(link=link) if link else None

    async def connect(
        self,
        ref: str,
        *,
        user_token: str | None,
        platform: str,
        chat_id: str,
        actor: Actor,
        chat_label: str,
    ) -> str:
        """The /connect flow, the same in every chat: find the page among those the
        operator's token manages, subscribe the app to it, store its token encrypted.
        Who may: ``may_bind_page``; a refusal names no Page and makes no Graph call.
        Returns what to tell the person."""
        async with self.core.db.read() as s:
            here = await self.core.repo.pages.find(s, platform, chat_id, ref) if ref else None
        if not may_bind_page(actor, connected_here=here is not None):
            return binding_refusal(actor)
        if user_token is None or self.core.graph is None:
            return "FB_ACCESS_TOKEN is not set on the server: ask its operator."
        if self.core.tokens is None:
            return "SECRET_KEY is not set on the server: ask its operator."
        graph = self.core.graph
        try:
            accounts = await graph.accounts(user_token)
        except DeliveryError as e:
            return f"Facebook refused to list the pages: {e.reason}"
        if not ref:
            known = ", ".join(f"{a.name} ({a.id})" for a in accounts) or "none"
            return f"Usage: /connect <page id or name>. Pages the token manages: {known}."
        found = [
            a for a in accounts if ref in (a.id, a.name) or a.name.casefold() == ref.casefold()
        ]
        if not found:
            if not actor.is_operator:
                return f"Facebook no longer lists {ref!r} among the token's pages."
            known = ", ".join(f"{a.name} ({a.id})" for a in accounts) or "none"
            return f"No page {ref!r} among the pages the token manages: {known}."
        if len(found) > 1:
            return f"Several pages are named {ref!r}; use the id: {', '.join(a.id for a in found)}."
        page = found[0]
        if here is not None and page.id != here.id and not actor.is_operator:
            return binding_refusal(actor)  # the name now means another page
        try:
            await graph.subscribe_app(page.id, page.access_token, ["feed", "messages"])
        except DeliveryError as e:
            return f"Facebook refused to subscribe the app to {page.name}: {e.reason}"
        try:
            return await self.connect_page(
                page_id=page.id,
                name=page.name,
                token=page.access_token,
                platform=platform,
                chat_id=chat_id,
                by_user=actor.user_id,
                chat_label=chat_label,
            )
        except CoreError as e:
            return str(e)

    async def instagram_account(self, page_id: str, token: str) -> str | None:
        """The Instagram business account connected to the Page, whose comments become
        tasks too; None when there is none or Facebook would not say."""
        if self.core.graph is None:
            return None
        try:
            return await self.core.graph.instagram_account(page_id, token)
        except DeliveryError as e:
            log.info("Instagram account not known", extra={"page_id": page_id, "reason": e.reason})
            return None

    async def connect_page(
        self,
        *,
        page_id: str,
        name: str,
        token: str,
        platform: str,
        chat_id: str,
        by_user: str,
        chat_label: str = "another chat",
    ) -> str:
        """Bind the page to this chat. A page that moves leaves its former chat: that chat
        is told where it went and by whom, and its open tasks there are closed, so that
        chat can no longer read or answer as the Page."""
        if self.core.tokens is None:
            raise CoreError("SECRET_KEY is not set: the page token cannot be stored safely.")
        sealed = self.core.tokens.seal(token)
        instagram = await self.instagram_account(page_id, token)
        async with self.core.tx() as s:
            page = await self.core.repo.pages.get(s, page_id)
            if page is None:
                s.add(
                    Page(
                        id=page_id,
                        name=name,
                        token_encrypted=sealed,
                        chat_platform=platform,
                        chat_id=chat_id,
                        connected_by=by_user,
                        active=True,
                        ig_account_id=instagram,
                    )
                )
                return f"Connected the Page {name} ({page_id}): new comments open tasks here."
            old = (page.chat_platform, page.chat_id)
            moved = old != (platform, chat_id)
            page.name = name
            page.token_encrypted = sealed
            page.chat_platform = platform
            page.chat_id = chat_id
            page.connected_by = by_user
            page.active = True
            page.token_alerted = False
            page.connected_at = utcnow()
            page.ig_account_id = instagram
            if moved:
                who = f"{platform}:{by_user}" if by_user else "an admin"
                for task in await self.core.repo.tasks.open_in_chat(s, page_id, *old):
                    task.status = TaskStatus.CLOSED
                    task.closed_at = utcnow()
                    self.core.add_job(s, task, NoticeInTask(task.id, MOVED_AWAY))
                    self.core.add_job(s, task, ThreadState(task.id))
                self.core.notice(
                    s,
                    ChatNotice(
                        old[0],
                        old[1],
                        f"The Page {name} ({page_id}) was moved to {chat_label} by {who}: "
                        "its comments and answers are handled there now.",
                    ),
                )
        if moved:
            return f"Moved the Page {name} ({page_id}) to this chat: new tasks open here."
        return f"Reconnected the Page {name} ({page_id}): new token stored, app subscribed again."

    async def disconnect_page(self, platform: str, chat_id: str, ref: str) -> str:
        async with self.core.tx() as s:
            page = await self.core.repo.pages.find(s, platform, chat_id, ref)
            if page is None:
                raise CoreError(f"No page {ref!r} is connected to this chat.")
            page.active = False
            return f"Disconnected the Page {page.name} ({page.id}): its comments are ignored now."

    async def resolve_page(self, platform: str, chat_id: str, ref: str | None) -> Page:
        """The page a command in this chat is about: named, or the chat's only one."""
        async with self.core.db.read() as s:
            pages = await self.core.repo.pages.for_chat(s, platform, chat_id)
        if ref is not None:
            for page in pages:
                if ref == page.id or ref.casefold() == page.name.casefold():
                    return page
            raise CoreError(f"No page {ref!r} is connected to this chat.")
        if not pages:
            raise CoreError("No page is connected to this chat: an admin runs /connect first.")
        if len(pages) > 1:
            ids = ", ".join(f"{p.name} ({p.id})" for p in pages)
            raise CoreError(f"Several pages are connected here; name one first: {ids}.")
        return pages[0]

    async def page_refs(self, platform: str, chat_id: str) -> set[str]:
        async with self.core.db.read() as s:
            return {p.id for p in await self.core.repo.pages.for_chat(s, platform, chat_id)}

    async def templates_of(self, page_id: str) -> tuple[TaskTemplate, ContactTemplate]:
        async with self.core.db.read() as s:
            task = await self.core.repo.templates.get(s, page_id, "task")
            contact = await self.core.repo.templates.get(s, page_id, "contact")
        return (
            TaskTemplate.from_json(task) if task else TaskTemplate(),
            ContactTemplate.from_json(contact) if contact else ContactTemplate(),
        )

    async def set_templates(
        self, page_id: str, task: TaskTemplate, contact: ContactTemplate
    ) -> None:
        async with self.core.tx() as s:
            await self.core.repo.templates.put(s, page_id, "task", task.to_json())
            await self.core.repo.templates.put(s, page_id, "contact", contact.to_json())

    async def quick_list(self, page_id: str) -> list[tuple[str, str]]:
        async with self.core.db.read() as s:
            return [(q.name, q.text) for q in await self.core.repo.quick.list(s, page_id)]

    async def quick_add(self, page_id: str, name: str, text: str) -> bool:
        """Add or replace; True when it replaced one."""
        async with self.core.tx() as s:
            return await self.core.repo.quick.put(s, page_id, name, text)

    async def quick_remove(self, page_id: str, name: str) -> bool:
        async with self.core.tx() as s:
            return await self.core.repo.quick.remove(s, page_id, name)
