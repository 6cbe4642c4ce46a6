"""A local Slack Web API for the real ``AsyncWebClient`` (``base_url=<url>/api/``).

With ``enforce_limits`` it answers ``ratelimited`` with a ``Retry-After`` header when more
than ``per_channel_per_sec`` messages go into one channel in a second, as Slack does.

Messages are checked as Slack checks them: Block Kit limits (``invalid_blocks`` with the
reasons in ``errors``), the top-level text at most 40,000 characters (``msg_too_long``).
``delete_message`` does what a person deleting a message does.

Files (``add_file``) are served as Slack serves them: ``files.info``, and their bytes at
``url_private``/``url_private_download`` to the bot token alone; a request without it gets
Slack's sign-in page (HTML, status 200), as a browser would.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict, deque
from typing import Any

from aiohttp import WSMsgType, web

from bot.emulators.base import Call, FakeServer, peer_port, read_params
from bot.emulators.slack_blocks import TEXT_MAX, block_errors
from bot.platforms.text import utf16_len

AUTH_TEST = {
    "ok": True,
    "url": "https://subarachnoid.slack.com/",
    "team": "Subarachnoid Workspace",
    "user": "bot",
    "team_id": "T0G9PQBBK",
    "user_id": "W23456789",
    "bot_id": "BZYBOTHED",
}

SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


class FakeSlack(FakeServer):
    def __init__(
        self,
        token: str = "xoxb-test",
        *,
        enforce_limits: bool = False,
        per_channel_per_sec: int = 1,
    ) -> None:
        super().__init__()
        self.token = token
        self.admins: set[str] = set()
        self.users: dict[str, dict[str, Any]] = {}
        # channel -> ts -> message
        self.channels: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.unreachable: set[str] = set()  # image URLs Slack cannot download
        self.reactions: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.ephemeral: list[dict[str, Any]] = []
        self.deleted: set[tuple[str, str]] = set()  # (channel, ts) a person deleted
        self.views: list[dict[str, Any]] = []
        self.joined: set[str] = set()
        self.enforce_limits = enforce_limits
        self.per_channel_per_sec = per_channel_per_sec
        self.throttled = 0
        self._sent: dict[str, deque[float]] = defaultdict(deque)
        self._seq = itertools.count(1)
        self._events = itertools.count(1)
        self.app_token = "xapp-1-test"
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: list[str] = []
        # file id -> files.info's file; its bytes
        self.files: dict[str, dict[str, Any]] = {}
        self.file_bodies: dict[str, bytes] = {}
        self.app.router.add_route("*", "/api/{method}", self._handle)
        self.app.router.add_get("/socket", self._socket)
        self.app.router.add_get("/files-pri/{path:.+}", self._download)

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq):06d}"

    def add_user(self, user_id: str, name: str, *, admin: bool = False) -> None:
        self.users[user_id] = {"id": user_id, "name": name.lower(), "real_name": name}
        if admin:
            self.admins.add(user_id)

    # --- what a person does in Slack, as Slack would deliver it --------------------------

    def add_file(
        self, content: bytes, name: str, mimetype: str, *, user: str = "", **fields: Any
    ) -> dict[str, Any]:
        """A file a person uploaded, as files.info and a file_share event show it (the
        shape of Slack's own); ``fields`` override (``mode``, ``is_external``, ``size``)."""
        file_id = f"F{next(self._seq):08d}"
        base = f"{self.url}/files-pri/{AUTH_TEST['team_id']}-{file_id}"
        now = int(time.time())
        file: dict[str, Any] = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "user": user,
            "editable": False,
            "size": len(content),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "url_private": f"{base}/{name}",
            "url_private_download": f"{base}/download/{name}",
            "permalink": f"https://subarachnoid.slack.com/files/{user}/{file_id}/{name}",
        }
        file.update(fields)
        self.files[file_id] = file
        self.file_bodies[file_id] = content
        return file

    def delete_file(self, file_id: str) -> None:
        """A person deletes a file: Slack keeps a tombstone, files.info says file_deleted."""
        self.files[file_id] = {"id": file_id, "mode": "tombstone"}
        self.file_bodies.pop(file_id, None)

    def message_event(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None
    ) -> dict[str, Any]:
        ts = self.new_ts()
        event: dict[str, Any] = {
            "user": user,
            "type": "message",
            "ts": ts,
            "text": text,
            "team": "T0G9PQBBK",
            "channel": channel,
            "event_ts": ts,
            "channel_type": "channel",
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = AUTH_TEST["user_id"]
        self.channels[channel][ts] = {**event}
        return self.envelope(event)

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        return {
            "token": "verification_token",
            "team_id": "T0G9PQBBK",
            "api_app_id": "A111",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{next(self._events):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": "T0G9PQBBK",
                    "user_id": AUTH_TEST["user_id"],
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
        }

    def delete_message(self, channel: str, ts: str) -> None:
        """A person deletes a message (a task's root: its thread is gone for the bot)."""
        self.channels[channel].pop(ts, None)
        self.deleted.add((channel, ts))

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The bot's replies in a thread, oldest first (the root excluded)."""
        msgs = [
            m
            for ts, m in self.channels[channel].items()
            if m.get("thread_ts") == thread_ts and ts != thread_ts and m.get("bot_id")
        ]
        return sorted(msgs, key=lambda m: m["ts"])

    def roots(self, channel: str) -> list[dict[str, Any]]:
        return sorted(
            (
                m
                for m in self.channels[channel].values()
                if m.get("bot_id") and "thread_ts" not in m
            ),
            key=lambda m: m["ts"],
        )

    # --- the API ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await read_params(request)
        self.calls.append(Call(method, params, dict(request.headers), peer_port(request)))
        allowed = {f"Bearer {self.token}", f"Bearer {self.app_token}"}
        if request.headers.get("Authorization") not in allowed:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        scripted = await self.scripted(request, method)
        if scripted is not None:
            return scripted
        if method in ("chat.postMessage", "chat.postEphemeral") and self.enforce_limits:
            channel = str(params.get("channel"))
            sent = self._sent[channel]
            now = time.monotonic()
            while sent and sent[0] <= now - 1:
                sent.popleft()
            if len(sent) >= self.per_channel_per_sec:
                self.throttled += 1
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
                )
            sent.append(now)
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": True})
        result = await handler(params)
        return web.json_response(result)

    # --- Socket Mode --------------------------------------------------------------------

    async def m_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket"}

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json(
            {"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A111"}}
        )
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                if "envelope_id" in data:
                    self.acks.append(str(data["envelope_id"]))
        self.sockets.remove(ws)
        return ws

    async def push(self, payload: dict[str, Any], kind: str = "events_api") -> str:
        """Send an envelope over Socket Mode, as Slack does instead of an HTTP request."""
        envelope_id = f"env-{next(self._seq)}"
        for ws in self.sockets:
            await ws.send_json(
                {
                    "envelope_id": envelope_id,
                    "type": kind,
                    "payload": payload,
                    "accepts_response_payload": kind != "events_api",
                }
            )
        return envelope_id

    async def m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return AUTH_TEST

    # --- files --------------------------------------------------------------------------

    async def m_files_info(self, p: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(str(p.get("file")))
        if file is None:
            return {"ok": False, "error": "file_not_found"}
        if file.get("mode") == "tombstone":
            return {"ok": False, "error": "file_deleted"}
        return {"ok": True, "file": file, "comments": [], "response_metadata": {"next_cursor": ""}}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.calls.append(
            Call("files.download", {"path": path}, dict(request.headers), peer_port(request))
        )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            # what Slack answers a request without the token: its sign-in page
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        url = f"{self.url}/files-pri/{path}"
        for file_id, file in self.files.items():
            if url in (file.get("url_private"), file.get("url_private_download")):
                body = self.file_bodies.get(file_id)
                if body is None:
                    break
                return web.Response(
                    body=body,
                    content_type=str(file.get("mimetype") or "application/octet-stream"),
                    headers={"Content-Disposition": f'attachment; filename="{file["name"]}"'},
                )
        return web.Response(status=404, text="not found")

    def _blocks(self, p: dict[str, Any]) -> list[Any]:
        blocks = p.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else list(blocks)

    def _refusal(self, p: dict[str, Any]) -> dict[str, Any] | None:
        """Slack's answer to a message it does not take, else None."""
        if p.get("blocks") is not None:
            errors = block_errors(self._blocks(p))
            errors += [
                f"downloading image failed [json-pointer:/blocks/{i}/image_url]"
                for i, b in enumerate(self._blocks(p))
                if isinstance(b, dict) and b.get("image_url") in self.unreachable
            ]
            if errors:
                return {
                    "ok": False,
                    "error": "invalid_blocks",
                    "errors": errors,
                    "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]},
                }
        elif not p.get("text"):
            return {"ok": False, "error": "no_text"}
        if utf16_len(str(p.get("text") or "")) > TEXT_MAX:
            return {"ok": False, "error": "msg_too_long"}
        thread = p.get("thread_ts")
        if thread and (str(p["channel"]), str(thread)) in self.deleted:
            return {"ok": False, "error": "thread_not_found"}
        return None

    async def m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refusal(p)
        if refusal is not None:
            return refusal
        channel = str(p["channel"])
        ts = self.new_ts()
        msg: dict[str, Any] = {
            "type": "message",
            "ts": ts,
            "text": p.get("text", ""),
            "blocks": self._blocks(p),
            "bot_id": AUTH_TEST["bot_id"],
            "user": AUTH_TEST["user_id"],
        }
        if p.get("thread_ts"):
            msg["thread_ts"] = str(p["thread_ts"])
        self.channels[channel][ts] = msg
        return {"ok": True, "channel": channel, "ts": ts, "message": msg}

    async def m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(p["channel"]), str(p["ts"])
        msg = self.channels[channel].get(ts)
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        refusal = self._refusal({**p, "thread_ts": None})
        if refusal is not None:
            return refusal
        msg.update(text=p.get("text", msg.get("text")), blocks=self._blocks(p), edited=True)
        return {"ok": True, "channel": channel, "ts": ts, "text": msg["text"]}

    async def m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refusal(p)
        if refusal is not None:
            return refusal
        self.ephemeral.append(p)
        return {"ok": True, "message_ts": self.new_ts()}

    async def m_reactions_add(self, p: dict[str, Any]) -> dict[str, Any]:
        key = (str(p["channel"]), str(p["timestamp"]))
        if key in self.deleted:
            return {"ok": False, "error": "message_not_found"}
        if p["name"] in self.reactions[key]:
            return {"ok": False, "error": "already_reacted"}
        self.reactions[key].append(str(p["name"]))
        return {"ok": True}

    async def m_users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        uid = str(p["user"])
        base = self.users.get(uid)
        if base is None:
            return {"ok": False, "error": "user_not_found"}
        user = {
            **base,
            "is_admin": uid in self.admins,
            "is_owner": False,
            "is_bot": False,
            "profile": {"real_name": base["real_name"], "display_name": base["name"]},
        }
        return {"ok": True, "user": user}

    async def m_conversations_join(self, p: dict[str, Any]) -> dict[str, Any]:
        self.joined.add(str(p["channel"]))
        return {"ok": True, "channel": {"id": p["channel"]}}

    async def m_views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        view = p["view"] if isinstance(p["view"], dict) else json.loads(p["view"])
        self.views.append({"trigger_id": p.get("trigger_id"), "view": view})
        return {"ok": True, "view": {"id": f"V{len(self.views)}", **view}}

    async def m_chat_getPermalink(self, p: dict[str, Any]) -> dict[str, Any]:
        ts = str(p["message_ts"]).replace(".", "")
        return {
            "ok": True,
            "channel": p["channel"],
            "permalink": f"https://subarachnoid.slack.com/archives/{p['channel']}/p{ts}",
        }
