"""Facebook's user data deletion callback, and the status page its answer points to.

``POST /webhooks/facebook/data-deletion`` carries a ``signed_request`` form field signed
with the app secret; we forget the person and answer ``{url, confirmation_code}``. The URL
is ``GET /webhooks/facebook/data-deletion/{code}``: a page that says what was deleted.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.data_deletion import DataDeletion
from bot.fb.signed_request import BadSignedRequest, parse_signed_request
from bot.handlers.html import esc, page
from bot.metrics import Metrics

log = logging.getLogger(__name__)

PATH = "/webhooks/facebook/data-deletion"


class DataDeletionEdge:
    def __init__(
        self,
        deletion: DataDeletion,
        app_secret: str | None,
        public_url: str | None,
        metrics: Metrics,
    ) -> None:
        self.deletion = deletion
        self.app_secret = app_secret
        self.public_url = public_url.rstrip("/") if public_url else None
        self.metrics = metrics

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.request)
        app.router.add_get(PATH + "/{code}", self.status)

    def _refuse(self, reason: str, status: int, text: str) -> web.Response:
        self.metrics.rejected.labels("facebook_data_deletion", reason).inc()
        log.warning("data deletion request refused", extra={"reason": reason})
        return web.json_response({"error": text}, status=status)

    async def request(self, request: web.Request) -> web.StreamResponse:
        if self.app_secret is None:
            return self._refuse("not_configured", 403, "FB_APP_SECRET is not configured")
        form = await request.post()
        signed = form.get("signed_request")
        if not isinstance(signed, str) or not signed:
            return self._refuse("malformed", 400, "signed_request is missing")
        try:
            payload = parse_signed_request(signed, self.app_secret)
        except BadSignedRequest as e:
            return self._refuse("signature", 403, f"signed_request refused: {e}")
        user_id = str(payload.get("user_id") or "")
        if not user_id.isdigit():
            return self._refuse("malformed", 400, "signed_request names no user_id")
        code = await self.deletion.forget(user_id)
        base = self.public_url or str(request.url.origin())
        return web.json_response({"url": f"{base}{PATH}/{code}", "confirmation_code": code})

    async def status(self, request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        row = await self.deletion.request(code)
        if row is None:
            body = "<p>No data deletion request has this confirmation code.</p>"
            return page("Data deletion request", body, status=404)
        n = row.summary
        done: list[str] = []
        if n.get("contacts"):
            done.append("Your name and the fields the Page's staff kept about you.")
        if n.get("pictures"):
            done.append("Your profile picture's address.")
        if n.get("messages"):
            done.append(f"The text of the {n['messages']} comment(s) and message(s) you sent.")
        if n.get("tasks"):
            done.append(f"Your name and words in the summary of {n['tasks']} conversation(s).")
        if n.get("deliveries"):
            done.append(f"{n['deliveries']} stored notification(s) from Facebook naming you.")
        when = f"{row.requested_at:%Y-%m-%d %H:%M} UTC"
        if done:
            items = "".join(f"<li>{esc(line)}</li>" for line in done)
            what = f"<p>Deleted:</p><ul>{items}</ul>"
        else:
            what = "<p>This service held no data about you from Facebook: nothing to delete.</p>"
        body = (
            f"<p>Confirmation code <code>{esc(row.confirmation_code)}</code>, received "
            f"{esc(when)}. Status: <strong>done</strong>.</p>{what}"
            "<p>Kept: that conversations with the Page took place (when, on which post) and "
            "what the Page's staff answered, without your name or your words.</p>"
            "<p>Not covered: copies already shown to the Page's staff in their own chat "
            "(Telegram or Slack), and what Facebook itself shows; ask the Page, or remove "
            "your comments on Facebook.</p>"
        )
        return page("Data deletion request", body)
