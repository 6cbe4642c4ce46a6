"""Page token health: what Facebook says of every stored page token (``debug_token``), at
start and every few hours, once per deployment.

A Page's chat is told a week before its token (or Facebook's data access for it) ends, once
per deadline, and once when the token has stopped working (expired, revoked, password
changed), with what to do. ``/metrics`` carries each Page's token state; ``python -m bot
check`` says the same in plain words.

"Once per deployment": each replica looks every few minutes, but the check itself runs
where ``once(name, period)`` says so. Alone (SQLite, one process) that is ``LocalOnce``; with
replicas it is a lease held for the period (see the README). The telling is once on its own,
whatever runs the check: a conditional update decides who tells.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.crypto import TokenBox
from bot.errors import DeliveryError
from bot.fb.graph import GraphClient, TokenInfo
from bot.metrics import Metrics
from bot.storage.db import Database
from bot.storage.models import Page
from bot.storage.repositories import TokenHealthRepository

log = logging.getLogger(__name__)

WARN_BEFORE = timedelta(days=7)
CHECK_EVERY = 6 * 3600.0  # seconds between checks of every token, deployment-wide
TICK = 600.0  # seconds between looks of each replica (gauges refreshed, check if due)
STATES = ("valid", "expiring", "invalid", "unknown")

# debug_token's error subcodes, in plain words (Facebook's access token error reference).
_WHY = {
    458: "the app was removed from the Facebook account that made the token",
    459: "Facebook locked the account that made the token until its owner logs in",
    460: "the password of the Facebook account that made the token was changed",
    463: "the token expired",
    464: "the Facebook account that made the token is not confirmed",
    467: "the Facebook account that made the token logged out",
}

# (platform, chat_id, text): a message from the bot into that chat.
Say = Callable[[str, str, str], Awaitable[None]]
# once(name, period): True for the one replica that runs ``name`` now; it then holds it for
# ``period`` seconds.
Once = Callable[[str, float], AbstractAsyncContextManager[bool]]
Clock = Callable[[], float]


class LocalOnce:
    """``Once`` for a deployment of one process: due when ``period`` has passed here."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.last: dict[str, float] = {}

    @asynccontextmanager
    async def __call__(self, name: str, period: float) -> AsyncIterator[bool]:
        now = self.clock()
        last = self.last.get(name)
        due = last is None or now - last >= period
        if due:
            self.last[name] = now
        yield due


@dataclass(frozen=True)
class Health:
    state: str  # one of STATES
    reason: str
    deadline: datetime | None = None  # when it stops working, if expiring
    data_access: bool = False  # the deadline is Facebook's data access, not the token's
    expires_at: datetime | None = None
    data_access_expires_at: datetime | None = None


def assess(info: TokenInfo, now: datetime) -> Health:
    """What a debug_token answer means for the Page, in plain words."""
    ends, access_ends = info.expires_at, info.data_access_expires_at

    def health(
        state: str, reason: str, when: datetime | None = None, access: bool = False
    ) -> Health:
        return Health(state, reason, when, access, ends, access_ends)

    if not info.is_valid:
        return health(
            "invalid", _WHY.get(info.error_subcode or 0) or info.error_message or "Facebook says so"
        )
    if ends is not None and ends <= now:
        return health("invalid", "the token expired")
    if access_ends is not None and access_ends <= now:
        return health("invalid", "Facebook's data access for the token ended")
    soon = [
        (t, access)
        for t, access in ((ends, False), (access_ends, True))
        if t is not None and t - now <= WARN_BEFORE
    ]
    if soon:
        when, access = min(soon)
        what = "Facebook's data access for the token ends" if access else "the token expires"
        return health("expiring", f"{what} on {when:%Y-%m-%d %H:%M} UTC", when, access)
    if ends is None:
        return health("valid", "valid, does not expire")
    return health("valid", f"valid until {ends:%Y-%m-%d} UTC")


def what_to_do(page_id: str, where: str = "in this chat") -> str:
    return (
        f"an admin runs /connect {where} and logs in to Facebook again "
        f"(or /connect {page_id} with a fresh FB_ACCESS_TOKEN on the server)"
    )


def warning_text(page: Page, health: Health, now: datetime) -> str:
    assert health.deadline is not None
    days = max(0, (health.deadline - now).days)
    return (
        f"⏳ The Page {page.name} ({page.id}): {health.reason} (in {days} days). After that, "
        f"answers can no longer be posted to Facebook. Before then, {what_to_do(page.id)}."
    )


def alert_text(page: Page, health: Health) -> str:
    return (
        f"⚠️ Facebook no longer accepts the token of the Page {page.name} ({page.id}): "
        f"{health.reason}. Answers to Facebook fail until {what_to_do(page.id)}."
    )


class TokenHealth:
    def __init__(
        self,
        db: Database,
        tokens: TokenBox | None,
        metrics: Metrics,
        graph: Callable[[], GraphClient | None],
        app_id: str | None,
        say: Say,
        *,
        once: Once | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.metrics = metrics
        self.graph = graph
        self.app_id = app_id
        self.say = say
        self.once: Once = once or LocalOnce()
        self.clock = clock
        self.repo = TokenHealthRepository()

    @property
    def enabled(self) -> bool:
        return self.app_id is not None and self.tokens is not None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def inspect(self, page: Page) -> Health:
        graph = self.graph()
        if self.tokens is None or self.app_id is None or graph is None:
            return Health("unknown", "FB_APP_ID, FB_APP_SECRET or SECRET_KEY is not set")
        try:
            token = self.tokens.open(page.token_encrypted)
        except ValueError as e:
            return Health("invalid", str(e))
        try:
            info = await graph.debug_token(self.app_id, token)
        except DeliveryError as e:
            return Health("unknown", f"Facebook could not say: {e.reason}")
        return assess(info, self._now())

    async def check_all(self) -> dict[str, Health]:
        """Check every connected Page's token, store what Facebook said, tell the chats."""
        async with self.db.read() as s:
            pages = list(await s.scalars(select(Page).where(Page.active.is_(True))))
        found: dict[str, Health] = {}
        for page in pages:
            health = await self.inspect(page)
            found[page.id] = health
            await self._record(page, health)
            await self._tell(page, health)
        await self.refresh_gauges()
        log.info(
            "page tokens checked",
            extra={s: sum(h.state == s for h in found.values()) for s in STATES},
        )
        return found

    async def _record(self, page: Page, health: Health) -> None:
        def epoch(t: datetime | None) -> float | None:
            return t.timestamp() if t is not None else None

        values: dict[str, object] = {
            "state": health.state,
            "reason": health.reason,
            "checked_at": self.clock(),
        }
        if health.state != "unknown":  # a failed look keeps what was known
            values["expires_at"] = epoch(health.expires_at)
            values["data_access_expires_at"] = epoch(health.data_access_expires_at)
        async with self.db.write() as s:
            await self.repo.put(s, page.id, **values)

    async def _tell(self, page: Page, health: Health) -> None:
        """A warning once per deadline; an alert once until the Page is connected again.
        If the chat cannot be told, the mark is taken back so that the next check tries."""
        if health.state == "expiring" and health.deadline is not None:
            deadline = health.deadline.timestamp()
            async with self.db.write() as s:
                mine = await self.repo.warn_once(s, page.id, deadline)
            if mine:
                await self._say_or_undo(
                    page, warning_text(page, health, self._now()), self.repo.unwarn
                )
        elif health.state == "invalid":
            async with self.db.write() as s:
                mine = await self.repo.alert_once(s, page.id)
            if mine:
                await self._say_or_undo(page, alert_text(page, health), self.repo.unalert)

    async def _say_or_undo(
        self, page: Page, text: str, undo: Callable[..., Awaitable[None]]
    ) -> None:
        try:
            await self.say(page.chat_platform, page.chat_id, text)
        except Exception as e:
            log.warning("token notice not sent", extra={"page_id": page.id, "error": str(e)})
            async with self.db.write() as s:
                await undo(s, page.id)

    async def refresh_gauges(self) -> None:
        """From the stored results, so every replica shows the same, whichever checked."""
        async with self.db.read() as s:
            rows = await self.repo.all(s)
            active = set(await s.scalars(select(Page.id).where(Page.active.is_(True))))
        gauge = self.metrics.page_token_state
        gauge.clear()
        for row in rows:
            if row.page_id not in active:
                continue
            for state in STATES:
                gauge.labels(row.page_id, state).set(1 if row.state == state else 0)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        every: float = CHECK_EVERY,
        tick: float = TICK,
        also: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        """The background loop: at start, then every ``tick``, the check if it is due
        (``once``), the gauges, and ``also`` (housekeeping that rides along)."""
        if not self.enabled:
            log.info("page token checks are off: they need FB_APP_ID, FB_APP_SECRET, SECRET_KEY")
        while not stop.is_set():
            try:
                if self.enabled:
                    async with self.once("page-token-health", every) as mine:
                        if mine:
                            await self.check_all()
                    await self.refresh_gauges()
                for job in also:
                    await job()
            except Exception:
                log.exception("page token check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)
