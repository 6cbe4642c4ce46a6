"""The browser edge of connecting Pages: plain server-rendered HTML, forms, no script.

``GET /connect/{code}`` shows what the link is for and a button; only the button's POST uses
the link (chat apps and mail scanners fetch links to preview them). It answers with a
redirect to Facebook Login and a cookie that ties the login to this browser.
``GET /connect/facebook/callback`` is where Facebook sends the browser back: the user's Pages
as check boxes. ``POST /connect/facebook/pages`` binds the ticked ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web

from bot.browser_connect import (
    CALLBACK_PATH,
    LINK_LIFE,
    BrowserConnect,
    Choices,
    ConnectLinks,
    Refused,
)
from bot.handlers.html import esc as _esc
from bot.handlers.html import page

COOKIE = "pagedesk_connect"
PAGES_PATH = "/connect/facebook/pages"

_CHAT = {"telegram": "Telegram group", "slack": "Slack channel"}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class ConnectPages:
    def __init__(self, links: ConnectLinks, flow: BrowserConnect) -> None:
        self.links = links
        self.flow = flow
        self.base = links.public_url or ""
        self.secure_cookie = self.base.startswith("https://")
        # The link's button leads (by a redirect) to Facebook Login: its origin is allowed.
        self.login_origin = _origin(links.login_url)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(CALLBACK_PATH, self.callback)
        app.router.add_post(PAGES_PATH, self.bind)
        app.router.add_get("/connect/{code}", self.link_page)
        app.router.add_post("/connect/{code}", self.start_login)

    def _page(self, title: str, body: str, status: int = 200) -> web.Response:
        return page(title, body, status=status, form_action=self.login_origin)

    def _refused(self, e: Refused) -> web.Response:
        return self._page("Pages not connected", f"<p>{_esc(e.text)}</p>", e.status)

    async def link_page(self, request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        try:
            link = await self.links.peek(code)
        except Refused as e:
            return self._refused(e)
        chat = _CHAT.get(link.chat_platform, "chat")
        until = datetime.fromtimestamp(link.expires_at, UTC).strftime("%H:%M UTC")
        action = _esc(f"{self.base}/connect/{code}")
        body = (
            f"<p>Log in to Facebook to choose the Pages whose comments and messages become "
            f"tasks in the {chat} where <code>/connect</code> was run.</p>"
            f"<p><small>This link works once, until {until}.</small></p>"
            f'<form method="post" action="{action}">'
            '<button type="submit">Continue with Facebook</button></form>'
        )
        return self._page("Connect Facebook Pages", body)

    async def start_login(self, request: web.Request) -> web.StreamResponse:
        try:
            start = await self.links.open(request.match_info["code"])
        except Refused as e:
            return self._refused(e)
        resp = web.Response(
            status=303, headers={"Location": start.dialog_url, "Cache-Control": "no-store"}
        )
        resp.set_cookie(
            COOKIE,
            start.browser_secret,
            path="/connect",
            max_age=int(2 * LINK_LIFE),
            httponly=True,
            secure=self.secure_cookie,
            samesite="Lax",  # sent on Facebook's top-level redirect back to us
        )
        return resp

    async def callback(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            choices = await self.flow.callback(
                state=q.get("state"),
                code=q.get("code"),
                error=q.get("error_reason") or q.get("error"),
                browser_secret=request.cookies.get(COOKIE),
            )
        except Refused as e:
            return self._refused(e)
        return self._page("Choose the Pages", self._choices(choices))

    def _choices(self, choices: Choices) -> str:
        if not choices.pages:
            return (
                "<p>Facebook lists no Page for this login. Were the Pages ticked in "
                "Facebook's dialog, and is this account an admin of them? Run /connect in "
                "the chat for a new link.</p>"
            )
        boxes = "".join(
            f'<label><input type="checkbox" name="page" value="{_esc(p.id)}"> '
            f"{_esc(p.name)} <small>({_esc(p.id)}"
            + (f" · {_esc(p.where)}" if p.where else "")
            + ")</small></label>"
            for p in choices.pages
        )
        return (
            "<p>Tick the Pages to connect to the chat. Each is subscribed to this app and "
            "its token is stored encrypted.</p>"
            f'<form method="post" action="{_esc(self.base + PAGES_PATH)}">'
            f'<input type="hidden" name="form" value="{_esc(choices.form_token)}">'
            f"<fieldset><legend>Your Pages</legend>{boxes}</fieldset>"
            '<button type="submit">Connect the ticked Pages</button></form>'
        )

    async def bind(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("form")
        try:
            lines = await self.flow.bind(
                form_token=token if isinstance(token, str) else None,
                ticked=[v for v in form.getall("page", []) if isinstance(v, str)],
                browser_secret=request.cookies.get(COOKIE),
            )
        except Refused as e:
            return self._refused(e)
        items = "".join(f"<li>{_esc(line)}</li>" for line in lines)
        body = f"<ul>{items}</ul><p>The chat was told. You can close this page.</p>"
        resp = self._page("Pages connected", body)
        resp.del_cookie(COOKIE, path="/connect")
        return resp
