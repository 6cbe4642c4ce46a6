"""A local Graph API: pages, posts, profiles, comments and Messenger sends, with real tokens
checked and the error bodies Facebook returns.

Tokens are accepted the two ways Graph accepts them (``Authorization: Bearer`` or the
``access_token`` parameter; each call records which), and a fake given the app secret
refuses calls without the right ``appsecret_proof``, as Graph does for an app with
"Require App Secret" on. Comment replies and Messenger conversations can be read back, so
a client can look for what it sent before sending it again.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bot.emulators.base import Call, FakeServer, peer_port, read_params
from bot.emulators.graph_login import FakeLogin

INVALID_TOKEN = {
    "error": {
        "message": "Invalid OAuth access token.",
        "type": "OAuthException",
        "code": 190,
        "fbtrace_id": "fake",
    }
}
NO_TOKEN = {
    "error": {
        "message": "An access token is required to request this resource.",
        "type": "OAuthException",
        "code": 104,
        "fbtrace_id": "fake",
    }
}
PROOF_REQUIRED = {
    "error": {
        "message": "API calls from the server require an appsecret_proof argument",
        "type": "GraphMethodException",
        "code": 100,
        "fbtrace_id": "fake",
    }
}
PROOF_INVALID = {
    "error": {
        "message": "Invalid appsecret_proof provided in the API argument",
        "type": "GraphMethodException",
        "code": 100,
        "fbtrace_id": "fake",
    }
}


def _send_error(code: int, subcode: int | None, message: str) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": {**error, "fbtrace_id": "fake"}}


# Messenger's Send API outside the 24-hour window (or 7 days with HUMAN_AGENT)
OUTSIDE_WINDOW = _send_error(10, 2018278, "(#10) This message is sent outside of allowed window.")
# a second private reply to the same comment
ALREADY_REPLIED = _send_error(10900, None, "(#10900) Activity already replied to")
_MESSAGES_FIELD = re.compile(r"messages(?:\.limit\((\d+)\))?(?:\{([^}]*)\})?")


def missing_object(object_id: str) -> dict[str, Any]:
    return {
        "error": {
            "message": (
                f"Unsupported post request. Object with ID '{object_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation."
            ),
            "type": "GraphMethodException",
            "code": 100,
            "error_subcode": 33,
            "fbtrace_id": "fake",
        }
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _ts(created_time: str) -> float:
    return datetime.strptime(created_time, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def _stored_attachment(mid: str, attachment: dict[str, Any]) -> dict[str, Any]:
    """A sent attachment as the Conversations API lists it: Facebook's own copy of the
    file (not the URL it was fetched from), under ``image_data``, ``video_data`` or
    ``file_url`` by its type."""
    kind = str(attachment.get("type", "file"))
    copy = f"https://cdn.fbsbx.example/{mid}"
    shown: dict[str, Any] = {"id": f"{mid}_att", "name": f"{kind}-{mid}"}
    if kind == "image":
        shown.update(mime_type="image/jpeg", image_data={"url": copy, "preview_url": copy})
    elif kind == "video":
        shown.update(mime_type="video/mp4", video_data={"url": copy, "preview_url": copy})
    else:
        shown.update(mime_type="application/octet-stream", file_url=copy)
    return shown


def _credentials(request: web.Request, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """The token and where it came: Graph takes ``Authorization: Bearer`` (or ``OAuth``)
    and the ``access_token`` parameter alike."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip(), "header"
    if params.get("access_token"):
        return str(params["access_token"]), "param"
    return None, None


@dataclass
class FakePage:
    id: str
    name: str
    token: str
    subscribed_fields: list[str] = field(default_factory=list)
    ig_account_id: str | None = None  # its connected Instagram business account


@dataclass
class PostedComment:
    id: str
    parent_id: str
    message: str
    token: str
    page_id: str = ""
    created_time: str = ""
    attachment_url: str = ""  # a picture posted with the comment


class FakeGraph(FakeServer):
    def __init__(
        self,
        user_token: str = "user-token",
        version: str = "v26.0",
        *,
        app_secret: str | None = None,
        app_id: str = "1234567890",
    ) -> None:
        super().__init__()
        self.user_token = user_token
        # Facebook Login (served here too: FB_LOGIN_URL can point at this fake)
        self.login = FakeLogin(self, app_id)
        self.version = version
        self.app_secret = app_secret  # set: every call must carry a right appsecret_proof
        self.pages: dict[str, FakePage] = {}
        self.posts: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.comments: list[PostedComment] = []
        self.messages: list[dict[str, Any]] = []
        self.post_comments: dict[str, list[dict[str, Any]]] = {}
        self.deleted: set[str] = set()  # comment ids answering which gives 100/33
        # (page id, psid) -> the conversation's messages, oldest first
        self.conversations: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._ids = itertools.count(900_000_000_000_001)
        # Messenger: when each person last wrote, comments answered privately, and the
        # page-scoped id a commenter has in Messenger
        self.last_from_person: dict[tuple[str, str], datetime] = {}
        self.private_replied: set[str] = set()
        self.psids: dict[str, str] = {}
        # moderation: hidden comments, comments the Page likes, comments whose can_hide
        # is false (the Page's own, or ones Facebook will not let it hide)
        self.hidden: set[str] = set()
        self.liked: set[str] = set()
        self.cannot_hide: set[str] = set()
        self.app.router.add_route("*", "/{version}/{path:.*}", self._handle)

    def add_page(self, page_id: str, name: str, token: str) -> FakePage:
        page = FakePage(page_id, name, token)
        self.pages[page_id] = page
        return page

    def add_post(
        self, post_id: str, message: str, created_time: str, url: str | None = None
    ) -> None:
        self.posts[post_id] = {
            "id": post_id,
            "message": message,
            "created_time": created_time,
            "permalink_url": url or f"https://www.facebook.com/{post_id.replace('_', '/posts/')}",
        }

    def add_comment(
        self,
        post_id: str,
        comment_id: str,
        author: tuple[str, str],
        message: str,
        created_time: str,
        parent_id: str | None = None,
    ) -> None:
        """A comment that exists on Facebook (whether or not a webhook told us)."""
        item: dict[str, Any] = {
            "id": comment_id,
            "from": {"id": author[0], "name": author[1]},
            "message": message,
            "created_time": created_time,
        }
        if parent_id:
            item["parent"] = {"id": parent_id}
        self.post_comments.setdefault(post_id, []).append(item)

    def add_profile(self, user_id: str, name: str, picture: str | None = None) -> None:
        self.profiles[user_id] = {"id": user_id, "name": name}
        if picture:
            self.profiles[user_id]["picture"] = {"data": {"url": picture}}

    def add_conversation_message(
        self, page_id: str, psid: str, text: str, *, from_page: bool = True
    ) -> str:
        """A Messenger message between the page and a person, as the Conversations API
        lists it (whether or not it went through our Send API). Returns its id."""
        mid = f"m_{next(self._ids)}"
        self._converse(page_id, psid, mid, text, from_page=from_page)
        return mid

    def replies(self, comment_id: str) -> list[dict[str, Any]]:
        """The comments under a comment, oldest first, as ``GET /{comment-id}/comments``
        lists them: those the test added and those posted through the fake."""
        items = [
            item
            for post_items in self.post_comments.values()
            for item in post_items
            if (item.get("parent") or {}).get("id") == comment_id
        ]
        for c in self.comments:
            if c.parent_id != comment_id:
                continue
            page = self.pages.get(c.page_id)
            items.append(
                {
                    "id": c.id,
                    "from": {"id": c.page_id, "name": page.name if page else ""},
                    "message": c.message,
                    "created_time": c.created_time,
                    "parent": {"id": comment_id},
                }
            )
        return sorted(items, key=lambda item: _ts(item["created_time"]))  # stable on ties

    def _converse(
        self,
        page_id: str,
        psid: str,
        mid: str,
        text: str,
        *,
        from_page: bool,
        attachment: dict[str, Any] | None = None,
    ) -> None:
        page = self.pages.get(page_id)
        sender = (
            {"id": page_id, "name": page.name if page else "", "email": f"{page_id}@facebook.com"}
            if from_page
            else {
                "id": psid,
                "name": str(self.profiles.get(psid, {}).get("name", "")),
                "email": f"{psid}@facebook.com",
            }
        )
        item: dict[str, Any] = {"id": mid, "message": text, "from": sender, "created_time": _now()}
        if attachment is not None:
            item["attachments"] = {"data": [_stored_attachment(mid, attachment)]}
        self.conversations.setdefault((page_id, psid), []).append(item)

    def _page_for_token(self, token: str) -> FakePage | None:
        return next((p for p in self.pages.values() if p.token == token), None)

    def _refusal(self, token: str | None, params: dict[str, Any]) -> dict[str, Any] | None:
        """What Graph says before it looks at the call: no token, or no right proof."""
        if token is None:
            return NO_TOKEN
        if self.app_secret is None:
            return None
        proof = params.get("appsecret_proof")
        if not proof:
            return PROOF_REQUIRED
        expected = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(str(proof), expected):
            return PROOF_INVALID
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"].strip("/")
        params = await read_params(request)
        method = self._name(request.method, path)
        token, via = _credentials(request, params)
        self.calls.append(
            Call(
                method,
                {**params, "path": path},
                dict(request.headers),
                peer_port(request),
                token=token,
                token_via=via,
            )
        )
        if request.match_info["version"] != self.version:
            return web.json_response(
                {"error": {"message": "Unknown version", "type": "OAuthException", "code": 2500}},
                status=400,
            )
        if method == "dialog":
            return self.login.dialog(params)
        if method == "oauth_access_token":
            return self.login.exchange(params)
        refusal = self._refusal(token, params)
        if refusal is not None:
            return web.json_response(refusal, status=400)
        assert token is not None

        async def model() -> web.StreamResponse:
            return await self._model(request, method, path, params, token)

        scripted = await self.scripted(request, method, model)
        if scripted is not None:
            return scripted
        return await model()

    async def _model(
        self, request: web.Request, method: str, path: str, params: dict[str, Any], token: str
    ) -> web.StreamResponse:
        if method == "debug_token":
            return self.login.debug(token, params)
        dead = self.login.dead(token)
        if dead is not None:
            return dead
        if method == "accounts":
            if token != self.user_token:
                return web.json_response(INVALID_TOKEN, status=400)
            data = [
                {"id": p.id, "name": p.name, "access_token": p.token} for p in self.pages.values()
            ]
            return web.json_response(
                {"data": data, "paging": {"cursors": {"before": "a", "after": "b"}}}
            )
        if method == "me":
            if token == self.user_token:
                return web.json_response({"id": "1000", "name": "Operator"})
            page = self._page_for_token(token)
            if page is None:
                return web.json_response(INVALID_TOKEN, status=400)
            return web.json_response({"id": page.id, "name": page.name})
        page = self._page_for_token(token)
        if page is None:
            return web.json_response(INVALID_TOKEN, status=400)
        if method in ("subscribed_apps", "conversations"):
            target = self.pages.get(path.split("/")[0])
            if target is None or target.token != token:
                return web.json_response(missing_object(path.split("/")[0]), status=400)
            if method == "conversations":
                return web.json_response(self._conversations(target, params))
            if request.method == "POST":
                target.subscribed_fields = str(params.get("subscribed_fields", "")).split(",")
                return web.json_response({"success": True})
            return web.json_response(
                {"data": [{"name": "Pagedesk", "subscribed_fields": target.subscribed_fields}]}
            )
        if method in ("comments", "replies"):
            parent = path.split("/")[0]
            if parent in self.deleted:
                return web.json_response(missing_object(parent), status=400)
            comment_id = f"{parent.split('_')[0]}_{next(self._ids)}"
            self.comments.append(
                PostedComment(
                    comment_id,
                    parent,
                    str(params.get("message", "")),
                    token,
                    page.id,
                    _now(),
                    str(params.get("attachment_url", "")),
                )
            )
            return web.json_response({"id": comment_id})
        if method == "messages":
            return self._send(page, params)
        if method in ("update_object", "likes", "delete_object"):
            return self._moderate(method, path.split("/")[0], params)
        if method == "post_comments":
            object_id = path.split("/")[0]
            if object_id in self.deleted:
                return web.json_response(missing_object(object_id), status=400)
            if object_id in self.post_comments or object_id in self.posts:
                items = self.post_comments.get(object_id, [])
            else:
                items = self.replies(object_id)
            since = int(params.get("since", 0) or 0)
            picked = [i for i in items if _ts(i["created_time"]) >= since]
            if params.get("order") == "reverse_chronological":
                picked.reverse()
            start = int(params.get("after", 0) or 0)
            page_items = picked[start : start + int(params.get("limit", 100))]
            nxt = start + len(page_items)
            paging: dict[str, Any] = {"cursors": {"before": str(start), "after": str(nxt)}}
            if nxt < len(picked):
                paging["next"] = f"{self.url}/{self.version}/{object_id}/comments?after={nxt}"
            return web.json_response({"data": page_items, "paging": paging})
        if method == "object":
            if path in self.pages and "instagram_business_account" in str(params.get("fields")):
                found = self.pages[path]
                body: dict[str, Any] = {"id": found.id}
                if found.ig_account_id:
                    body["instagram_business_account"] = {"id": found.ig_account_id}
                return web.json_response(body)
            if path in self.posts:
                return web.json_response(self.posts[path])
            if path in self.profiles:
                return web.json_response(self.profiles[path])
            return web.json_response(missing_object(path), status=400)
        return web.json_response(
            {"error": {"message": f"unknown path {path}", "code": 100}}, status=400
        )

    # --- moderation: hide, like, delete a comment ---------------------------------------

    def _moderate(self, method: str, comment_id: str, params: dict[str, Any]) -> web.Response:
        """Comments the fake was not told of exist (a webhook brought them); deleted ones
        answer 100/33, and one whose can_hide is false refuses to be hidden as Graph does."""
        if comment_id in self.deleted:
            return web.json_response(missing_object(comment_id), status=400)
        if method == "likes":
            self.liked.add(comment_id)
        elif method == "delete_object":
            self.deleted.add(comment_id)
            self.hidden.discard(comment_id)
        else:
            field = "hide" if "hide" in params else "is_hidden"
            if field not in params:
                return web.json_response(
                    _send_error(100, None, "(#100) No fields to update were given"), status=400
                )
            hide = str(params[field]).lower() == "true"
            if hide and comment_id in self.cannot_hide:
                return web.json_response(
                    _send_error(100, None, "(#100) This comment cannot be hidden"), status=400
                )
            (self.hidden.add if hide else self.hidden.discard)(comment_id)
        return web.json_response({"success": True})

    # --- Messenger: the Send API's windows and private replies -----------------------------

    def person_wrote(self, page_id: str, psid: str, at: datetime) -> None:
        """The person's last Messenger message to the page was at ``at``: the Send API
        measures its 24-hour and 7-day windows from it."""
        self.last_from_person[(page_id, psid)] = at

    def _send(self, page: FakePage, params: dict[str, Any]) -> web.StreamResponse:
        recipient = params.get("recipient") or {}
        message = params.get("message") or {}
        text = str(message.get("text", ""))
        if recipient.get("comment_id"):
            return self._private_reply(page, str(recipient["comment_id"]), params)
        psid = str(recipient.get("id", ""))
        last = self.last_from_person.get((page.id, psid))
        if last is not None:
            age = datetime.now(UTC) - last
            tagged = params.get("messaging_type") == "MESSAGE_TAG"
            if tagged and params.get("tag") != "HUMAN_AGENT":
                return web.json_response(_send_error(100, None, "Invalid tag"), status=400)
            window = timedelta(days=7) if tagged else timedelta(hours=24)
            if age > window:
                return web.json_response(OUTSIDE_WINDOW, status=400)
        mid = f"m_{next(self._ids)}"
        self.messages.append({**params, "message_id": mid})
        attachment = message.get("attachment")
        self._converse(
            page.id,
            psid,
            mid,
            text,
            from_page=True,
            attachment=attachment if isinstance(attachment, dict) else None,
        )
        return web.json_response({"recipient_id": psid, "message_id": mid})

    def _private_reply(
        self, page: FakePage, comment_id: str, params: dict[str, Any]
    ) -> web.StreamResponse:
        """One per comment, within 7 days of it; the answer names the person's PSID."""
        if comment_id in self.private_replied:
            return web.json_response(ALREADY_REPLIED, status=400)
        comment = next(
            (c for items in self.post_comments.values() for c in items if c["id"] == comment_id),
            None,
        )
        if (
            comment is not None
            and datetime.now(UTC).timestamp() - _ts(comment["created_time"])
            > timedelta(days=7).total_seconds()
        ):
            return web.json_response(OUTSIDE_WINDOW, status=400)
        author = str(((comment or {}).get("from") or {}).get("id", comment_id))
        psid = self.psids.setdefault(author, f"{next(self._ids)}")
        self.private_replied.add(comment_id)
        mid = f"m_{next(self._ids)}"
        self.messages.append({**params, "message_id": mid})
        text = str((params.get("message") or {}).get("text", ""))
        self._converse(page.id, psid, mid, text, from_page=True)
        return web.json_response({"recipient_id": psid, "message_id": mid})

    def _conversations(self, page: FakePage, params: dict[str, Any]) -> dict[str, Any]:
        """``GET /{page-id}/conversations``: one entry per person (``user_id`` picks one),
        with ``messages`` newest first when the fields ask for them."""
        wanted = _MESSAGES_FIELD.search(str(params.get("fields", "")))
        user_id = params.get("user_id")
        data: list[dict[str, Any]] = []
        for (page_id, psid), messages in self.conversations.items():
            if page_id != page.id or (user_id and psid != str(user_id)):
                continue
            entry: dict[str, Any] = {"id": f"t_{page_id}_{psid}"}
            if wanted is not None:
                limit = int(wanted.group(1) or 25)
                keys = {k.strip() for k in (wanted.group(2) or "id").split(",")} | {"id"}
                newest = list(reversed(messages))[:limit]
                entry["messages"] = {
                    "data": [{k: v for k, v in m.items() if k in keys} for m in newest]
                }
            data.append(entry)
        return {"data": data}

    @staticmethod
    def _name(http_method: str, path: str) -> str:
        if path in ("dialog/oauth", "oauth/access_token", "debug_token"):
            return {"dialog/oauth": "dialog", "oauth/access_token": "oauth_access_token"}.get(
                path, path
            )
        if path == "me/accounts":
            return "accounts"
        if path == "me/messages":
            return "messages"
        if path == "me":
            return "me"
        if path.endswith("/subscribed_apps"):
            return "subscribed_apps"
        if path.endswith("/conversations"):
            return "conversations"
        if path.endswith("/messages") and http_method == "POST":
            return "messages"  # POST /{page-id}/messages: the Send API, private replies too
        if path.endswith("/comments") and http_method == "POST":
            return "comments"
        if path.endswith("/comments"):
            return "post_comments"
        if path.endswith("/replies") and http_method == "POST":
            return "replies"  # an answer under an Instagram comment
        if path.endswith("/likes") and http_method == "POST":
            return "likes"
        if http_method == "DELETE" and "/" not in path:
            return "delete_object"
        if http_method == "POST" and "/" not in path:
            return "update_object"
        return "object"
