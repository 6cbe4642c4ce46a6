"""Carries out what ``bot.routing`` decides: loads views, writes rows, queues platform calls.

Network reads (post text, profiles) happen before a write transaction opens, so that no
transaction waits on Facebook. Every platform call is an outbox job written in the same
transaction as the state it belongs to.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from bot.crypto import TokenBox
from bot.domain import (
    CommentEvent,
    FacebookEvent,
    MessengerEvent,
    PageInfo,
    PostInfo,
    PostRemovedEvent,
)
from bot.errors import DeliveryError, ThreadGone, failure_kind
from bot.fb.webhook import MalformedDelivery, parse_delivery
from bot.metrics import Metrics
from bot.ports import ChatPlatform, ChatPost, FacebookGateway, RootMessage, ThreadRef
from bot.storage.db import Database
from bot.storage.models import (
    Contact,
    InboxItem,
    Message,
    OutboxJob,
    Page,
    Post,
    QuickReply,
    Task,
    utcnow,
)
from bot.storage.repositories import Repositories, message_view, task_view
from bot.templates import ContactTemplate, TaskTemplate, render

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pace:
    """Which pacing keys a platform call counts against."""

    @staticmethod
    def chat(platform: str, chat_id: str) -> list[str]:
        if platform == "telegram":
            return [f"tg:chat:{chat_id}", "tg:global"]
        return [f"slack:channel:{chat_id}"]

    @staticmethod
    def page(page_id: str) -> list[str]:
        return [f"fb:page:{page_id}"]


# A burst: three or more comments waiting in one task's lane go out as one message.
COALESCE_AT = 3
COALESCE_MAX = 25
DIGEST_CHARS = 3000  # below Telegram's 4096 and Slack's 3000-character section


NOT_HERE = "the Page is no longer connected to this chat"


class ServiceError(Exception):
    """A staff or admin request that cannot be done; the message is for the user."""


class Service:
    def __init__(
        self,
        db: Database,
        graph: FacebookGateway | None,
        platforms: dict[str, ChatPlatform],
        tokens: TokenBox | None,
        metrics: Metrics,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.graph = graph
        self.platforms = platforms
        self.tokens = tokens
        self.metrics = metrics
        self.repo = Repositories()
        self.on_enqueued = on_enqueued

    # --- transactions -------------------------------------------------------------------

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncSession]:
        async with self.db.write() as s:
            yield s
        self.on_enqueued()

    def enqueue(self, s: AsyncSession, lane: str, kind: str, payload: dict[str, Any]) -> OutboxJob:
        return self.repo.outbox.add(s, lane, kind, payload)

    def _chat_job(self, s: AsyncSession, task: Task, kind: str, **payload: Any) -> None:
        payload.setdefault("task_id", task.id)
        if kind in ("open_thread", "relay", "notice_in_task", "show_answer"):
            payload["pace"] = Pace.chat(task.chat_platform, task.chat_id)
        if kind == "open_thread" and task.chat_platform == "telegram":
            payload["pace_cost"] = 2  # createForumTopic and the root message
        self.enqueue(s, f"chat:{task.id}", kind, payload)

    def notice(
        self,
        s: AsyncSession,
        platform: str,
        chat_id: str,
        text: str,
        *,
        thread_id: str | None = None,
        reply_to: str | None = None,
        only_for: str | None = None,
        report: int = 0,
    ) -> None:
        """A message from the bot to the staff chat (command answers, failures). ``report``:
        it tells of a failure (1), or of a report's own failure (2, never reported again)."""
        self.enqueue(
            s,
            f"notice:{platform}:{chat_id}:{thread_id or ''}",
            "chat_notice",
            {
                "platform": platform,
                "chat_id": chat_id,
                "thread_id": thread_id,
                "reply_to": reply_to,
                "text": text,
                "only_for": only_for,
                "pace": Pace.chat(platform, chat_id),
                **({"report": report} if report else {}),
            },
        )

    def page_token(self, page: Page) -> str:
        if self.tokens is None:
            raise DeliveryError(
                "SECRET_KEY is not set: page tokens cannot be read", retryable=False
            )
        try:
            return self.tokens.open(page.token_encrypted)
        except ValueError as e:
            raise DeliveryError(str(e), retryable=False) from None

    # --- intake: Facebook -----------------------------------------------------------------

    async def handle_facebook_item(self, item: InboxItem) -> None:
        try:
            body = json.loads(item.payload)
            events = parse_delivery(body)
        except (ValueError, MalformedDelivery) as e:
            log.warning("stored Facebook delivery is not usable", extra={"error": str(e)})
            return
        for ev in events:
            await self.handle_facebook_event(ev)

    async def handle_facebook_event(self, ev: FacebookEvent) -> None:
        async with self.db.read() as s:
            page = await self.repo.pages.get(s, ev.page_id)
        if page is None or not page.active:
            log.info("event for a page that is not connected", extra={"page_id": ev.page_id})
            return
        if isinstance(ev, CommentEvent):
            await self._comment(page, ev)
        elif isinstance(ev, MessengerEvent):
            await self._direct_message(page, ev)
        elif isinstance(ev, PostRemovedEvent):
            await self._post_removed(page, ev)

    async def _post_info(self, page: Page, post_id: str) -> PostInfo:
        """The post, read from the Graph API once and kept."""
        async with self.db.read() as s:
            row = await self.repo.posts.get(s, post_id)
        if row is not None:
            return PostInfo(row.id, row.message, row.permalink_url, row.created_time)
        info: PostInfo
        error: str | None = None
        try:
            if self.graph is None:
                raise DeliveryError("Facebook is not configured", retryable=False)
            info = await self.graph.post(post_id, self.page_token(page))
        except DeliveryError as e:
            log.warning("post text not available", extra={"post_id": post_id, "reason": e.reason})
            info = PostInfo(post_id, "", None, None)
            error = e.reason
        try:
            async with self.tx() as s:
                if await self.repo.posts.get(s, post_id) is None:
                    s.add(
                        Post(
                            id=post_id,
                            page_id=page.id,
                            message=info.text,
                            permalink_url=info.url,
                            created_time=info.created_time,
                            fetch_error=error,
                        )
                    )
        except IntegrityError:
            pass  # another worker stored the same post first; both read the same text
        return info

    async def _profile(self, page: Page, fb_id: str, name: str | None) -> tuple[str, str | None]:
        """Name and picture for a new contact; the webhook's name wins, Graph fills gaps."""
        async with self.db.read() as s:
            known = await self.repo.contacts.by_fb_id(s, fb_id)
        if known is not None:
            return name or known.name, known.picture_url
        picture = None
        if self.graph is not None:
            try:
                g_name, picture = await self.graph.profile(fb_id, self.page_token(page))
                name = name or g_name
            except DeliveryError as e:
                log.info("profile not readable", extra={"reason": e.reason})
        return name or f"Facebook user {fb_id}", picture

    async def _find_or_create_contact(
        self, s: AsyncSession, fb_id: str, name: str, picture: str | None, page_id: str
    ) -> Contact:
        contact = await self.repo.contacts.by_fb_id(s, fb_id)
        if contact is None:
            body = await self.repo.templates.get(s, page_id, "contact") or {}
            fields = ContactTemplate.from_json(body).new_contact_fields()
            contact = Contact(fb_id=fb_id, name=name, picture_url=picture, fields=fields)
            s.add(contact)
            await s.flush()
        else:
            if name and not name.startswith("Facebook user ") and contact.name != name:
                contact.name = name
            if picture and not contact.picture_url:
                contact.picture_url = picture
        return contact

    async def _template(self, s: AsyncSession, page_id: str) -> TaskTemplate:
        body = await self.repo.templates.get(s, page_id, "task")
        return TaskTemplate.from_json(body) if body else TaskTemplate()

    async def _comment(self, page: Page, ev: CommentEvent) -> None:
        pageinfo = PageInfo(page.id, page.name)
        customer = ev.verb == "add" and ev.author.id != page.id
        post = await self._post_info(page, ev.post_id) if customer else None
        name, picture = (
            await self._profile(page, ev.author.id, ev.author.name) if customer else ("", None)
        )
        by_page = ev.author.id == page.id

        def message() -> Message:
            return Message(
                direction="page" if by_page else "customer",
                fb_id=ev.comment_id,
                fb_parent_id=ev.parent_id,
                fb_post_id=ev.post_id,
                author_fb_id=ev.author.id,
                author_name=page.name if by_page else name,
                text=ev.text,
                state="pending",
                created_at=ev.created_time,
            )

        async def find_open(s: AsyncSession) -> Task | None:
            return await self.repo.tasks.open_for_post(s, page.id, ev.post_id)

        await self._store_event(
            page,
            fb_id=ev.comment_id,
            find_open=find_open,
            by_page=by_page,
            route=lambda **views: routing.route_comment(ev, pageinfo, **views),
            message=message,
            post=post,
            contact_args=(ev.author.id, name, picture),
            channel="comments",
            post_id=ev.post_id,
            first_at=ev.created_time,
        )

    async def _store_event(
        self,
        page: Page,
        *,
        fb_id: str,
        find_open: Callable[[AsyncSession], Awaitable[Task | None]],
        by_page: bool,
        route: Callable[..., routing.CommentDecision],
        message: Callable[[], Message],
        post: PostInfo | None,
        contact_args: tuple[str, str, str | None],
        channel: str,
        post_id: str | None,
        first_at: datetime,
    ) -> None:
        """Load the views, let routing decide, carry it out; all in one transaction."""
        for attempt in range(3):
            try:
                async with self.tx() as s:
                    known = await self.repo.messages.by_fb_id(s, fb_id)
                    open_task = await find_open(s)
                    unconfirmed: list[Message] = []
                    if by_page and open_task is not None:
                        unconfirmed = await self.repo.messages.unconfirmed_answers(s, open_task.id)
                    decision = route(
                        known=message_view(known) if known else None,
                        open_task=task_view(open_task) if open_task else None,
                        unconfirmed_answers=[message_view(m) for m in unconfirmed],
                    )
                    await self._apply(
                        s,
                        decision,
                        page=page,
                        post=post,
                        contact_args=contact_args,
                        message=message(),
                        channel=channel,
                        post_id=post_id,
                        first_at=first_at,
                    )
                return
            except IntegrityError:
                # Another worker opened the task (or stored this message) first: the next
                # attempt sees its row and joins it.
                log.info("concurrent write, retrying", extra={"attempt": attempt})
        raise RuntimeError(f"{fb_id} could not be stored after 3 attempts")

    async def _direct_message(self, page: Page, ev: MessengerEvent) -> None:
        pageinfo = PageInfo(page.id, page.name)
        customer_id = ev.recipient_id if ev.is_echo else ev.sender_id
        name, picture = (
            await self._profile(page, customer_id, None) if not ev.is_echo else ("", None)
        )

        def message() -> Message:
            return Message(
                direction="page" if ev.is_echo else "customer",
                fb_id=ev.mid,
                author_fb_id=ev.sender_id,
                author_name=page.name if ev.is_echo else name,
                text=ev.text,
                state="pending",
                created_at=ev.timestamp,
            )

        async def find_open(s: AsyncSession) -> Task | None:
            contact = await self.repo.contacts.by_fb_id(s, customer_id)
            if contact is None:
                return None
            return await self.repo.tasks.open_for_dm(s, page.id, contact.id)

        await self._store_event(
            page,
            fb_id=ev.mid,
            find_open=find_open,
            by_page=ev.is_echo,
            route=lambda **views: routing.route_direct_message(ev, pageinfo, **views),
            message=message,
            post=None,
            contact_args=(customer_id, name, picture),
            channel="messenger",
            post_id=None,
            first_at=ev.timestamp,
        )

    async def _apply(
        self,
        s: AsyncSession,
        decision: routing.CommentDecision,
        *,
        page: Page,
        post: PostInfo | None,
        contact_args: tuple[str, str, str | None],
        message: Message,
        channel: str,
        post_id: str | None,
        first_at: datetime,
    ) -> None:
        match decision:
            case routing.Ignore(reason):
                log.debug("event ignored", extra={"reason": reason})
            case routing.BindEcho(message_id):
                row = await self.repo.messages.get(s, message_id)
                if row is not None:
                    row.fb_id = message.fb_id
            case routing.MarkRelayed(message_id, fb_status, text):
                row = await self.repo.messages.get(s, message_id)
                if row is None:
                    return
                row.fb_status = None if fb_status == "visible" else fb_status
                if text is not None:
                    row.text = text
                task = await self.repo.tasks.get(s, row.task_id)
                if task is not None and row.chat_message_id is not None:
                    self._chat_job(s, task, "refresh", message_id=row.id)
            case routing.JoinTask(task_id, _as_page):
                task = await self.repo.tasks.get(s, task_id)
                assert task is not None
                task = await self.repo.tasks.surviving(s, task)
                if message.direction != "page":
                    fb_id, name, picture = contact_args
                    await self._find_or_create_contact(s, fb_id, name, picture, page.id)
                message.task_id = task.id
                s.add(message)
                await s.flush()
                self._chat_job(s, task, "relay", message_id=message.id)
            case routing.OpenTask():
                fb_id, name, picture = contact_args
                contact = await self._find_or_create_contact(s, fb_id, name, picture, page.id)
                pageinfo = PageInfo(page.id, page.name)
                opened = datetime.now(UTC)
                data = routing.additional_data(
                    page=pageinfo,
                    post=post,
                    contact_name=contact.name,
                    contact_fb_id=contact.fb_id,
                    first_message_at=first_at,
                    opened_at=opened,
                )
                values = routing.template_values(
                    page=pageinfo,
                    post=post,
                    contact_name=contact.name,
                    first_text=message.text,
                    data=data,
                )
                content = routing.task_content(await self._template(s, page.id), values)
                task = Task(
                    page_id=page.id,
                    channel=channel,
                    post_id=post_id,
                    contact_id=contact.id,
                    status="open",
                    title=content.title,
                    root_text=content.description,
                    additional_data=content.additional_data,
                    chat_platform=page.chat_platform,
                    chat_id=page.chat_id,
                    created_at=opened,
                    assignees=list(content.assignees),
                    tags=list(content.tags),
                )
                s.add(task)
                await s.flush()
                message.task_id = task.id
                s.add(message)
                await s.flush()
                self._chat_job(s, task, "open_thread")
                self._chat_job(s, task, "relay", message_id=message.id)
                self.metrics.tasks_opened.inc()

    async def _post_removed(self, page: Page, ev: PostRemovedEvent) -> None:
        async with self.tx() as s:
            task = await self.repo.tasks.open_for_post(s, page.id, ev.post_id)
            if task is None:
                return
            task.status = "closed"
            task.closed_at = utcnow()
            self._chat_job(
                s, task, "notice_in_task", text="The post was removed on Facebook: task closed."
            )
            self._chat_job(s, task, "thread_state")

    async def catch_up(self) -> int:
        """Read the comments of every open task's post since the last one seen, and handle
        those no webhook brought (downtime, a missed delivery). Returns how many were new."""
        if self.graph is None:
            return 0
        async with self.db.read() as s:
            tasks = await self.repo.tasks.open_on_posts(s)
        new = 0
        for task in tasks:
            assert task.post_id is not None
            async with self.db.read() as s:
                page = await self.repo.pages.get(s, task.page_id)
                last = await self.repo.messages.last_seen_on_post(s, task.post_id)
            if page is None or not page.active:
                continue
            # a minute of overlap: Facebook's "since" is by creation time, in seconds
            since = (last or task.created_at) - timedelta(minutes=1)
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)  # SQLite gives naive datetimes back
            try:
                events = await self.graph.comments(
                    page.id, task.post_id, self.page_token(page), since
                )
            except DeliveryError as e:
                log.warning(
                    "catch-up read failed", extra={"post_id": task.post_id, "reason": e.reason}
                )
                continue
            for ev in events:
                async with self.db.read() as s:
                    if await self.repo.messages.by_fb_id(s, ev.comment_id) is not None:
                        continue
                await self._comment(page, ev)
                new += 1
        if new:
            log.info("catch-up found comments the webhooks missed", extra={"count": new})
        return new

    async def prune(self, keep: timedelta) -> tuple[int, int]:
        """Delete deliveries processed and jobs done longer ago than ``keep``: without this
        both tables grow by every delivery and every call, forever. Platforms re-send within
        hours at most, so deduplication does not need older rows; failures stay."""
        cutoff = datetime.now(UTC) - keep
        async with self.db.write() as s:
            inbox = await self.repo.inbox.prune(s, cutoff.timestamp())
            outbox = await self.repo.outbox.prune(s, cutoff)
        if inbox or outbox:
            log.info("pruned old rows", extra={"inbox": inbox, "outbox": outbox})
        return inbox, outbox

    # --- staff side -----------------------------------------------------------------------

    async def staff_message(
        self,
        *,
        platform: str,
        chat_id: str,
        thread_id: str,
        user_id: str,
        text: str,
        chat_message_id: str,
        reply_to_chat_message_id: str | None,
        command_prefixes: str = "/",
    ) -> tuple[Task, routing.StaffDecision] | None:
        """A staff member wrote in a thread. Returns the task and the decision, or None when
        the thread is not a task's (or the message was handled already). Commands are
        returned for the caller to run."""
        try:
            async with self.tx() as s:
                task = await self.repo.tasks.by_thread(s, platform, chat_id, thread_id)
                if task is None:
                    return None
                if await self.repo.messages.by_chat_id(s, task.id, chat_message_id) is not None:
                    return None  # this update was already handled
                explicit = (
                    await self.repo.messages.by_chat_id(s, task.id, reply_to_chat_message_id)
                    if reply_to_chat_message_id
                    else None
                )
                latest = await self.repo.messages.latest_customer(s, task.id)
                decision = routing.route_staff_message(
                    text,
                    explicit_target=message_view(explicit) if explicit else None,
                    latest_customer=message_view(latest) if latest else None,
                    command_prefixes=command_prefixes,
                    page_here=await self._page_here(s, task),
                )
                match decision:
                    case routing.Internal(note):
                        s.add(
                            Message(
                                task_id=task.id,
                                direction="note",
                                staff_user_id=user_id,
                                text=note,
                                chat_message_id=chat_message_id,
                                state="internal",
                            )
                        )
                    case routing.Answer(target, answer):
                        await self._queue_answer(s, task, target, answer, user_id, chat_message_id)
                    case routing.Refuse(reason):
                        self.notice(
                            s,
                            platform,
                            chat_id,
                            f"Not sent to Facebook: {reason}.",
                            thread_id=thread_id,
                            reply_to=chat_message_id,
                        )
                    case routing.Command():
                        pass
                return task, decision
        except IntegrityError:
            # the same chat message, stored a moment ago by another replica
            log.info(
                "staff message handled by another worker",
                extra={"chat_message_id": chat_message_id},
            )
            return None

    async def _queue_answer(
        self,
        s: AsyncSession,
        task: Task,
        target: routing.MessageView,
        text: str,
        user_id: str,
        chat_message_id: str | None,
    ) -> Message:
        msg = Message(
            task_id=task.id,
            direction="staff",
            staff_user_id=user_id,
            text=text,
            answers_message_id=target.id,
            chat_message_id=chat_message_id,
            state="pending",
        )
        s.add(msg)
        await s.flush()
        self.enqueue(
            s,
            f"fb:{task.id}",
            "fb_answer",
            {"task_id": task.id, "message_id": msg.id, "pace": Pace.page(task.page_id)},
        )
        return msg

    async def answer_message(self, message_id: int, text: str, user_id: str) -> None:
        """Answer one customer message chosen in the chat's UI (Slack's Reply button). The
        answer is also shown in the thread, where its delivery mark goes."""
        async with self.tx() as s:
            target = await self.repo.messages.get(s, message_id)
            if target is None or target.direction != "customer":
                return
            task = await self.repo.tasks.get(s, target.task_id)
            assert task is not None
            if not text.strip():
                return
            if not await self._page_here(s, task):
                self._chat_job(s, task, "notice_in_task", text=f"Not sent: {NOT_HERE}")
                return
            msg = await self._queue_answer(
                s, task, message_view(target), text.strip(), user_id, None
            )
            self._chat_job(s, task, "show_answer", message_id=msg.id, by=f"<@{user_id}>")

    async def say_in_task(
        self,
        task_id: int,
        text: str,
        *,
        choices: tuple[tuple[str, str], ...] = (),
        reply_to: str | None = None,
    ) -> None:
        async with self.tx() as s:
            task = await self.repo.tasks.get(s, task_id)
            if task is not None:
                self._chat_job(
                    s,
                    task,
                    "notice_in_task",
                    text=text,
                    reply_to=reply_to,
                    choices=[list(c) for c in choices],
                )

    async def close_task(self, task_id: int, user: str) -> str:
        async with self.tx() as s:
            task = await self.repo.tasks.get(s, task_id)
            assert task is not None
            if task.status == "closed":
                return "This task is already closed."
            task.status = "closed"
            task.closed_at = utcnow()
            self._chat_job(s, task, "thread_state")
        return "Task closed. The next comment on this post opens a new task."

    async def reopen_task(self, task_id: int, user: str) -> str:
        try:
            async with self.tx() as s:
                task = await self.repo.tasks.get(s, task_id)
                assert task is not None
                if task.status == "open":
                    return "This task is already open."
                if task.merged_into_id is not None:
                    return f"This task was merged into #{task.merged_into_id}: work there."
                if not await self._page_here(s, task):
                    return f"Not reopened: {NOT_HERE}."
                if task.post_id is not None:
                    newer = await self.repo.tasks.open_for_post(s, task.page_id, task.post_id)
                    if newer is not None:
                        raise ServiceError(
                            f"A newer task for this post is open (#{newer.id}): close it first."
                        )
                task.status = "open"
                task.closed_at = None
                self._chat_job(s, task, "thread_state")
        except IntegrityError:
            return "A newer task for this post is open: close it first."
        except ServiceError as e:
            return str(e)
        return "Task reopened."

    async def connect(
        self,
        ref: str,
        *,
        user_token: str | None,
        platform: str,
        chat_id: str,
        actor: routing.Actor,
        chat_label: str,
    ) -> str:
        """The /connect flow, the same in every chat: find the page among those the
        operator's token manages, subscribe the app to it, store its token encrypted.
        Who may: ``routing.may_bind_page``; a refusal names no Page and makes no Graph call.
        Returns what to tell the person."""
        async with self.db.read() as s:
            here = await self.repo.pages.find(s, platform, chat_id, ref) if ref else None
        if not routing.may_bind_page(actor, connected_here=here is not None):
            return routing.binding_refusal(actor)
        if user_token is None or self.graph is None:
            return "FB_ACCESS_TOKEN is not set on the server: ask its operator."
        if self.tokens is None:
            return "SECRET_KEY is not set on the server: ask its operator."
        graph = self.graph
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
            return routing.binding_refusal(actor)  # the name now means another page
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
        except ServiceError as e:
            return str(e)

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
        if self.tokens is None:
            raise ServiceError("SECRET_KEY is not set: the page token cannot be stored safely.")
        sealed = self.tokens.seal(token)
        async with self.tx() as s:
            page = await self.repo.pages.get(s, page_id)
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
            if moved:
                who = f"{platform}:{by_user}" if by_user else "an admin"
                for task in await self.repo.tasks.open_in_chat(s, page_id, *old):
                    task.status = "closed"
                    task.closed_at = utcnow()
                    self._chat_job(
                        s,
                        task,
                        "notice_in_task",
                        text="The Page moved to another chat: this task is closed here.",
                    )
                    self._chat_job(s, task, "thread_state")
                self.notice(
                    s,
                    old[0],
                    old[1],
                    f"The Page {name} ({page_id}) was moved to {chat_label} by {who}: "
                    "its comments and answers are handled there now.",
                )
        if moved:
            return f"Moved the Page {name} ({page_id}) to this chat: new tasks open here."
        return f"Reconnected the Page {name} ({page_id}): new token stored, app subscribed again."

    async def disconnect_page(self, platform: str, chat_id: str, ref: str) -> str:
        async with self.tx() as s:
            page = await self.repo.pages.find(s, platform, chat_id, ref)
            if page is None:
                raise ServiceError(f"No page {ref!r} is connected to this chat.")
            page.active = False
            return f"Disconnected the Page {page.name} ({page.id}): its comments are ignored now."

    # --- templates, quick replies, contacts, merges ------------------------------------

    async def resolve_page(self, platform: str, chat_id: str, ref: str | None) -> Page:
        """The page a command in this chat is about: named, or the chat's only one."""
        async with self.db.read() as s:
            pages = await self.repo.pages.for_chat(s, platform, chat_id)
        if ref is not None:
            for page in pages:
                if ref == page.id or ref.casefold() == page.name.casefold():
                    return page
            raise ServiceError(f"No page {ref!r} is connected to this chat.")
        if not pages:
            raise ServiceError("No page is connected to this chat: an admin runs /connect first.")
        if len(pages) > 1:
            ids = ", ".join(f"{p.name} ({p.id})" for p in pages)
            raise ServiceError(f"Several pages are connected here; name one first: {ids}.")
        return pages[0]

    async def page_refs(self, platform: str, chat_id: str) -> set[str]:
        async with self.db.read() as s:
            return {p.id for p in await self.repo.pages.for_chat(s, platform, chat_id)}

    async def templates_of(self, page_id: str) -> tuple[TaskTemplate, ContactTemplate]:
        async with self.db.read() as s:
            task = await self.repo.templates.get(s, page_id, "task")
            contact = await self.repo.templates.get(s, page_id, "contact")
        return (
            TaskTemplate.from_json(task) if task else TaskTemplate(),
            ContactTemplate.from_json(contact) if contact else ContactTemplate(),
        )

    async def set_templates(
        self, page_id: str, task: TaskTemplate, contact: ContactTemplate
    ) -> None:
        async with self.tx() as s:
            await self.repo.templates.put(s, page_id, "task", task.to_json())
            await self.repo.templates.put(s, page_id, "contact", contact.to_json())

    async def quick_list(self, page_id: str) -> list[tuple[str, str]]:
        async with self.db.read() as s:
            return [(q.name, q.text) for q in await self.repo.quick.list(s, page_id)]

    async def quick_add(self, page_id: str, name: str, text: str) -> bool:
        """Add or replace; True when it replaced one."""
        async with self.tx() as s:
            row = await s.get(QuickReply, (page_id, name))
            if row is not None:
                row.text = text
                return True
            s.add(QuickReply(page_id=page_id, name=name, text=text))
            return False

    async def quick_remove(self, page_id: str, name: str) -> bool:
        async with self.tx() as s:
            row = await s.get(QuickReply, (page_id, name))
            if row is None:
                return False
            await s.delete(row)
            return True

    async def task(self, task_id: int) -> Task | None:
        async with self.db.read() as s:
            return await self.repo.tasks.get(s, task_id)

    async def send_quick(
        self,
        task_id: int,
        name: str,
        *,
        user_id: str,
        by: str,
        chat_message_id: str | None = None,
        chat: tuple[str, str] | None = None,
    ) -> str | None:
        """Send a quick reply like a staff answer, to the latest customer message, with the
        template variables filled in. ``chat``: where the person clicked, when the task
        number came from a button. Returns a reason when it cannot."""
        async with self.tx() as s:
            task = await self.repo.tasks.get(s, task_id)
            if task is None or (chat is not None and chat != (task.chat_platform, task.chat_id)):
                return "This task is gone."
            if not await self._page_here(s, task):
                return NOT_HERE
            quick = await s.get(QuickReply, (task.page_id, name))
            if quick is None:
                names = ", ".join(q.name for q in await self.repo.quick.list(s, task.page_id))
                return f"No quick reply {name!r}. Known: {names or 'none yet (/quick add)'}."
            target = await self.repo.messages.latest_customer(s, task.id)
            if target is None:
                return "There is no customer message in this task to answer."
            page = await self.repo.pages.get(s, task.page_id)
            post_row = await self.repo.posts.get(s, task.post_id) if task.post_id else None
            post = (
                PostInfo(
                    post_row.id, post_row.message, post_row.permalink_url, post_row.created_time
                )
                if post_row
                else None
            )
            assert page is not None
            values = routing.template_values(
                page=PageInfo(page.id, page.name),
                post=post,
                contact_name=target.author_name,
                first_text=target.text,
                data=task.additional_data,
            )
            text = render(quick.text, values).strip()
            msg = await self._queue_answer(
                s, task, message_view(target), text, user_id, chat_message_id
            )
            if chat_message_id is None:
                self._chat_job(s, task, "show_answer", message_id=msg.id, by=by)
        return None

    async def contact_card(self, task_id: int) -> str:
        async with self.db.read() as s:
            task = await self.repo.tasks.get(s, task_id)
            if task is None or task.contact_id is None:
                return "This task has no contact."
            contact = await self.repo.contacts.get(s, task.contact_id)
            assert contact is not None
            root = await self.repo.contacts.card_root(s, contact)
            members = await self.repo.contacts.members(s, root)
            # one chat never reaches another: only tasks of the Pages connected here
            here = await self._chat_pages(s, task)
            tasks = [
                t
                for t in await self.repo.tasks.for_contacts(s, [c.id for c in members])
                if t.page_id in here
            ]
        with_tasks = {t.contact_id for t in tasks}
        members = [c for c in members if c.id == root.id or c.id in with_tasks]
        lines = [f"👤 {root.name} (contact #{root.id})"]
        for c in members:
            lines.append(
                f"Facebook: https://www.facebook.com/{c.fb_id}"
                + (f" (contact #{c.id}, {c.name})" if c.id != root.id else "")
            )
        if root.picture_url:
            lines.append(f"Picture: {root.picture_url}")
        for key, value in sorted((root.fields or {}).items()):
            lines.append(f"{key}: {value}")
        lines.append("Tasks:")
        for t in tasks:
            where = "Messenger" if t.channel == "messenger" else f"comments on post {t.post_id}"
            link = None
            platform = self.platforms.get(t.chat_platform)
            if platform is not None and t.thread_id and t.root_message_id:
                link = platform.thread_link(t.chat_id, ThreadRef(t.thread_id, t.root_message_id))
            status = "merged" if t.merged_into_id else t.status
            lines.append(f"• #{t.id} {status}: {t.title} ({where})" + (f" {link}" if link else ""))
        return "\n".join(lines)

    async def _page_here(self, s: AsyncSession, task: Task) -> bool:
        """Is the task's Page still connected to the chat the task is shown in? A Page that
        moved or was disconnected is no longer answered from here."""
        page = await self.repo.pages.get(s, task.page_id)
        return (
            page is not None
            and page.active
            and (page.chat_platform, page.chat_id) == (task.chat_platform, task.chat_id)
        )

    async def _chat_pages(self, s: AsyncSession, task: Task) -> set[str]:
        """The Pages connected to the chat this task is shown in: what its staff may name."""
        pages = await self.repo.pages.for_chat(s, task.chat_platform, task.chat_id)
        return {p.id for p in pages}

    async def _contact_in_chat(self, s: AsyncSession, root: Contact, task: Task) -> bool:
        members = await self.repo.contacts.members(s, root)
        here = await self._chat_pages(s, task)
        tasks = await self.repo.tasks.for_contacts(s, [c.id for c in members])
        return any(t.page_id in here for t in tasks)

    async def merge_contacts(self, task_id: int, other_ref: str) -> str:
        try:
            other_id = int(other_ref.lstrip("#"))
        except ValueError:
            return "Usage: /contact merge <contact number> (the # on a contact card)"
        async with self.tx() as s:
            task = await self.repo.tasks.get(s, task_id)
            if task is None or task.contact_id is None:
                return "This task has no contact."
            mine = await self.repo.contacts.get(s, task.contact_id)
            other = await self.repo.contacts.get(s, other_id)
            assert mine is not None
            root = await self.repo.contacts.card_root(s, mine)
            other_root = await self.repo.contacts.card_root(s, other) if other else None
            if other_root is None or not await self._contact_in_chat(s, other_root, task):
                # the same answer whether it exists elsewhere or not at all
                return f"There is no contact #{other_id} among this chat's Pages."
            if root.id == other_root.id:
                return f"Contact #{other_id} is already on this card."
            other_root.merged_into_id = root.id
            return (
                f"Merged contact #{other_root.id} ({other_root.name}) into #{root.id} "
                f"({root.name}). Each task keeps its own channel; /contact lists them all."
            )

    async def merge_tasks(self, task_id: int, other_ref: str) -> str:
        """The other task joins this one: its later messages come here; answers still go to
        the comment or conversation they answer."""
        try:
            other_id = int(other_ref.lstrip("#"))
        except ValueError:
            return "Usage: /merge <task number> (the # in a task's root message)"
        async with self.tx() as s:
            task = await self.repo.tasks.get(s, task_id)
            other = await self.repo.tasks.get(s, other_id)
            if (
                task is None
                or other is None
                or other.page_id not in await self._chat_pages(s, task)
            ):
                return f"There is no task #{other_id} among this chat's Pages."
            if other.id == task.id or (await self.repo.tasks.surviving(s, other)).id == task.id:
                return "That task is already this one."
            if (await self.repo.tasks.surviving(s, task)).id == other.id:
                return f"This task was merged into #{other.id}: merge there instead."
            if task.status != "open":
                return "Reopen this task first: a closed task cannot take another one in."
            other.merged_into_id = task.id
            other.status = "merged"
            other.closed_at = utcnow()
            self._chat_job(
                s,
                other,
                "notice_in_task",
                text=f"Merged into task #{task.id}: later messages of this task go there.",
            )
            self._chat_job(s, other, "thread_state")
            return f"Task #{other.id} ({other.title}) merged into this one."

    # --- outbox: carrying out platform calls ---------------------------------------------

    async def execute(self, job: OutboxJob) -> None:
        """Carry out one outbox job. A thread that a person deleted is made anew (with a
        note) and the job then runs there: nothing waiting for that thread is lost."""
        try:
            await self._execute(job)
        except ThreadGone as e:
            if job.kind == "chat_notice":
                await self._notice_outside_thread(job, e)
                return
            task_id = job.payload.get("task_id")
            if not isinstance(task_id, int):
                raise
            await self._rethread(task_id, e)
            await self._execute(job)

    async def _notice_outside_thread(self, job: OutboxJob, gone: ThreadGone) -> None:
        p = job.payload
        if not p.get("thread_id"):
            raise gone
        platform = self.platforms.get(str(p["platform"]))
        if platform is None:
            raise gone
        await platform.post(
            str(p["chat_id"]),
            "",
            ChatPost(kind="notice", author="", text=str(p["text"])),
        )

    async def _rethread(self, task_id: int, gone: ThreadGone) -> None:
        """Give a task whose thread is gone a new one: root message, a note saying why,
        the open/closed state; later jobs of its lane read the new thread from the row."""
        async with self.db.read() as s:
            task = await self.repo.tasks.get(s, task_id)
        if task is None:
            raise gone
        platform = self.platforms.get(task.chat_platform)
        if platform is None:
            raise gone
        log.warning(
            "task thread gone, opening a new one",
            extra={"task_id": task.id, "reason": gone.reason},
        )
        created = await platform.create_thread(task.chat_id, task.title)
        ref = await platform.post_root(task.chat_id, created, await self._root_of(task))
        async with self.tx() as s:
            row = await self.repo.tasks.get(s, task.id)
            assert row is not None
            row.thread_id, row.root_message_id = ref.thread_id, ref.root_message_id
        self.metrics.threads_recreated.labels(task.chat_platform).inc()
        await platform.post(
            task.chat_id,
            ref.thread_id,
            ChatPost(
                kind="notice",
                author="",
                text=(
                    "The previous thread of this task was deleted in the chat: the task "
                    "continues here. Messages shown there before are not repeated."
                ),
            ),
        )
        if task.status != "open":
            task.thread_id, task.root_message_id = ref.thread_id, ref.root_message_id
            await platform.set_thread_state(
                task.chat_id,
                ThreadRef(ref.thread_id, ref.root_message_id),
                await self._root_of(task),
            )

    async def _execute(self, job: OutboxJob) -> None:
        p = job.payload
        if job.kind == "chat_notice":
            platform = self.platforms.get(str(p["platform"]))
            if platform is None:
                raise DeliveryError(f"{p['platform']} is not configured", retryable=False)
            thread = p.get("thread_id")
            await platform.post(
                str(p["chat_id"]),
                str(thread) if thread else "",
                ChatPost(
                    kind="notice",
                    author="",
                    text=str(p["text"]),
                    only_for=str(p["only_for"]) if p.get("only_for") else None,
                ),
                reply_to=str(p["reply_to"]) if p.get("reply_to") else None,
            )
            return
        if job.kind == "fb_answer":
            await self._send_answer(job)
            return
        task_id = int(p["task_id"])  # type: ignore[call-overload]
        async with self.db.read() as s:
            task = await self.repo.tasks.get(s, task_id)
            if task is None:
                return
            platform = self.platforms.get(task.chat_platform)
            if platform is None:
                raise DeliveryError(f"{task.chat_platform} is not configured", retryable=False)
            msg = (
                await self.repo.messages.get(s, int(p["message_id"]))  # type: ignore[call-overload]
                if "message_id" in p
                else None
            )
        if job.kind == "open_thread":
            # Two calls, each recorded as soon as it succeeded: a retry after a failed
            # root message must not create a second topic.
            if task.root_message_id is not None:
                return  # done before a restart
            if task.thread_id is None:
                created = await platform.create_thread(task.chat_id, task.title)
                if created is not None:
                    async with self.tx() as s:
                        row = await self.repo.tasks.get(s, task.id)
                        assert row is not None
                        row.thread_id = task.thread_id = created
            ref = await platform.post_root(task.chat_id, task.thread_id, await self._root_of(task))
            async with self.tx() as s:
                row = await self.repo.tasks.get(s, task.id)
                assert row is not None
                row.thread_id = ref.thread_id
                row.root_message_id = ref.root_message_id
            for user in task.assignees:
                await platform.notify_assignee(task.chat_id, ref, user, task.title)
            return
        if task.thread_id is None or task.root_message_id is None:
            raise DeliveryError("the task's thread is not open yet", retryable=True)
        if job.kind == "relay" and msg is not None:
            if msg.chat_message_id is not None:
                return
            waiting = await self._waiting_relays(job)
            if len(waiting) + 1 >= COALESCE_AT:
                await self._relay_digest(platform, task, job, msg, waiting)
                return
            post = self._chat_post(msg)
            if msg.direction == "customer" and msg.author_fb_id:
                async with self.db.read() as s:
                    contact = await self.repo.contacts.by_fb_id(s, msg.author_fb_id)
                if contact is not None and contact.picture_url:
                    post = replace(post, picture_url=contact.picture_url)
            reply_to = None
            if msg.fb_parent_id and msg.fb_post_id and msg.fb_parent_id != msg.fb_post_id:
                async with self.db.read() as s:
                    parent = await self.repo.messages.by_fb_id(s, msg.fb_parent_id)
                reply_to = parent.chat_message_id if parent is not None else None
            chat_id = await platform.post(task.chat_id, task.thread_id, post, reply_to=reply_to)
            async with self.tx() as s:
                relayed = await self.repo.messages.get(s, msg.id)
                assert relayed is not None
                relayed.chat_message_id = chat_id
                relayed.state = "relayed"
            self.metrics.relayed.inc()
        elif job.kind == "refresh" and msg is not None and msg.chat_message_id:
            await platform.edit(
                task.chat_id, task.thread_id, msg.chat_message_id, self._chat_post(msg)
            )
        elif job.kind == "show_answer" and msg is not None and msg.chat_message_id is None:
            async with self.db.read() as s:
                target = (
                    await self.repo.messages.get(s, msg.answers_message_id)
                    if msg.answers_message_id
                    else None
                )
            to = target.author_name if target is not None else "the customer"
            by = str(p.get("by") or "Staff")
            shown = await platform.post(
                task.chat_id,
                task.thread_id,
                ChatPost(kind="notice", author="", text=f"{by} to {to}: {msg.text}"),
            )
            async with self.tx() as s:
                shown_row = await self.repo.messages.get(s, msg.id)
                assert shown_row is not None
                shown_row.chat_message_id = shown
        elif job.kind == "mark_delivered" and msg is not None and msg.chat_message_id:
            await platform.mark_delivered(task.chat_id, task.thread_id, msg.chat_message_id)
        elif job.kind == "notice_in_task":
            raw_choices = p.get("choices")
            choices = (
                tuple((str(c[0]), str(c[1])) for c in raw_choices)
                if isinstance(raw_choices, list)
                else ()
            )
            await platform.post(
                task.chat_id,
                task.thread_id,
                ChatPost(kind="notice", author="", text=str(p["text"]), choices=choices),
                reply_to=str(p["reply_to"]) if p.get("reply_to") else None,
            )
        elif job.kind == "thread_state":
            assert task.root_message_id is not None
            await platform.set_thread_state(
                task.chat_id,
                ThreadRef(task.thread_id, task.root_message_id),
                await self._root_of(task),
            )

    async def _waiting_relays(self, job: OutboxJob) -> list[tuple[int, Message]]:
        """The relays queued right behind this one in its lane, not yet shown."""
        async with self.db.read() as s:
            jobs = await self.repo.outbox.following(s, job.lane, job.id, COALESCE_MAX - 1)
            out: list[tuple[int, Message]] = []
            for follower in jobs:
                if follower.kind != "relay":
                    break  # keep the order: an edit or a notice waits its turn
                mid = follower.payload.get("message_id")
                m = await self.repo.messages.get(s, int(mid)) if isinstance(mid, int) else None
                if m is None or m.chat_message_id is not None:
                    continue
                out.append((follower.id, m))
        return out

    async def _relay_digest(
        self,
        platform: ChatPlatform,
        task: Task,
        job: OutboxJob,
        first: Message,
        waiting: list[tuple[int, Message]],
    ) -> None:
        """A burst: the task's waiting comments as one message (name and text of each), so
        the thread catches up instead of lagging behind the platform's pace."""
        items = [self._chat_post(first)]
        taken: list[tuple[int, Message]] = []
        size = len(first.text) + len(first.author_name)
        for job_id, m in waiting:
            size += len(m.text) + len(m.author_name) + 8
            if size > DIGEST_CHARS:
                break
            items.append(self._chat_post(m))
            taken.append((job_id, m))
        assert task.thread_id is not None
        chat_id = await platform.post(
            task.chat_id,
            task.thread_id,
            ChatPost(kind="digest", author="", text="", items=tuple(items)),
        )
        async with self.tx() as s:
            for m in [first, *(m for _, m in taken)]:
                row = await self.repo.messages.get(s, m.id)
                assert row is not None
                row.chat_message_id = chat_id
                row.state = "relayed"
            await self.repo.outbox.complete(s, [job_id for job_id, _ in taken])
        self.metrics.relayed.inc(len(items))

    async def _root_of(self, task: Task) -> RootMessage:
        post_url = None
        if task.post_id is not None:
            async with self.db.read() as s:
                post = await self.repo.posts.get(s, task.post_id)
            post_url = post.permalink_url if post is not None else None
        return RootMessage(
            task_id=task.id,
            title=task.title,
            description=task.root_text,
            assignees=tuple(task.assignees),
            additional_data=task.additional_data,
            status=task.status,
            tags=tuple(task.tags),
            post_url=post_url,
        )

    def _chat_post(self, msg: Message) -> ChatPost:
        return ChatPost(
            kind="page" if msg.direction == "page" else "customer",
            author=msg.author_name,
            text=msg.text,
            fb_status=msg.fb_status,
            is_reply=bool(
                msg.fb_parent_id and msg.fb_post_id and msg.fb_parent_id != msg.fb_post_id
            ),
            message_id=msg.id,
        )

    async def _send_answer(self, job: OutboxJob) -> None:
        message_id = int(job.payload["message_id"])  # type: ignore[call-overload]
        async with self.db.read() as s:
            msg = await self.repo.messages.get(s, message_id)
            if msg is None or msg.state == "delivered":
                return
            task = await self.repo.tasks.get(s, msg.task_id)
            target = (
                await self.repo.messages.get(s, msg.answers_message_id)
                if msg.answers_message_id
                else None
            )
            page = await self.repo.pages.get(s, task.page_id) if task else None
        if msg.fb_id is not None:
            # the webhook's echo of this answer came back before Facebook's answer to our
            # POST (or after an unclear failure): it is on Facebook, say so once
            if task is not None:
                await self._delivered(task, message_id, msg.fb_id)
            return
        if task is None or target is None or page is None or target.fb_id is None:
            raise DeliveryError("the message it answers is gone", retryable=False)
        if self.graph is None:
            raise DeliveryError("Facebook is not configured", retryable=False)
        token = self.page_token(page)
        messenger = task.channel == "messenger"
        to = (
            (target.author_fb_id or "")
            if messenger
            else routing.comment_reply_target(message_view(target))
        )
        if msg.state == "sending" or job.attempts > 0:
            # An earlier try may have reached Facebook and still failed here (a timeout,
            # a dropped connection, a 5xx after the write): look before sending again.
            if messenger:
                found = await self.graph.find_sent_message(page.id, to, msg.text, token)
            else:
                found = await self.graph.find_comment_reply(to, page.id, msg.text, token)
            async with self.db.read() as s:
                taken = await self.repo.messages.by_fb_id(s, found) if found else None
            if found and taken is None:
                log.info("answer found on Facebook, not sent again", extra={"message_id": msg.id})
                await self._delivered(task, message_id, found)
                return
        if msg.state != "sending":
            async with self.tx() as s:
                row = await self.repo.messages.get(s, message_id)
                assert row is not None
                row.state = "sending"
        if messenger:
            fb_id = await self.graph.send_message(to, msg.text, token)
        else:
            fb_id = await self.graph.reply_to_comment(to, msg.text, token)
        await self._delivered(task, message_id, fb_id)

    async def _delivered(self, task: Task, message_id: int, fb_id: str | None) -> None:
        async with self.tx() as s:
            row = await self.repo.messages.get(s, message_id)
            assert row is not None
            if row.state == "delivered":
                return
            clash = await self.repo.messages.by_fb_id(s, fb_id) if fb_id else None
            if fb_id and (clash is None or clash.id == row.id):
                row.fb_id = fb_id
            row.state = "delivered"
            row.error = None
            # queued even before the answer's chat copy exists (Slack's Reply modal): the
            # copy is queued earlier in the same lane, so it is there when this runs
            self._chat_job(s, task, "mark_delivered", message_id=row.id)
        self.metrics.answers.labels("delivered").inc()

    async def job_failed(self, s: AsyncSession, job: OutboxJob, error: DeliveryError) -> None:
        """A job failed for good: say so where staff will see it (in the caller's
        transaction), and count it by reason. Nothing fails silently."""
        if job.kind == "fb_answer":
            await self._answer_failed(s, job, error)
            return
        p = job.payload
        platform = str(p.get("platform") or "")
        task_id = p.get("task_id")
        task = await self.repo.tasks.get(s, task_id) if isinstance(task_id, int) else None
        if task is not None:
            platform = task.chat_platform
        self.metrics.chat_failures.labels(platform or "unknown", failure_kind(error.reason)).inc()
        level = p.get("report", 0)
        if job.kind == "chat_notice":
            if not isinstance(level, int) or level >= 2 or not p.get("chat_id"):
                log.error(
                    "a report of a failure could not be shown either",
                    extra={"job_id": job.id, "reason": error.reason},
                )
                return
            self.notice(
                s,
                platform,
                str(p["chat_id"]),
                f"⚠️ A message of the bot could not be shown in the chat: {error.reason}",
                report=level + 1,
            )
            return
        if task is None:
            return
        what = await self._what_failed(s, job)
        self.notice(
            s,
            task.chat_platform,
            task.chat_id,
            f"⚠️ {what} (task #{task.id}): {error.reason}",
            thread_id=task.thread_id,
            report=1,
        )

    async def _what_failed(self, s: AsyncSession, job: OutboxJob) -> str:
        mid = job.payload.get("message_id")
        msg = await self.repo.messages.get(s, mid) if isinstance(mid, int) else None
        if job.kind == "relay" and msg is not None:
            where = f" (on Facebook: https://www.facebook.com/{msg.fb_id})" if msg.fb_id else ""
            return (
                f"A message from {msg.author_name or 'the customer'} could not be shown here{where}"
            )
        return {
            "open_thread": "The task's thread could not be opened",
            "thread_state": "The task's status could not be shown",
            "refresh": "A change to a relayed message could not be shown",
            "show_answer": "A staff answer could not be shown here",
            "mark_delivered": "A delivery mark could not be shown",
            "notice_in_task": "A message of the bot could not be shown here",
        }.get(job.kind, "A chat message could not be shown")

    async def _answer_failed(self, s: AsyncSession, job: OutboxJob, error: DeliveryError) -> None:
        message_id = int(job.payload.get("message_id", 0))  # type: ignore[call-overload]
        msg = await self.repo.messages.get(s, message_id)
        if msg is None:
            return
        msg.state = "failed"
        msg.error = error.reason
        task = await self.repo.tasks.get(s, msg.task_id)
        if task is None:
            return
        self._chat_job(
            s,
            task,
            "notice_in_task",
            text=f"⚠️ Not delivered to Facebook: {error.reason}",
            reply_to=msg.chat_message_id,
        )
        page = await self.repo.pages.get(s, task.page_id)
        if error.token_invalid and page is not None and not page.token_alerted:
            page.token_alerted = True
            self.notice(
                s,
                page.chat_platform,
                page.chat_id,
                f"⚠️ Facebook no longer accepts the token of the Page {page.name}. "
                f"An admin must run /connect {page.id} again.",
            )
        self.metrics.answers.labels("failed").inc()
