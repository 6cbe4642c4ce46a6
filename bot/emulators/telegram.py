"""A local Telegram Bot API: forum topics, messages, reactions, chat members, updates.

With ``enforce_limits`` it answers 429 with ``retry_after`` the way Telegram does when a
bot sends more than the group or global limits allow.

Texts are checked as Telegram checks them: HTML markup parsed (``parse_mode=HTML``) or
taken as it is, the visible text measured in UTF-16 units (4096 for a message, 1024 for
a caption), an empty text refused. A stored bot message keeps what the bot sent in
``text`` and what a person sees in ``visible`` (with ``entities``).

``delete_topic`` does what a person deleting a forum topic does.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.emulators.base import Call, FakeServer, read_params
from bot.emulators.telegram_markup import MarkupError, parse_html
from bot.platforms.text import utf16_len

BOT_USER = {"id": 7530215388, "is_bot": True, "first_name": "Pagedesk", "username": "pagedesk_bot"}
MESSAGE_MAX = 4096
CAPTION_MAX = 1024
TOPIC_NAME_MAX = 128
TEXT_METHODS = {"sendMessage": "text", "editMessageText": "text"}
CAPTION_METHODS = {
    name: "caption"
    for name in (
        "sendPhoto",
        "sendDocument",
        "sendVideo",
        "sendAnimation",
        "sendAudio",
        "sendVoice",
        "editMessageCaption",
    )
}


class BadRequest(LookupError):
    """Answered as Telegram's 400 "Bad Request: <reason>"."""


def visible_text(params: dict[str, Any], key: str) -> tuple[str, list[dict[str, Any]]]:
    """What a person sees of ``params[key]`` and its entities, or BadRequest."""
    raw = str(params.get(key) or "")
    mode = str(params.get("parse_mode") or "")
    if mode == "HTML":
        try:
            parsed = parse_html(raw)
        except MarkupError as e:
            raise BadRequest(f"can't parse entities: {e}") from None
        return parsed.text, parsed.entities
    if mode:
        raise BadRequest(f"unsupported parse_mode {mode!r} (the fake speaks HTML only)")
    entities = params.get("entities" if key == "text" else "caption_entities") or []
    return raw, list(entities) if isinstance(entities, list) else []


@dataclass
class FakeChat:
    id: int
    title: str
    is_forum: bool = True
    admins: set[int] = field(default_factory=set)
    topics: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    reactions: dict[int, list[str]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)  # message ids a person deleted


class FakeTelegram(FakeServer):
    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        enforce_limits: bool = False,
        group_per_min: int = 20,
        global_per_sec: int = 30,
    ) -> None:
        super().__init__()
        self.token = token
        self.chats: dict[int, FakeChat] = {}
        self.private: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] | None = None
        self.enforce_limits = enforce_limits
        self.group_per_min = group_per_min
        self.global_per_sec = global_per_sec
        self.throttled = 0
        self._sent_group: dict[int, deque[float]] = defaultdict(deque)
        self._sent_all: deque[float] = deque()
        self._ids = itertools.count(100)
        self._update_ids = itertools.count(5000)
        self.app.router.add_post("/bot{token}/{method}", self._handle)
        # pictures and files: URLs the fake cannot fetch, and files people sent (getFile)
        self.unreachable: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._file)

    def add_chat(
        self, chat_id: int, title: str, *, is_forum: bool = True, admins: set[int] | None = None
    ) -> FakeChat:
        chat = FakeChat(chat_id, title, is_forum, admins or set())
        self.chats[chat_id] = chat
        return chat

    def chat_json(self, chat: FakeChat) -> dict[str, Any]:
        out: dict[str, Any] = {"id": chat.id, "title": chat.title, "type": "supergroup"}
        if chat.is_forum:
            out["is_forum"] = True
        return out

    def user_message(
        self,
        chat_id: int,
        user: dict[str, Any],
        text: str,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """An update as Telegram would send it for a person writing in the chat; topic
        messages carry the implicit reply to the topic's creation message."""
        chat = self.chats[chat_id]
        mid = next(self._ids)
        msg: dict[str, Any] = {
            "message_id": mid,
            "from": user,
            "chat": self.chat_json(chat),
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            msg["entities"] = [{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}]
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
            target = reply_to if reply_to is not None else thread_id
            replied = chat.messages.get(target) or {
                "message_id": thread_id,
                "date": int(time.time()),
                "chat": self.chat_json(chat),
                "message_thread_id": thread_id,
                "forum_topic_created": {
                    "name": chat.topics.get(thread_id, {}).get("name", "t"),
                    "icon_color": 7322096,
                },
                "is_topic_message": True,
            }
            msg["reply_to_message"] = replied
        chat.messages[mid] = {**msg, "reply_to_message": None}
        return {"update_id": next(self._update_ids), "message": msg}

    def media_messages(self, chat_id: int, thread_id: int) -> list[dict[str, Any]]:
        """The bot's pictures and files in a topic, oldest first (``thread_messages`` has
        its texts): each with ``method``, ``url`` and its ``visible`` caption."""
        return sorted(
            (
                m
                for m in self.chats[chat_id].messages.values()
                if m.get("message_thread_id") == thread_id and "media_url" in m
            ),
            key=lambda m: int(m["message_id"]),
        )

    def add_file(self, content: bytes, name: str = "photo.jpg") -> str:
        """A file a person sent, served by getFile and /file/bot<token>/<path>: its id."""
        file_id = f"file-{len(self.files) + 1}-{name}"
        self.files[file_id] = content
        return file_id

    def delete_topic(self, chat_id: int, thread_id: int) -> None:
        """A person deletes a forum topic: the topic and every message in it are gone."""
        chat = self.chats[chat_id]
        chat.topics.pop(thread_id, None)
        for mid, msg in list(chat.messages.items()):
            if mid == thread_id or msg.get("message_thread_id") == thread_id:
                del chat.messages[mid]
                chat.deleted.add(mid)

    def thread_messages(self, chat_id: int, thread_id: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.chats[chat_id].messages.values()
            if m.get("message_thread_id") == thread_id
            and m.get("from", {}).get("is_bot")
            and "text" in m
        ]

    def _throttle(self, chat_id: int) -> int | None:
        now = time.monotonic()
        group = self._sent_group[chat_id]
        while group and group[0] <= now - 60:
            group.popleft()
        while self._sent_all and self._sent_all[0] <= now - 1:
            self._sent_all.popleft()
        if len(group) >= self.group_per_min:
            return max(1, int(group[0] + 60 - now) + 1)
        if len(self._sent_all) >= self.global_per_sec:
            return 1
        group.append(now)
        self._sent_all.append(now)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await read_params(request)
        self.calls.append(Call(method, params, dict(request.headers)))
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        scripted = await self.scripted(request, method)
        if scripted is not None:
            return scripted
        handler = getattr(self, f"m_{method}", None)
        if handler is None:
            return web.json_response({"ok": True, "result": True})
        if method in ("sendMessage", "createForumTopic") and self.enforce_limits:
            wait = self._throttle(int(params["chat_id"]))
            if wait is not None:
                self.throttled += 1
                return web.json_response(
                    {
                        "ok": False,
                        "error_code": 429,
                        "description": f"Too Many Requests: retry after {wait}",
                        "parameters": {"retry_after": wait},
                    },
                    status=429,
                )
        try:
            self._check_text(method, params)
            result = await handler(params)
        except LookupError as e:
            return web.json_response(
                {"ok": False, "error_code": 400, "description": f"Bad Request: {e.args[0]}"},
                status=400,
            )
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _check_text(method: str, params: dict[str, Any]) -> None:
        if method in TEXT_METHODS:
            text, _ = visible_text(params, TEXT_METHODS[method])
            if not text.strip():
                raise BadRequest("message text is empty")
            if utf16_len(text) > MESSAGE_MAX:
                raise BadRequest("message is too long")
        elif method in CAPTION_METHODS and params.get("caption"):
            caption, _ = visible_text(params, CAPTION_METHODS[method])
            if utf16_len(caption) > CAPTION_MAX:
                raise BadRequest("message caption is too long")

    def _chat(self, params: dict[str, Any]) -> FakeChat:
        chat = self.chats.get(int(params["chat_id"]))
        if chat is None:
            raise LookupError("chat not found")
        return chat

    async def m_getMe(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    async def m_setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = params
        return True

    async def m_getWebhookInfo(self, params: dict[str, Any]) -> Any:
        url = (self.webhook or {}).get("url", "")
        return {"url": url, "has_custom_certificate": False, "pending_update_count": 0}

    async def m_getChat(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        return {
            **self.chat_json(chat),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    async def m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    async def m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset", 0) or 0)
        deadline = time.monotonic() + min(float(params.get("timeout", 0) or 0), 0.2)
        while True:
            pending = [u for u in self.updates if u["update_id"] >= offset]
            if pending or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(0.02)

    async def m_createForumTopic(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        if not chat.is_forum:
            raise LookupError("the chat is not a forum")
        if not 1 <= utf16_len(str(params.get("name") or "")) <= TOPIC_NAME_MAX:
            raise BadRequest("TOPIC_NAME_INVALID")
        tid = next(self._ids)
        topic = {
            "message_thread_id": tid,
            "name": params["name"],
            "icon_color": 7322096,
            "closed": False,
        }
        chat.topics[tid] = topic
        chat.messages[tid] = {
            "message_id": tid,
            "from": BOT_USER,
            "chat": self.chat_json(chat),
            "date": int(time.time()),
            "message_thread_id": tid,
            "forum_topic_created": {"name": params["name"], "icon_color": 7322096},
            "is_topic_message": True,
        }
        return {k: v for k, v in topic.items() if k != "closed"}

    async def m_sendMessage(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        if chat_id > 0 and chat_id not in self.chats:
            self.private.append(params)
            return {
                "message_id": next(self._ids),
                "chat": {"id": chat_id, "type": "private"},
                "date": int(time.time()),
                "text": params["text"],
            }
        chat = self._chat(params)
        thread = params.get("message_thread_id")
        if thread is not None and int(thread) not in chat.topics:
            raise LookupError("message thread not found")
        visible, entities = visible_text(params, "text")
        mid = next(self._ids)
        msg: dict[str, Any] = {
            "message_id": mid,
            "from": BOT_USER,
            "chat": self.chat_json(chat),
            "date": int(time.time()),
            "text": params["text"],
            "visible": visible,
            "entities": entities,
        }
        self._store(chat, msg, params)
        return msg

    @staticmethod
    def _store(chat: FakeChat, msg: dict[str, Any], params: dict[str, Any]) -> None:
        """What every sent message keeps of its call: topic, reply target, buttons."""
        thread = params.get("message_thread_id")
        if thread is not None:
            msg["message_thread_id"] = int(thread)
            msg["is_topic_message"] = True
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            msg["reply_to_message_id"] = reply.get("message_id")
        if isinstance(params.get("reply_markup"), dict):
            msg["reply_markup"] = params["reply_markup"]
        chat.messages[int(msg["message_id"])] = msg

    async def _send_media(self, params: dict[str, Any], field: str, method: str) -> Any:
        chat = self._chat(params)
        thread = params.get("message_thread_id")
        if thread is not None and int(thread) not in chat.topics:
            raise LookupError("message thread not found")
        url = str(params.get(field) or "")
        if not url.startswith(("http://", "https://")) and url not in self.files:
            raise BadRequest("wrong file identifier/HTTP URL specified")
        if url in self.unreachable:
            raise BadRequest("failed to get HTTP URL content")
        visible, entities = visible_text(params, "caption") if params.get("caption") else ("", [])
        mid = next(self._ids)
        msg: dict[str, Any] = {
            "message_id": mid,
            "from": BOT_USER,
            "chat": self.chat_json(chat),
            "date": int(time.time()),
            "method": method,
            "media_url": url,
            "caption": params.get("caption") or "",
            "visible": visible,
            "caption_entities": entities,
            "document": {"file_id": f"sent-{mid}", "file_unique_id": f"u{mid}"},
        }
        self._store(chat, msg, params)
        return {k: v for k, v in msg.items() if k not in ("method", "media_url", "visible")}

    async def m_sendPhoto(self, params: dict[str, Any]) -> Any:
        return await self._send_media(params, "photo", "sendPhoto")

    async def m_sendVideo(self, params: dict[str, Any]) -> Any:
        return await self._send_media(params, "video", "sendVideo")

    async def m_sendAudio(self, params: dict[str, Any]) -> Any:
        return await self._send_media(params, "audio", "sendAudio")

    async def m_sendDocument(self, params: dict[str, Any]) -> Any:
        return await self._send_media(params, "document", "sendDocument")

    async def m_editMessageCaption(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        msg = chat.messages.get(int(params["message_id"]))
        if msg is None:
            raise LookupError("message to edit not found")
        if "media_url" not in msg:
            raise BadRequest("there is no caption in the message to edit")
        msg["caption"] = params.get("caption") or ""
        msg["visible"], msg["caption_entities"] = visible_text(params, "caption")
        msg["edit_date"] = int(time.time())
        markup = params.get("reply_markup")  # an edit without one removes it, as Telegram does
        if isinstance(markup, dict):
            msg["reply_markup"] = markup
        else:
            msg.pop("reply_markup", None)
        return {k: v for k, v in msg.items() if k not in ("method", "media_url", "visible")}

    async def m_getFile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id") or "")
        if file_id not in self.files:
            raise BadRequest("invalid file_id")
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_size": len(self.files[file_id]),
            "file_path": f"photos/{file_id}",
        }

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(Call("file", {"path": request.match_info["path"]}, {}))
        path = request.match_info["path"].removeprefix("photos/")
        if request.match_info["token"] != self.token or path not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[path], content_type="image/jpeg")

    async def m_editMessageText(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        msg = chat.messages.get(int(params["message_id"]))
        if msg is None:
            raise LookupError("message to edit not found")
        msg["text"] = params["text"]
        msg["visible"], msg["entities"] = visible_text(params, "text")
        msg["edit_date"] = int(time.time())
        # an edit without a keyboard removes the message's buttons, as in Telegram
        markup = params.get("reply_markup")
        if isinstance(markup, dict):
            msg["reply_markup"] = markup
        else:
            msg.pop("reply_markup", None)
        return msg

    def _topic(self, params: dict[str, Any]) -> dict[str, Any]:
        topic = self._chat(params).topics.get(int(params["message_thread_id"]))
        if topic is None:
            raise BadRequest("TOPIC_ID_INVALID")
        return topic

    async def m_closeForumTopic(self, params: dict[str, Any]) -> Any:
        self._topic(params)["closed"] = True
        return True

    async def m_reopenForumTopic(self, params: dict[str, Any]) -> Any:
        self._topic(params)["closed"] = False
        return True

    async def m_setMessageReaction(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        if int(params["message_id"]) in chat.deleted:
            raise BadRequest("message to react not found")
        emojis = [r.get("emoji", "") for r in params.get("reaction") or []]
        chat.reactions[int(params["message_id"])] = emojis
        return True

    async def m_getChatMember(self, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        uid = int(params["user_id"])
        status = "administrator" if uid in chat.admins else "member"
        user = {"id": uid, "is_bot": False, "first_name": f"user{uid}"}
        if status == "administrator":
            return {
                "status": status,
                "user": user,
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_delete_messages": True,
                "can_manage_video_chats": True,
                "can_restrict_members": True,
                "can_promote_members": False,
                "can_change_info": True,
                "can_invite_users": True,
                "can_post_stories": True,
                "can_edit_stories": True,
                "can_delete_stories": True,
                "can_send_welcome_messages": True,
                "can_manage_topics": True,
                "can_pin_messages": True,
            }
        return {"status": status, "user": user}
