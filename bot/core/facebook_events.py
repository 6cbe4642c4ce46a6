"""Facebook events in: comments, direct messages, removed posts. Each is routed by
``bot.routing`` against the stored state and carried out in one transaction.

Network reads (post text, profiles) happen before a write transaction opens, so that no
transaction waits on Facebook.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from bot.core.answer_parts import bind_echo
from bot.core.contacts import join_private_reply
from bot.core.context import Core
from bot.domain import (
    Channel,
    CommentEvent,
    Direction,
    FacebookEvent,
    FbUser,
    MessageState,
    MessengerEvent,
    PageInfo,
    PostInfo,
    PostRemovedEvent,
    TaskStatus,
)
from bot.errors import DeliveryError
from bot.fb.webhook import MalformedDelivery, parse_delivery
from bot.jobs.kinds import NoticeInTask, OpenThread, Refresh, Relay, ThreadState
from bot.rules.content import additional_data, task_content, template_values
from bot.storage.models import Contact, InboxItem, Message, Page, Post, Task, utcnow
from bot.storage.repositories import message_view, task_view
from bot.templates import ContactTemplate, TaskTemplate
from bot.worker import Mark, PartlyHandled

log = logging.getLogger(__name__)


POSTS_KEPT = 4096  # posts kept in memory (a stored post never changes)
BATCH_TIME = 0.02  # seconds of one transaction of a batch of deliveries, about
BATCH_TIME_BUSY = 0.005  # the same while deliveries wait for their acknowledgement

# Writes one event, in the transaction it is given.
Step = Callable[[AsyncSession], Awaitable[None]]


@dataclass
class BatchView:
    """What a batch of deliveries read before its transactions: the contacts it names, and
    the customer messages it carries that were not stored yet (each is looked up again
    when it comes twice in the batch)."""

    contacts: dict[str, Contact]
    absent: set[str]

    def take_absent(self, fb_id: str) -> bool:
        if fb_id in self.absent:
            self.absent.discard(fb_id)
            return True
        return False


async def _nothing(_s: AsyncSession) -> None:
    return None


def _instagram(ev: FacebookEvent) -> bool:
    return isinstance(ev, CommentEvent) and ev.instagram


def _renamed(contact: Contact, name: str) -> bool:
    """Does the webhook name the person anew (not our placeholder)?"""
    return bool(name) and not name.startswith("Facebook user ") and contact.name != name


def _message_id(ev: FacebookEvent) -> str | None:
    if isinstance(ev, CommentEvent):
        return ev.comment_id
    if isinstance(ev, MessengerEvent):
        return ev.mid
    return None


def _customer_id(ev: FacebookEvent) -> str | None:
    """Whose contact the event may need (its profile is read before the transaction)."""
    if isinstance(ev, CommentEvent):
        return ev.author.id
    if isinstance(ev, MessengerEvent):
        return ev.recipient_id if ev.is_echo else ev.sender_id
    return None


def instagram_as_page(ev: CommentEvent, page: Page) -> CommentEvent:
    """An Instagram comment as one on its Page: the account's own comments (our answers'
    echoes) are the Page's."""
    by_account = ev.author.id == ev.page_id
    author = FbUser(page.id, page.name) if by_account else ev.author
    return replace(ev, page_id=page.id, author=author)


class FacebookEvents:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._posts: OrderedDict[str, PostInfo] = OrderedDict()

    @staticmethod
    def _events(item: InboxItem) -> list[FacebookEvent]:
        try:
            return list(parse_delivery(json.loads(item.payload)))
        except (ValueError, MalformedDelivery) as e:
            log.warning("stored Facebook delivery is not usable", extra={"error": str(e)})
            return []

    async def handle_item(self, item: InboxItem) -> None:
        for ev in self._events(item):
            await self.handle_event(ev)

    async def handle_many(self, items: list[InboxItem], mark: Mark) -> None:
        """Several deliveries in few transactions, each delivery marked handled in the one
        that carried it out: what they need from Facebook (post text, profiles) is read
        first, then each event is routed and carried out in order, each seeing what the
        ones before it wrote."""
        per_item = [self._events(item) for item in items]
        counts = [len(evs) for evs in per_item]
        events = [ev for evs in per_item for ev in evs]
        async with self.core.db.read() as s:
            pages = await self.core.repo.pages.by_ids(
                s, {ev.page_id for ev in events if not _instagram(ev)}
            )
            batch = BatchView(
                contacts=await self.core.repo.contacts.by_fb_ids(
                    s, {fb_id for ev in events if (fb_id := _customer_id(ev))}
                ),
                absent=set(),
            )
            carried = {fb_id for ev in events if (fb_id := _message_id(ev))}
            batch.absent = carried - await self.core.repo.messages.stored_fb_ids(s, carried)
            resolved = [await self._page_of(s, ev, pages) for ev in events]
        for page, ev in resolved:
            if page is None or not page.active:
                log.info("event for a page that is not connected", extra={"page_id": ev.page_id})
        pairs = iter(resolved)
        work: list[tuple[int, list[Step]]] = []
        for item, n in zip(items, counts, strict=True):
            mine = [next(pairs) for _ in range(n)]
            work.append(
                (
                    item.id,
                    [
                        await self._prepare(page, ev, batch)
                        for page, ev in mine
                        if page is not None and page.active
                    ],
                )
            )
        done: set[int] = set()
        while len(done) < len(work):
            if done:
                await self.core.acks.turn()
            try:
                async with self.core.tx() as s:
                    # SQLite answers on the loop's thread: a transaction ends after
                    # BATCH_TIME, so requests and the intake's commit are not held up
                    started = time.monotonic()
                    limit = BATCH_TIME_BUSY if self.core.acks.busy else BATCH_TIME
                    ids: list[int] = []
                    for item_id, item_steps in work[len(done) :]:
                        for step in item_steps:
                            await step(s)
                        ids.append(item_id)
                        if time.monotonic() - started > limit:
                            break
                    await mark(s, ids)
            except Exception as e:
                if not done:
                    raise
                raise PartlyHandled(done) from e
            done.update(ids)

    async def handle_event(self, ev: FacebookEvent) -> None:
        async with self.core.db.read() as s:
            page, ev = await self._page_of(s, ev, None)
        if page is None or not page.active:
            log.info("event for a page that is not connected", extra={"page_id": ev.page_id})
            return
        await self._run(await self._prepare(page, ev, None), ev)

    async def comment(self, page: Page, ev: CommentEvent) -> None:
        """One comment, in a transaction of its own (catch-up)."""
        await self._run(await self._comment_step(page, ev, None), ev)

    async def _run(self, step: Step, ev: FacebookEvent) -> None:
        for attempt in range(3):
            try:
                async with self.core.tx() as s:
                    await step(s)
                return
            except IntegrityError:
                # Another worker opened the task (or stored this message) first: the next
                # attempt sees its row and joins it.
                log.info("concurrent write, retrying", extra={"attempt": attempt})
        raise RuntimeError(f"{ev} could not be stored after 3 attempts")

    async def _page_of(
        self, s: AsyncSession, ev: FacebookEvent, pages: dict[str, Page] | None
    ) -> tuple[Page | None, FacebookEvent]:
        """The event's Page (an Instagram comment: the Page of that account)."""
        if isinstance(ev, CommentEvent) and ev.instagram:
            page = await self.core.repo.pages.by_instagram(s, ev.page_id)
            return page, instagram_as_page(ev, page) if page is not None else ev
        if pages is not None:
            return pages.get(ev.page_id), ev
        return await self.core.repo.pages.get(s, ev.page_id), ev

    async def _prepare(self, page: Page, ev: FacebookEvent, batch: BatchView | None) -> Step:
        """Read what the event needs from Facebook; return what writes it."""
        if isinstance(ev, CommentEvent):
            return await self._comment_step(page, ev, batch)
        if isinstance(ev, MessengerEvent):
            return await self._direct_message_step(page, ev, batch)
        if isinstance(ev, PostRemovedEvent):
            return partial(self._post_removed, page, ev)
        return _nothing

    async def _post_info(self, page: Page, post_id: str) -> PostInfo:
        """The post, read from the Graph API once and kept (a stored post never changes:
        the latest ones are also kept in memory)."""
        cached = self._posts.get(post_id)
        if cached is not None:
            self._posts.move_to_end(post_id)
            return cached
        async with self.core.db.read() as s:
            row = await self.core.repo.posts.get(s, post_id)
        if row is not None:
            return self._keep_post(
                PostInfo(row.id, row.message, row.permalink_url, row.created_time)
            )
        info: PostInfo
        error: str | None = None
        try:
            if self.core.graph is None:
                raise DeliveryError("Facebook is not configured", retryable=False)
            info = await self.core.graph.post(post_id, self.core.page_token(page))
        except DeliveryError as e:
            log.warning("post text not available", extra={"post_id": post_id, "reason": e.reason})
            info = PostInfo(post_id, "", None, None)
            error = e.reason
        try:
            async with self.core.tx() as s:
                if await self.core.repo.posts.get(s, post_id) is None:
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
        return self._keep_post(info)

    def _keep_post(self, info: PostInfo) -> PostInfo:
        self._posts[info.id] = info
        if len(self._posts) > POSTS_KEPT:
            self._posts.popitem(last=False)
        return info

    async def _profile(
        self, page: Page, fb_id: str, name: str | None, batch: BatchView | None
    ) -> tuple[str, str | None]:
        """Name and picture for a new contact; the webhook's name wins, Graph fills gaps."""
        if batch is not None:
            contact = batch.contacts.get(fb_id)
        else:
            async with self.core.db.read() as s:
                contact = await self.core.repo.contacts.by_fb_id(s, fb_id)
        if contact is not None:
            return name or contact.name, contact.picture_url
        picture = None
        if self.core.graph is not None:
            try:
                g_name, picture = await self.core.graph.profile(fb_id, self.core.page_token(page))
                name = name or g_name
            except DeliveryError as e:
                log.info("profile not readable", extra={"reason": e.reason})
        return name or f"Facebook user {fb_id}", picture

    async def _find_or_create_contact(
        self,
        s: AsyncSession,
        fb_id: str,
        name: str,
        picture: str | None,
        page_id: str,
        batch: BatchView | None,
    ) -> Contact:
        read = batch.contacts.get(fb_id) if batch is not None else None
        if read is not None and not _renamed(read, name) and not (picture and not read.picture_url):
            return read  # as the batch read it, and nothing to change
        contact = await self.core.repo.contacts.by_fb_id(s, fb_id)
        if contact is None:
            body = await self.core.repo.templates.get(s, page_id, "contact") or {}
            fields = ContactTemplate.from_json(body).new_contact_fields()
            contact = Contact(fb_id=fb_id, name=name, picture_url=picture, fields=fields)
            s.add(contact)
            await s.flush()
        else:
            if _renamed(contact, name):
                contact.name = name
            if picture and not contact.picture_url:
                contact.picture_url = picture
        return contact

    async def _template(self, s: AsyncSession, page_id: str) -> TaskTemplate:
        body = await self.core.repo.templates.get(s, page_id, "task")
        return TaskTemplate.from_json(body) if body else TaskTemplate()

    async def _comment_step(self, page: Page, ev: CommentEvent, batch: BatchView | None) -> Step:
        pageinfo = PageInfo(page.id, page.name)
        customer = ev.verb == "add" and ev.author.id != page.id
        post = await self._post_info(page, ev.post_id) if customer else None
        name, picture = (
            await self._profile(page, ev.author.id, ev.author.name, batch)
            if customer
            else ("", None)
        )
        by_page = ev.author.id == page.id

        def message() -> Message:
            return Message(
                direction=Direction.PAGE if by_page else Direction.CUSTOMER,
                fb_id=ev.comment_id,
                fb_parent_id=ev.parent_id,
                fb_post_id=ev.post_id,
                author_fb_id=ev.author.id,
                author_name=page.name if by_page else name,
                text=ev.text,
                state=MessageState.PENDING,
                created_at=ev.created_time,
                media=routing.media_to_show(ev.attachments),
            )

        async def find_open(s: AsyncSession) -> Task | None:
            return await self.core.repo.tasks.open_for_post(s, page.id, ev.post_id)

        return self._store_step(
            page,
            fb_id=ev.comment_id,
            find_open=find_open,
            by_page=by_page,
            route=lambda **views: routing.route_comment(ev, pageinfo, **views),
            message=message,
            post=post,
            contact_args=(ev.author.id, name, picture),
            channel=Channel.COMMENTS,
            post_id=ev.post_id,
            first_at=ev.created_time,
            batch=batch,
        )

    def _store_step(
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
        batch: BatchView | None,
    ) -> Step:
        """Load the views, let routing decide, carry it out: in the caller's transaction."""

        async def step(s: AsyncSession) -> None:
            # An echo's id may have been stored by our own answer since the batch was read:
            # only a customer's message is taken as new on the batch's word.
            if not by_page and batch is not None and batch.take_absent(fb_id):
                known = None
            else:
                known = await self.core.repo.messages.by_fb_id(s, fb_id)
            open_task = await find_open(s)
            unconfirmed: list[Message] = []
            if by_page and open_task is not None:
                unconfirmed = await self.core.repo.messages.unconfirmed_answers(s, open_task.id)
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
                batch=batch,
            )

        return step

    async def _direct_message_step(
        self, page: Page, ev: MessengerEvent, batch: BatchView | None
    ) -> Step:
        pageinfo = PageInfo(page.id, page.name)
        customer_id = ev.recipient_id if ev.is_echo else ev.sender_id
        name, picture = (
            await self._profile(page, customer_id, None, batch) if not ev.is_echo else ("", None)
        )

        def message() -> Message:
            return Message(
                direction=Direction.PAGE if ev.is_echo else Direction.CUSTOMER,
                fb_id=ev.mid,
                author_fb_id=ev.sender_id,
                author_name=page.name if ev.is_echo else name,
                text=ev.text,
                state=MessageState.PENDING,
                created_at=ev.timestamp,
                media=routing.media_to_show(ev.attachments),
            )

        async def find_open(s: AsyncSession) -> Task | None:
            contact = await self.core.repo.contacts.by_fb_id(s, customer_id)
            if contact is None:
                return None
            return await self.core.repo.tasks.open_for_dm(s, page.id, contact.id)

        return self._store_step(
            page,
            fb_id=ev.mid,
            find_open=find_open,
            by_page=ev.is_echo,
            route=lambda **views: routing.route_direct_message(ev, pageinfo, **views),
            message=message,
            post=None,
            contact_args=(customer_id, name, picture),
            channel=Channel.MESSENGER,
            post_id=None,
            first_at=ev.timestamp,
            batch=batch,
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
        batch: BatchView | None = None,
    ) -> None:
        match decision:
            case routing.Ignore(reason):
                log.debug("event ignored", extra={"reason": reason})
            case routing.BindEcho(message_id, part):
                await bind_echo(s, self.core.repo, message_id, part, message.fb_id, page.id)
            case routing.MarkRelayed(message_id, fb_status, text):
                row = await self.core.repo.messages.get(s, message_id)
                if row is None:
                    return
                row.fb_status = None if fb_status == "visible" else fb_status
                if text is not None:
                    row.text = text
                task = await self.core.repo.tasks.get(s, row.task_id)
                if task is not None and row.chat_message_id is not None:
                    self.core.add_job(s, task, Refresh(task.id, row.id))
            case routing.JoinTask(task_id, _as_page):
                task = await self.core.repo.tasks.get(s, task_id)
                assert task is not None
                task = await self.core.repo.tasks.surviving(s, task)
                if message.direction != Direction.PAGE:
                    fb_id, name, picture = contact_args
                    await self._find_or_create_contact(s, fb_id, name, picture, page.id, batch)
                message.task_id = task.id
                await self.core.repo.messages.insert(s, message)
                self.core.add_job(s, task, Relay(task.id, message.id))
            case routing.OpenTask():
                fb_id, name, picture = contact_args
                contact = await self._find_or_create_contact(
                    s, fb_id, name, picture, page.id, batch
                )
                pageinfo = PageInfo(page.id, page.name)
                opened = datetime.now(UTC)
                data = additional_data(
                    page=pageinfo,
                    post=post,
                    contact_name=contact.name,
                    contact_fb_id=contact.fb_id,
                    first_message_at=first_at,
                    opened_at=opened,
                )
                values = template_values(
                    page=pageinfo,
                    post=post,
                    contact_name=contact.name,
                    first_text=message.text,
                    data=data,
                )
                content = task_content(await self._template(s, page.id), values)
                origin = (
                    await self.core.repo.messenger.private_reply_to(s, fb_id)
                    if channel == Channel.MESSENGER
                    else None
                )
                if origin is not None:
                    # the person answered a private reply: one contact with the commenter,
                    # and this task's root links back
                    await join_private_reply(s, self.core.repo, contact, origin)
                    link = f"Began with a private reply to a comment in task #{origin.task_id}"
                    content = replace(
                        content, additional_data=f"{content.additional_data}\n{link}".strip()
                    )
                task = Task(
                    page_id=page.id,
                    channel=channel,
                    post_id=post_id,
                    contact_id=contact.id,
                    status=TaskStatus.OPEN,
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
                await self.core.repo.messages.insert(s, message)
                self.core.add_job(s, task, OpenThread(task.id))
                self.core.add_job(s, task, Relay(task.id, message.id))
                self.core.metrics.tasks_opened.inc()
                commented = await self.core.repo.tasks.get(s, origin.task_id) if origin else None
                if commented is not None:
                    note = (
                        f"{contact.name} answered the private reply in Messenger: task #{task.id}."
                    )
                    self.core.add_job(s, commented, NoticeInTask(commented.id, note))

    async def _post_removed(self, page: Page, ev: PostRemovedEvent, s: AsyncSession) -> None:
        task = await self.core.repo.tasks.open_for_post(s, page.id, ev.post_id)
        decision = routing.route_post_removed(task_view(task) if task else None)
        if task is None or not isinstance(decision, routing.CloseTask):
            return
        task.status = TaskStatus.CLOSED
        task.closed_at = utcnow()
        await s.flush()  # a later comment of the batch looks for the post's open task unflushed
        self.core.add_job(s, task, NoticeInTask(task.id, decision.note))
        self.core.add_job(s, task, ThreadState(task.id))
