"""Periodic work: catching up on comments the webhooks missed, and housekeeping."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from bot.core.context import Core
from bot.core.facebook_events import FacebookEvents
from bot.errors import DeliveryError
from bot.storage.models import MediaLink

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, core: Core, events: FacebookEvents) -> None:
        self.core = core
        self.events = events

    async def catch_up(self) -> int:
        """Read the comments of every open task's post since the last one seen, and handle
        those no webhook brought (downtime, a missed delivery). Returns how many were new."""
        if self.core.graph is None:
            return 0
        async with self.core.db.read() as s:
            tasks = await self.core.repo.tasks.open_on_posts(s)
        new = 0
        for task in tasks:
            assert task.post_id is not None
            async with self.core.db.read() as s:
                page = await self.core.repo.pages.get(s, task.page_id)
                last = await self.core.repo.messages.last_seen_on_post(s, task.post_id)
            if page is None or not page.active:
                continue
            # a minute of overlap: Facebook's "since" is by creation time, in seconds
            since = (last or task.created_at) - timedelta(minutes=1)
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)  # SQLite gives naive datetimes back
            try:
                events = await self.core.graph.comments(
                    page.id, task.post_id, self.core.page_token(page), since
                )
            except DeliveryError as e:
                log.warning(
                    "catch-up read failed", extra={"post_id": task.post_id, "reason": e.reason}
                )
                continue
            for ev in events:
                async with self.core.db.read() as s:
                    if await self.core.repo.messages.by_fb_id(s, ev.comment_id) is not None:
                        continue
                await self.events.comment(page, ev)
                new += 1
        if new:
            log.info("catch-up found comments the webhooks missed", extra={"count": new})
        return new

    async def prune(self, keep: timedelta) -> tuple[int, int]:
        """Delete deliveries processed and jobs done longer ago than ``keep``: without this
        both tables grow by every delivery and every call, forever. Platforms re-send within
        hours at most, so deduplication does not need older rows; failures stay."""
        cutoff = datetime.now(UTC) - keep
        async with self.core.db.write() as s:
            inbox = await self.core.repo.inbox.prune(s, cutoff.timestamp())
            outbox = await self.core.repo.outbox.prune(s, cutoff)
            # links to staff files Facebook could fetch: useless once expired
            gone = await s.execute(delete(MediaLink).where(MediaLink.expires_at < time.time()))
            links = int(getattr(gone, "rowcount", 0) or 0)
        if inbox or outbox or links:
            log.info(
                "pruned old rows", extra={"inbox": inbox, "outbox": outbox, "media_links": links}
            )
        return inbox, outbox
