"""The Facebook Login side of the local Graph API: the OAuth dialog (a page with a
Continue button that sends the browser back with a ``code`` and the ``state``), the code
and long-lived token exchanges, and ``debug_token`` with token states a test can script
(expiring, expired, revoked after a password change)."""

from __future__ import annotations

import html
import itertools
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from yarl import URL

if TYPE_CHECKING:
    from bot.emulators.graph import FakeGraph

SCOPES = [
    "pages_show_list",
    "pages_read_engagement",
    "pages_manage_metadata",
    "pages_manage_engagement",
    "pages_read_user_content",
    "pages_messaging",
]
# debug_token's error for each subcode a test may script (Facebook's wording)
_SUBCODE_MESSAGES = {
    458: "Error validating access token: The user has not authorized application.",
    460: (
        "Error validating access token: The session has been invalidated because the user "
        "changed their password or Facebook has changed the session for security reasons."
    ),
    463: "Error validating access token: Session has expired.",
    467: "Error validating access token: The user is enrolled in a blocking, logged-in checkpoint",
}


def oauth_error(message: str, code: int = 100, subcode: int | None = None) -> web.Response:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = "fake"
    return web.json_response({"error": error}, status=400)


class FakeLogin:
    def __init__(self, graph: FakeGraph, app_id: str) -> None:
        self.graph = graph
        self.app_id = app_id
        self.codes: dict[str, str] = {}  # code -> the redirect_uri it was given for
        self.used_codes: set[str] = set()
        self.short_tokens: set[str] = set()
        # token -> debug_token fields that differ from a healthy token's
        self.token_states: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def set_token(
        self,
        token: str,
        *,
        expires_at: float = 0,
        data_access_expires_at: float | None = None,
        valid: bool = True,
        subcode: int | None = None,
    ) -> None:
        """What debug_token says of ``token``. Not valid: every other call with it fails
        with code 190 (and the subcode) as well."""
        state: dict[str, Any] = {"is_valid": valid, "expires_at": int(expires_at)}
        if data_access_expires_at is not None:
            state["data_access_expires_at"] = int(data_access_expires_at)
        if not valid:
            state["error"] = {
                "code": 190,
                "message": _SUBCODE_MESSAGES.get(subcode or 0, "Invalid OAuth access token."),
                **({"subcode": subcode} if subcode else {}),
            }
        self.token_states[token] = state

    def dead(self, token: str) -> web.Response | None:
        state = self.token_states.get(token)
        if state is None or state["is_valid"]:
            return None
        error = state["error"]
        return oauth_error(error["message"], 190, error.get("subcode"))

    def dialog(self, params: dict[str, Any]) -> web.Response:
        """``GET /{version}/dialog/oauth``: a stand-in for the login and consent screens."""
        if params.get("client_id") != self.app_id:
            return web.Response(status=400, text="Invalid App ID", content_type="text/html")
        redirect = str(params.get("redirect_uri") or "")
        if not redirect.startswith(("http://", "https://")):
            return web.Response(status=400, text="URL blocked", content_type="text/html")
        code = f"code-{next(self._ids)}"
        self.codes[code] = redirect
        state = str(params.get("state", ""))
        back = URL(redirect).update_query(code=code, state=state)
        cancel = URL(redirect).update_query(
            error="access_denied",
            error_code="200",
            error_description="Permissions error",
            error_reason="user_denied",
            state=state,
        )
        asked = html.escape(str(params.get("scope", "")))
        text = (
            "<!doctype html><html><head><title>Log in with Facebook</title></head><body>"
            f"<h1>Pagedesk is asking for: {asked}</h1>"
            f'<a id="continue" href="{html.escape(str(back))}">Continue as Operator</a> '
            f'<a id="cancel" href="{html.escape(str(cancel))}">Cancel</a></body></html>'
        )
        return web.Response(text=text, content_type="text/html")

    def exchange(self, params: dict[str, Any]) -> web.Response:
        """``GET /{version}/oauth/access_token``: a code, or a short-lived token."""
        if params.get("client_id") != self.app_id:
            return oauth_error("Error validating application. Invalid application ID.", 101)
        if self.graph.app_secret and params.get("client_secret") != self.graph.app_secret:
            return oauth_error("Error validating client secret.", 1)
        if params.get("grant_type") == "fb_exchange_token":
            if params.get("fb_exchange_token") not in self.short_tokens:
                return oauth_error("Invalid OAuth access token.", 190)
            return web.json_response(
                {
                    "access_token": self.graph.user_token,
                    "token_type": "bearer",
                    "expires_in": 5183944,
                }
            )
        code = str(params.get("code", ""))
        if code in self.used_codes:
            return oauth_error("This authorization code has been used.", 100, 36009)
        if code not in self.codes:
            return oauth_error("Invalid verification code format.", 100, 36007)
        if self.codes[code] != params.get("redirect_uri"):
            return oauth_error(
                "Error validating verification code. Please make sure your redirect_uri is "
                "identical to the one you used in the OAuth dialog request",
                100,
                36008,
            )
        self.used_codes.add(code)
        token = f"short-user-token-{next(self._ids)}"
        self.short_tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": 5400}
        )

    def debug(self, token: str, params: dict[str, Any]) -> web.Response:
        """``GET /debug_token?input_token=``, asked with the app token."""
        if token != f"{self.app_id}|{self.graph.app_secret}":
            return oauth_error(
                "(#100) You must provide an app access token, or a user access token that "
                "is an owner or developer of the app",
                100,
            )
        input_token = str(params.get("input_token", ""))
        page = self.graph._page_for_token(input_token)
        now = int(time.time())
        if page is None and input_token != self.graph.user_token:
            data: dict[str, Any] = {
                "error": {
                    "code": 190,
                    "message": "Invalid OAuth access token - Cannot parse access token",
                },
                "is_valid": False,
                "scopes": [],
            }
        else:
            data = {
                "app_id": self.app_id,
                "type": "PAGE" if page else "USER",
                "application": "Pagedesk",
                "data_access_expires_at": now + 90 * 86400,
                "expires_at": 0,
                "is_valid": True,
                "issued_at": now - 3600,
                "scopes": SCOPES,
                "user_id": "1000",
                **({"profile_id": page.id} if page else {}),
            }
        data.update(self.token_states.get(input_token, {}))
        return web.json_response({"data": data})
