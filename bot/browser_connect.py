"""Connecting Pages in the browser: a one-time link, Facebook Login, then the Pages ticked.

An operator (a ``BOT_ADMINS`` user) runs ``/connect`` alone in a chat and gets a link that
works once, for 15 minutes, bound to that chat and that person. The link's page starts
Facebook Login; Facebook sends the browser back with a ``code`` and our ``state``; the code
becomes a long-lived user token, whose ``/me/accounts`` are offered as check boxes; the
ticked Pages are subscribed and bound to the chat, and the chat is told.

Every secret (the link's code, the ``state``, the browser's cookie, the form's token) is
stored only as a SHA-256 hash, and each step is taken once by a conditional update, so the
flow holds across replicas. The ``state`` is also tied to the browser that opened the link
(a cookie), so a login finished in another browser is refused.

The core is reached only through two callables (``BindPage``, ``Say``), given by whoever
wires this: nothing here imports the service.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from bot.crypto import TokenBox
from bot.errors import DeliveryError
from bot.fb.graph import GraphClient
from bot.storage.db import Database
from bot.storage.models import ConnectLink
from bot.storage.repositories import ConnectLinkRepository, PageRepository

log = logging.getLogger(__name__)

LINK_LIFE = 15 * 60.0  # seconds a link may wait to be opened, and a login to be finished
CALLBACK_PATH = "/connect/facebook/callback"
# What the Pages need (the README lists them for FB_ACCESS_TOKEN too).
SCOPES = (
    "pages_show_list",
    "pages_read_engagement",
    "pages_manage_metadata",
    "pages_manage_engagement",
    "pages_read_user_content",
    "pages_messaging",
)
SUBSCRIBED_FIELDS = ["feed", "messages"]

# (page_id, name, page_token, platform, chat_id, by_user) -> what to tell the chat. Raises
# with a message for the person when the Page cannot be bound.
BindPage = Callable[[str, str, str, str, str, str], Awaitable[str]]
# (platform, chat_id, text): a message from the bot into that chat.
Say = Callable[[str, str, str], Awaitable[None]]
Clock = Callable[[], float]


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


class Refused(Exception):
    """A step that cannot be taken; the message is for the person in the browser."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


AGAIN = "Run /connect in the chat for a new link."
USED = Refused(f"This link was already used. {AGAIN}", 410)
EXPIRED = Refused(f"This link has expired (links work for 15 minutes). {AGAIN}", 410)
UNKNOWN = Refused(f"This link is not valid. {AGAIN}", 404)
OTHER_BROWSER = Refused(
    f"This login was started in another browser (or its cookie is gone). {AGAIN}", 400
)
WRONG_STATE = Refused(
    f"Facebook's answer does not belong to a login started here (wrong or used state). {AGAIN}",
    400,
)


@dataclass(frozen=True)
class LoginStart:
    dialog_url: str
    browser_secret: str  # goes into the cookie that ties the login to this browser


@dataclass(frozen=True)
class PageChoice:
    id: str
    name: str
    where: str  # "" | "connected here" | "connected to another chat: ticking moves it here"


@dataclass(frozen=True)
class Choices:
    form_token: str
    pages: list[PageChoice]


class ConnectLinks:
    """Makes the one-time links (for the /connect command) and lets a browser use one."""

    def __init__(
        self,
        db: Database,
        tokens: TokenBox | None,
        *,
        public_url: str | None,
        app_id: str | None,
        app_secret: str | None,
        login_url: str,
        api_version: str,
        clock: Clock = time.time,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.public_url = public_url.rstrip("/") if public_url else None
        self.app_id = app_id
        self.app_secret = app_secret
        self.login_url = login_url.rstrip("/")
        self.api_version = api_version
        self.clock = clock
        self.repo = ConnectLinkRepository()

    def missing(self) -> list[str]:
        """The settings without which no link is offered, for the command's answer."""
        wanted = {
            "FB_APP_ID": self.app_id,
            "FB_APP_SECRET": self.app_secret,
            "PUBLIC_URL": self.public_url,
            "SECRET_KEY": self.tokens,
        }
        return [name for name, value in wanted.items() if value is None]

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}{CALLBACK_PATH}"

    async def new_link(self, platform: str, chat_id: str, user_id: str) -> str | None:
        """A link for this person to connect Pages to this chat, or None when the settings
        for it are missing (``missing()`` names them). The caller has checked that the
        person may bind Pages (``BOT_ADMINS``)."""
        if self.missing():
            return None
        code = _new_secret()
        now = self.clock()
        async with self.db.write() as s:
            self.repo.add(
                s,
                ConnectLink(
                    code_hash=_hash(code),
                    chat_platform=platform,
                    chat_id=chat_id,
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + LINK_LIFE,
                ),
            )
        log.info("connect link made", extra={"platform": platform, "chat_id": chat_id})
        return f"{self.public_url}/connect/{code}"

    async def peek(self, code: str) -> ConnectLink:
        """The link, if it can still be used (showing its page does not use it: chat apps
        and mail scanners open links to preview them)."""
        async with self.db.read() as s:
            link = await self.repo.get(s, _hash(code))
        if link is None:
            raise UNKNOWN
        if link.opened_at is not None:
            raise USED
        if link.expires_at < self.clock():
            raise EXPIRED
        return link

    async def open(self, code: str) -> LoginStart:
        """The link's one use: a ``state`` and a browser secret, and where to log in."""
        await self.peek(code)
        state, browser = _new_secret(), _new_secret()
        now = self.clock()
        async with self.db.write() as s:
            took = await self.repo.open(
                s,
                _hash(code),
                now=now,
                state_hash=_hash(state),
                browser_hash=_hash(browser),
                expires_at=now + LINK_LIFE,
            )
        if not took:
            raise USED  # another browser was quicker, or it expired in between
        query = urlencode(
            {
                "client_id": self.app_id or "",
                "redirect_uri": self.redirect_uri,
                "state": state,
                "scope": ",".join(SCOPES),
                "response_type": "code",
            }
        )
        return LoginStart(f"{self.login_url}/{self.api_version}/dialog/oauth?{query}", browser)


class BrowserConnect:
    """Facebook's answer to the login, then the ticked Pages bound to the link's chat."""

    def __init__(
        self,
        links: ConnectLinks,
        graph: Callable[[], GraphClient | None],
        bind_page: BindPage,
        say: Say,
    ) -> None:
        self.links = links
        self.graph = graph
        self.bind_page = bind_page
        self.say = say
        self.repo = links.repo
        self.pages = PageRepository()

    def _client(self) -> GraphClient:
        graph = self.graph()
        if graph is None:
            raise Refused("The server is starting; try again in a moment.", 503)
        return graph

    def _check(self, link: ConnectLink, browser_secret: str | None) -> None:
        if not browser_secret or link.browser_hash != _hash(browser_secret):
            raise OTHER_BROWSER
        if link.expires_at < self.links.clock():
            raise EXPIRED

    async def callback(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        browser_secret: str | None,
    ) -> Choices:
        """Facebook sent the browser back: exchange the code, offer the user's Pages."""
        if not state:
            raise WRONG_STATE
        async with self.links.db.read() as s:
            link = await self.repo.by_state(s, _hash(state))
        if link is None:
            raise WRONG_STATE
        self._check(link, browser_secret)
        async with self.links.db.write() as s:
            if not await self.repo.take_state(s, link.code_hash, _hash(state)):
                raise WRONG_STATE
        if error or not code:
            raise Refused(f"Facebook Login was cancelled ({error or 'no code'}). {AGAIN}", 400)
        graph, app_id, box = self._client(), self.links.app_id, self.links.tokens
        assert app_id is not None and box is not None  # a link exists only with them
        try:
            short = await graph.exchange_code(app_id, self.links.redirect_uri, code)
            user = await graph.long_lived_token(app_id, short.access_token)
            accounts = await graph.accounts(user.access_token)
        except DeliveryError as e:
            raise Refused(f"Facebook refused the login: {e.reason}. {AGAIN}", 502) from None
        form = _new_secret()
        async with self.links.db.write() as s:
            row = await self.repo.get(s, link.code_hash)
            if row is None or row.done_at is not None:
                raise USED
            row.user_token_encrypted = box.seal(user.access_token)
            row.form_hash = _hash(form)
            known = {a.id: await self.pages.get(s, a.id) for a in accounts}
        choices = []
        for a in accounts:
            page = known[a.id]
            where = ""
            if page is not None and page.active:
                here = (page.chat_platform, page.chat_id) == (link.chat_platform, link.chat_id)
                where = (
                    "connected here"
                    if here
                    else "connected to another chat: ticking it moves it here"
                )
            choices.append(PageChoice(a.id, a.name, where))
        log.info("facebook login done", extra={"pages": len(accounts)})
        return Choices(form, choices)

    async def bind(
        self, *, form_token: str | None, ticked: list[str], browser_secret: str | None
    ) -> list[str]:
        """Bind the ticked Pages to the link's chat: subscribed first, token stored sealed,
        the chat told. Returns a line per Page for the browser."""
        if not form_token:
            raise WRONG_STATE
        async with self.links.db.read() as s:
            link = await self.repo.by_form(s, _hash(form_token))
        if link is None:
            raise USED
        self._check(link, browser_secret)
        if not ticked:
            raise Refused("No Page was ticked: go back, tick the Pages to connect, send again.")
        box = self.links.tokens
        assert box is not None and link.user_token_encrypted is not None
        user_token = box.open(link.user_token_encrypted)
        async with self.links.db.write() as s:
            if not await self.repo.finish(s, link.code_hash, self.links.clock()):
                raise USED
        graph = self._client()
        try:
            accounts = await graph.accounts(user_token)
        except DeliveryError as e:
            raise Refused(f"Facebook refused to list the Pages: {e.reason}. {AGAIN}", 502) from None
        wanted = set(ticked)
        lines: list[str] = []
        for account in accounts:
            if account.id not in wanted:
                continue
            wanted.discard(account.id)
            try:
                await graph.subscribe_app(account.id, account.access_token, SUBSCRIBED_FIELDS)
            except DeliveryError as e:
                lines.append(f"{account.name}: Facebook refused to subscribe the app: {e.reason}")
                continue
            try:
                lines.append(
                    await self.bind_page(
                        account.id,
                        account.name,
                        account.access_token,
                        link.chat_platform,
                        link.chat_id,
                        link.user_id,
                    )
                )
            except Exception as e:
                log.warning("page not bound", extra={"page_id": account.id, "error": str(e)})
                lines.append(f"{account.name}: not connected: {e}")
        lines.extend(f"{ref}: not among the Pages of this login" for ref in sorted(wanted))
        who = f"{link.chat_platform}:{link.user_id}"
        try:
            await self.say(
                link.chat_platform,
                link.chat_id,
                f"Pages connected in the browser by {who}:\n" + "\n".join(lines),
            )
        except Exception as e:
            log.warning("the chat could not be told", extra={"error": str(e)})
            lines.append("(The chat could not be told: check the bot's rights there.)")
        return lines

    async def prune(self) -> int:
        """Links a day past their end: nothing can use them, and they hold nobody's data."""
        async with self.links.db.write() as s:
            return await self.repo.prune(s, self.links.clock() - 86400)
