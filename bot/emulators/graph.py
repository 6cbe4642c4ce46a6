"""A local Graph API: pages, posts, profiles, comments and Messenger sends, with real tokens
checked and the error bodies Facebook returns."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.emulators.base import Call, FakeServer, peer_port, read_params

INVALID_TOKEN = {
    "error": {
        "message": "Invalid OAuth access token.",
        "type": "OAuthException",
        "code": 190,
        "fbtrace_id": "fake",
    }
}


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


@dataclass
class FakePage:
    id: str
    name: str
    token: str
    subscribed_fields: list[str] = field(default_factory=list)


@dataclass
class PostedComment:
    id: str
    parent_id: str
    message: str
    token: str


class FakeGraph(FakeServer):
    def __init__(self, user_token: str = "user-token", version: str = "v26.0") -> None:
        super().__init__()
        self.user_token = user_token
        self.version = version
        self.pages: dict[str, FakePage] = {}
        self.posts: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.comments: list[PostedComment] = []
        self.messages: list[dict[str, Any]] = []
        self.post_comments: dict[str, list[dict[str, Any]]] = {}
        self.deleted: set[str] = set()  # comment ids answering which gives 100/33
        self._ids = itertools.count(900_000_000_000_001)
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

    def _page_for_token(self, token: str) -> FakePage | None:
        return next((p for p in self.pages.values() if p.token == token), None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"].strip("/")
        params = await read_params(request)
        method = self._name(request.method, path)
        self.calls.append(
            Call(method, {**params, "path": path}, dict(request.headers), peer_port(request))
        )
        if request.match_info["version"] != self.version:
            return web.json_response(
                {"error": {"message": "Unknown version", "type": "OAuthException", "code": 2500}},
                status=400,
            )
        scripted = await self.scripted(request, method)
        if scripted is not None:
            return scripted
        token = str(params.get("access_token", ""))
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
        if method == "subscribed_apps":
            target = self.pages.get(path.split("/")[0])
            if target is None or target.token != token:
                return web.json_response(missing_object(path.split("/")[0]), status=400)
            if request.method == "POST":
                target.subscribed_fields = str(params.get("subscribed_fields", "")).split(",")
                return web.json_response({"success": True})
            return web.json_response(
                {"data": [{"name": "Pagedesk", "subscribed_fields": target.subscribed_fields}]}
            )
        if method == "comments":
            parent = path.split("/")[0]
            if parent in self.deleted:
                return web.json_response(missing_object(parent), status=400)
            comment_id = f"{parent.split('_')[0]}_{next(self._ids)}"
            self.comments.append(
                PostedComment(comment_id, parent, str(params.get("message", "")), token)
            )
            return web.json_response({"id": comment_id})
        if method == "messages":
            mid = f"m_{next(self._ids)}"
            self.messages.append({**params, "message_id": mid})
            return web.json_response(
                {"recipient_id": params.get("recipient", {}).get("id"), "message_id": mid}
            )
        if method == "post_comments":
            post_id = path.split("/")[0]
            items = self.post_comments.get(post_id, [])
            since = int(params.get("since", 0) or 0)
            from datetime import datetime

            def ts(item: dict[str, Any]) -> float:
                return datetime.strptime(item["created_time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()

            picked = [i for i in items if ts(i) >= since]
            start = int(params.get("after", 0) or 0)
            page_items = picked[start : start + int(params.get("limit", 100))]
            nxt = start + len(page_items)
            paging: dict[str, Any] = {"cursors": {"before": str(start), "after": str(nxt)}}
            if nxt < len(picked):
                paging["next"] = f"{self.url}/{self.version}/{post_id}/comments?after={nxt}"
            return web.json_response({"data": page_items, "paging": paging})
        if method == "object":
            if path in self.posts:
                return web.json_response(self.posts[path])
            if path in self.profiles:
                return web.json_response(self.profiles[path])
            return web.json_response(missing_object(path), status=400)
        return web.json_response(
            {"error": {"message": f"unknown path {path}", "code": 100}}, status=400
        )

    @staticmethod
    def _name(http_method: str, path: str) -> str:
        if path == "me/accounts":
            return "accounts"
        if path == "me/messages":
            return "messages"
        if path == "me":
            return "me"
        if path.endswith("/subscribed_apps"):
            return "subscribed_apps"
        if path.endswith("/comments") and http_method == "POST":
            return "comments"
        if path.endswith("/comments"):
            return "post_comments"
        return "object"
