"""Our Graph API client: one aiohttp session, errors mapped to what the outbox can act on.

The token travels in the ``Authorization`` header, never in the URL (URLs end up in proxy
and library logs), and with the app secret every call carries ``appsecret_proof``, so an
app may turn on "Require App Secret": a token leaked without the secret is then useless.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.domain import CommentEvent, FbUser, PageAccount, PostInfo
from bot.errors import DeliveryError

log = logging.getLogger(__name__)

# Graph throttling codes: app (4), user (17), page (32), custom (613), page BUC (80001…).
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80000, 80001, 80002, 80003, 80004, 80005, 80006})


class GraphError(DeliveryError):
    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: int | None = None,
        subcode: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.subcode = subcode
        throttled = code in THROTTLE_CODES or status == 429
        retryable = throttled or status >= 500 or code in (1, 2)
        token_invalid = code == 190 or (code == 102)
        if code == 100 and subcode == 33:
            reason = f"the comment no longer exists or cannot be answered ({message})"
        elif code == 100 and "appsecret_proof" in message:
            # the app requires the proof and ours is missing or made with another secret
            reason = f"Facebook refused the appsecret_proof: check FB_APP_SECRET ({message})"
        elif token_invalid:
            reason = f"the page token is no longer valid: reconnect the page ({message})"
        elif throttled:
            reason = f"Facebook is rate limiting the page ({message})"
        else:
            reason = message
        if code is not None:
            reason += f" [code {code}" + (f"/{subcode}" if subcode else "") + "]"
        if throttled and retry_after is None:
            retry_after = 60.0
        super().__init__(
            reason, retryable=retryable, retry_after=retry_after, token_invalid=token_invalid
        )


def _usage_wait(headers: Any) -> float | None:
    """Minutes until the page may call again, from X-Business-Use-Case-Usage, in seconds."""
    raw = headers.get("X-Business-Use-Case-Usage")
    if not raw:
        return None
    try:
        usage = json.loads(raw)
    except ValueError:
        return None
    waits = [
        float(item.get("estimated_time_to_regain_access") or 0) * 60
        for items in usage.values()
        if isinstance(items, list)
        for item in items
        if isinstance(item, dict)
    ]
    wait = max(waits, default=0.0)
    return wait or None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class UserToken:
    """What Facebook Login's exchanges give: a user token and its life in seconds (None:
    Facebook named none)."""

    access_token: str
    expires_in: int | None


@dataclass(frozen=True)
class TokenInfo:
    """``GET /debug_token``'s ``data``. A time of 0 there means "never"; here None."""

    is_valid: bool
    expires_at: datetime | None = None
    data_access_expires_at: datetime | None = None
    error_code: int | None = None
    error_subcode: int | None = None
    error_message: str | None = None
    scopes: tuple[str, ...] = ()


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return datetime.fromtimestamp(value, UTC)


def token_info(body: Any) -> TokenInfo:
    """Parse a debug_token answer; a shape it does not know reads as "not valid"."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return TokenInfo(False, error_message="Facebook's answer about the token had no data")
    raw_error = data.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code, subcode = error.get("code"), error.get("subcode")
    scopes = data.get("scopes")
    return TokenInfo(
        is_valid=data.get("is_valid") is True,
        expires_at=_epoch(data.get("expires_at")),
        data_access_expires_at=_epoch(data.get("data_access_expires_at")),
        error_code=code if isinstance(code, int) else None,
        error_subcode=subcode if isinstance(subcode, int) else None,
        error_message=str(error["message"]) if error.get("message") else None,
        scopes=tuple(str(x) for x in scopes) if isinstance(scopes, list) else (),
    )


def appsecret_proof(token: str, app_secret: str) -> str:
    """What Graph checks when the app requires it: HMAC-SHA256 of the token, keyed with the
    app secret, in hex."""
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def _same_text(a: Any, b: str) -> bool:
    # Facebook trims what it stores; compare the way it will show it.
    return isinstance(a, str) and a.strip() == b.strip()


def _by_page_with_text(items: Any, page_id: str, text: str) -> str | None:
    """The id of the first item (a comment or a message) the page wrote with this text."""
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        sender = item.get("from")
        if (
            isinstance(sender, dict)
            and str(sender.get("id")) == page_id
            and _same_text(item.get("message"), text)
        ):
            return str(item["id"])
    return None


class GraphClient:
    def __init__(
        self,
        base_url: str,
        version: str,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 30,
        app_secret: str | None = None,
    ) -> None:
        self._base = f"{base_url.rstrip('/')}/{version}"
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._app_secret = app_secret

    async def _call(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> Any:
        """``token`` None: a call that authenticates by its parameters (the OAuth
        exchanges), so no Authorization header and no proof."""
        query = dict(params or {})
        if self._app_secret and token is not None:
            query["appsecret_proof"] = appsecret_proof(token, self._app_secret)
        url = f"{self._base}/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        try:
            async with self._session.request(
                method,
                url,
                params=query,
                data=data,
                json=json_body,
                headers=headers,
                timeout=self._timeout,
            ) as resp:
                text = await resp.text()
                status = resp.status
                wait = _usage_wait(resp.headers)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DeliveryError(
                f"Facebook could not be reached ({type(e).__name__})", retryable=True
            ) from None
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = None
        if status >= 400 or (isinstance(body, dict) and "error" in body):
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict):
                raise GraphError(
                    str(err.get("message") or f"HTTP {status}"),
                    status=status,
                    code=err.get("code") if isinstance(err.get("code"), int) else None,
                    subcode=(
                        err.get("error_subcode")
                        if isinstance(err.get("error_subcode"), int)
                        else None
                    ),
                    retry_after=wait,
                )
            raise GraphError(f"HTTP {status} from Facebook", status=status, retry_after=wait)
        if body is None:
            raise DeliveryError("Facebook answered with something that is not JSON", retryable=True)
        return body

    async def me(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "me", token, params={"fields": "id,name"})
        return result

    async def accounts(self, user_token: str) -> list[PageAccount]:
        """Pages the token can act for, following ``paging.next`` cursors."""
        pages: list[PageAccount] = []
        params = {"fields": "id,name,access_token", "limit": "100"}
        for _ in range(50):
            body = await self._call("GET", "me/accounts", user_token, params=params)
            for item in body.get("data") or []:
                if isinstance(item, dict) and item.get("id") and item.get("access_token"):
                    pages.append(
                        PageAccount(
                            str(item["id"]), str(item.get("name", "")), item["access_token"]
                        )
                    )
            after = ((body.get("paging") or {}).get("cursors") or {}).get("after")
            if not (body.get("paging") or {}).get("next") or not after:
                break
            params = {**params, "after": str(after)}
        return pages

    async def subscribe_app(self, page_id: str, page_token: str, fields: list[str]) -> None:
        await self._call(
            "POST",
            f"{page_id}/subscribed_apps",
            page_token,
            data={"subscribed_fields": ",".join(fields)},
        )

    async def subscribed_fields(self, page_id: str, page_token: str) -> list[str]:
        body = await self._call("GET", f"{page_id}/subscribed_apps", page_token)
        fields: list[str] = []
        for app in body.get("data") or []:
            fields.extend(app.get("subscribed_fields") or [])
        return fields

    async def post(self, post_id: str, page_token: str) -> PostInfo:
        body = await self._call(
            "GET",
            post_id,
            page_token,
            params={"fields": "id,message,created_time,permalink_url"},
        )
        created = _parse_time(body.get("created_time"))
        return PostInfo(
            id=post_id,
            text=str(body.get("message") or ""),
            url=body.get("permalink_url"),
            created_time=created,
        )

    async def comments(
        self, page_id: str, post_id: str, page_token: str, since: datetime | None
    ) -> list[CommentEvent]:
        """The post's comments (replies included), oldest first, since a time: for catching
        up on what webhooks missed."""
        params = {
            "filter": "stream",
            "order": "chronological",
            "fields": "id,from,message,created_time,parent{id}",
            "limit": "100",
        }
        if since is not None:
            params["since"] = str(int(since.timestamp()))
        out: list[CommentEvent] = []
        for _ in range(100):
            body = await self._call("GET", f"{post_id}/comments", page_token, params=params)
            for item in body.get("data") or []:
                if not isinstance(item, dict) or not item.get("id"):
                    continue
                raw_from, raw_parent = item.get("from"), item.get("parent")
                sender: dict[str, Any] = raw_from if isinstance(raw_from, dict) else {}
                parent: dict[str, Any] = raw_parent if isinstance(raw_parent, dict) else {}
                out.append(
                    CommentEvent(
                        page_id=page_id,
                        post_id=post_id,
                        comment_id=str(item["id"]),
                        parent_id=str(parent.get("id") or post_id),
                        verb="add",
                        author=FbUser(str(sender.get("id", "")), sender.get("name")),
                        text=str(item.get("message") or ""),
                        created_time=_parse_time(item.get("created_time")) or datetime.now(UTC),
                    )
                )
            after = ((body.get("paging") or {}).get("cursors") or {}).get("after")
            if not (body.get("paging") or {}).get("next") or not after:
                break
            params = {**params, "after": str(after)}
        return out

    async def profile(self, user_id: str, page_token: str) -> tuple[str | None, str | None]:
        """Name and picture URL of a person, when Facebook lets the page see them."""
        body = await self._call("GET", user_id, page_token, params={"fields": "name,picture"})
        picture = ((body.get("picture") or {}).get("data") or {}).get("url")
        return body.get("name"), picture

    async def reply_to_comment(
        self, comment_id: str, text: str, page_token: str, *, attachment_url: str | None = None
    ) -> str:
        """``attachment_url``: a picture Facebook fetches and shows with the comment."""
        data = {"message": text}
        if attachment_url is not None:
            data["attachment_url"] = attachment_url
        body = await self._call("POST", f"{comment_id}/comments", page_token, data=data)
        return str(body["id"])

    async def hide_comment(
        self, comment_id: str, hidden: bool, page_token: str, *, instagram: bool = False
    ) -> None:
        """``POST /{comment-id}`` with ``is_hidden`` (Facebook) or ``hide`` (Instagram)."""
        field = "hide" if instagram else "is_hidden"
        value = "true" if hidden else "false"
        await self._call("POST", comment_id, page_token, data={field: value})

    async def like_comment(self, comment_id: str, page_token: str) -> None:
        """The Page likes the comment: ``POST /{comment-id}/likes``."""
        await self._call("POST", f"{comment_id}/likes", page_token)

    async def delete_comment(self, comment_id: str, page_token: str) -> None:
        await self._call("DELETE", comment_id, page_token)

    async def instagram_account(self, page_id: str, page_token: str) -> str | None:
        body = await self._call(
            "GET", page_id, page_token, params={"fields": "instagram_business_account"}
        )
        account = body.get("instagram_business_account") if isinstance(body, dict) else None
        return str(account["id"]) if isinstance(account, dict) and account.get("id") else None

    async def reply_to_ig_comment(self, comment_id: str, text: str, page_token: str) -> str:
        body = await self._call("POST", f"{comment_id}/replies", page_token, data={"message": text})
        return str(body["id"])

    async def send_message(
        self,
        psid: str,
        text: str,
        page_token: str,
        *,
        messaging_type: str = "RESPONSE",
        tag: str | None = None,
        metadata: str | None = None,
        attachment: tuple[str, str] | None = None,
    ) -> str:
        """The Send API. ``tag`` goes with ``messaging_type`` MESSAGE_TAG (HUMAN_AGENT
        after the 24-hour window); ``metadata`` comes back in the echo, so that our own
        sends are known without comparing text; ``attachment`` is (type, url): Facebook
        fetches the file from the URL."""
        message: dict[str, Any] = {}
        if attachment is not None:
            kind, url = attachment
            message["attachment"] = {"type": kind, "payload": {"url": url, "is_reusable": False}}
        else:
            message["text"] = text
        if metadata is not None:
            message["metadata"] = metadata
        payload: dict[str, Any] = {
            "recipient": {"id": psid},
            "messaging_type": messaging_type,
            "message": message,
        }
        if tag is not None:
            payload["tag"] = tag
        body = await self._call("POST", "me/messages", page_token, json_body=payload)
        return str(body.get("message_id", ""))

    async def private_reply(
        self,
        page_id: str,
        comment_id: str,
        text: str,
        page_token: str,
        *,
        metadata: str | None = None,
    ) -> tuple[str, str]:
        """A private reply: ``POST /{page-id}/messages`` to ``recipient.comment_id``.
        Facebook allows one per comment, within 7 days of it. Returns (the person's
        page-scoped id, the message id): their answer arrives from that id."""
        message: dict[str, Any] = {"text": text}
        if metadata is not None:
            message["metadata"] = metadata
        body = await self._call(
            "POST",
            f"{page_id}/messages",
            page_token,
            json_body={"recipient": {"comment_id": comment_id}, "message": message},
        )
        return str(body.get("recipient_id", "")), str(body.get("message_id", ""))

    # --- looking before sending again ----------------------------------------------------
    # After a timeout or a 5xx Facebook may well have stored the answer. These find it, so
    # that a retry does not post it twice.

    async def find_comment_reply(
        self, comment_id: str, page_id: str, text: str, page_token: str
    ) -> str | None:
        """The id of the page's reply with this text under the comment, if Facebook has it.

        One page of 100, newest first, is enough: the reply looked for was sent moments ago
        (one retry's wait), so it is among the newest replies unless a hundred others came
        under the same comment in between."""
        body = await self._call(
            "GET",
            f"{comment_id}/comments",
            page_token,
            params={
                "fields": "id,from,message,created_time",
                "filter": "stream",
                "order": "reverse_chronological",
                "limit": "100",
            },
        )
        return _by_page_with_text(body.get("data"), page_id, text)

    async def find_sent_message(
        self, page_id: str, psid: str, text: str, page_token: str
    ) -> str | None:
        """The id of a Messenger message with this text from the page to the person, if
        Facebook has it. The conversation's newest 25 messages are read (newest first);
        the one looked for was sent moments ago."""
        body = await self._call(
            "GET",
            f"{page_id}/conversations",
            page_token,
            params={
                "platform": "messenger",
                "user_id": psid,
                "fields": "messages.limit(25){id,message,from}",
            },
        )
        for conversation in body.get("data") or []:
            if not isinstance(conversation, dict):
                continue
            messages = conversation.get("messages")
            found = _by_page_with_text(
                messages.get("data") if isinstance(messages, dict) else None, page_id, text
            )
            if found is not None:
                return found
        return None

    async def sent_attachments(
        self, page_id: str, psid: str, page_token: str, *, since: datetime
    ) -> list[str]:
        """The ids of the page's Messenger messages to the person that are a picture or
        file alone (attachments, no text), sent at or after ``since``, newest first: asked
        after an unclear send of a file, before it is sent again. The Conversations API
        shows no ``metadata``, so the caller tells ours from others by the ids it knows."""
        body = await self._call(
            "GET",
            f"{page_id}/conversations",
            page_token,
            params={
                "platform": "messenger",
                "user_id": psid,
                "fields": "messages.limit(25){id,message,from,created_time,attachments}",
            },
        )
        found: list[str] = []
        for conversation in body.get("data") or []:
            messages = conversation.get("messages") if isinstance(conversation, dict) else None
            items = messages.get("data") if isinstance(messages, dict) else None
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict) or not item.get("id"):
                    continue
                sender = item.get("from")
                at = _parse_time(item.get("created_time"))
                attachments = item.get("attachments")
                if (
                    isinstance(sender, dict)
                    and str(sender.get("id")) == page_id
                    and not str(item.get("message") or "").strip()
                    and isinstance(attachments, dict)
                    and attachments.get("data")
                    and at is not None
                    and at >= since
                ):
                    found.append(str(item["id"]))
        return found

    # --- Facebook Login and token health --------------------------------------------------
    # The two exchanges authenticate with client_id and client_secret as Facebook documents
    # them (query parameters of GET /oauth/access_token), not with a token.

    def _secret(self) -> str:
        if not self._app_secret:
            raise DeliveryError("FB_APP_SECRET is not set", retryable=False)
        return self._app_secret

    async def exchange_code(self, app_id: str, redirect_uri: str, code: str) -> UserToken:
        """The Login dialog's ``code`` for a user token. ``redirect_uri`` must be exactly the
        one the dialog was opened with, or Facebook refuses the code."""
        params = {
            "client_id": app_id,
            "redirect_uri": redirect_uri,
            "client_secret": self._secret(),
            "code": code,
        }
        return _user_token(await self._call("GET", "oauth/access_token", None, params=params))

    async def long_lived_token(self, app_id: str, user_token: str) -> UserToken:
        """A short-lived user token (hours) for a long-lived one (about 60 days). Page tokens
        read with a long-lived user token do not expire by date."""
        params = {
            "grant_type": "fb_exchange_token",
            "client_id": app_id,
            "client_secret": self._secret(),
            "fb_exchange_token": user_token,
        }
        return _user_token(await self._call("GET", "oauth/access_token", None, params=params))

    async def debug_token(self, app_id: str, input_token: str) -> TokenInfo:
        """What Facebook says of a token: valid, until when, and if not, why. Asked with the
        app token ``{app-id}|{app-secret}``; its appsecret_proof is made from that app token
        like any other, so the call passes with "Require App Secret" on."""
        app_token = f"{app_id}|{self._secret()}"
        body = await self._call(
            "GET", "debug_token", app_token, params={"input_token": input_token}
        )
        return token_info(body)


def _user_token(body: Any) -> UserToken:
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise DeliveryError("Facebook's answer held no access token", retryable=False)
    expires = body.get("expires_in")
    return UserToken(token, int(expires) if isinstance(expires, int | float) else None)
