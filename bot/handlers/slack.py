"""Slack edge: slack-bolt on our aiohttp server (or Socket Mode). Every event, command and
interaction is stored before it is acknowledged and handled by the inbox worker after."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot import routing
from bot.commands import ChatCommands, Menu, parse_quick_choice
from bot.config import Settings
from bot.handlers import Handler
from bot.intake import Intake
from bot.metrics import Metrics
from bot.platforms.slack import slack_to_plain, unescape
from bot.service import Service, ServiceError
from bot.storage.models import InboxItem

log = logging.getLogger(__name__)

PLATFORM = "slack"
SLASH_COMMANDS = ("connect", "disconnect", "template", "quick", "pagedesk")
REPLY_VIEW = "comment_reply_view"
MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")

HELP = (
    "Pagedesk turns comments on your Facebook Page into tasks: one message and thread per post.\n"
    "• Reply in a task's thread to answer the latest comment as the Page; the *Reply* button "
    "on a comment answers that one.\n"
    "• Start with `note:` or `private:` to keep a message internal.\n"
    "• In a thread (Slack refuses slash commands there): `!close`, `!reopen`, "
    "`!quick <name>` (or `!quick` for a list), `!contact`, `!contact merge <n>`, "
    "`!merge <task>`.\n"
    "• `/quick list`; admins: `/connect <page>`, `/disconnect <page>`, `/template`, "
    "`/quick add|remove`."
)


def build_bolt(
    settings: Settings, client: AsyncWebClient, intake: Intake, metrics: Metrics
) -> AsyncApp:
    socket_mode = settings.slack_app_token is not None
    signing = settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=signing.get_secret_value() if signing else None,
        request_verification_enabled=not socket_mode,
        # the HTTP answer waits for the listener, so "200" means "stored"
        process_before_response=True,
        ignoring_self_events_enabled=True,
    )

    async def store(key: str, body: dict[str, Any]) -> None:
        await intake.submit("slack", key, json.dumps(body))
        metrics.deliveries.labels("slack").inc()

    async def on_event(body: dict[str, Any]) -> None:
        # Slack retries an event not acknowledged in 3 s with the same event_id: stored once.
        await store(f"event:{body.get('event_id')}", body)

    async def on_command(ack: AsyncAck, body: dict[str, Any]) -> None:
        await store(f"command:{body.get('trigger_id')}", body)
        await ack()

    async def on_action(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        action = (body.get("actions") or [{}])[0]
        if action.get("action_id") == "comment_reply":
            # A modal must open within 3 s of the click (the trigger expires), so this one
            # call is made here and not through the outbox.
            await client.views_open(trigger_id=body["trigger_id"], view=reply_view(action))
        else:
            await store(f"action:{body.get('trigger_id')}", body)
        await ack()

    async def on_view(ack: AsyncAck, body: dict[str, Any]) -> None:
        view = body.get("view") or {}
        await store(f"view:{view.get('id')}:{view.get('hash')}", body)
        await ack()

    app.event("message")(on_event)
    app.command(re.compile(r"^/(" + "|".join(SLASH_COMMANDS) + r")$"))(on_command)
    app.action(re.compile(r"^(task_|comment_|quick_)"))(on_action)
    app.view(REPLY_VIEW)(on_view)
    return app


def reply_view(action: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": REPLY_VIEW,
        "private_metadata": str(action.get("value", "")),
        "title": {"type": "plain_text", "text": "Answer on Facebook"},
        "submit": {"type": "plain_text", "text": "Send"},
        "blocks": [
            {
                "type": "input",
                "block_id": "answer",
                "label": {"type": "plain_text", "text": "Your answer, posted as the Page"},
                "element": {"type": "plain_text_input", "action_id": "text", "multiline": True},
            }
        ],
    }


def http_handler(bolt: AsyncApp) -> Handler:
    """The web framework is a thin converter at the edge."""

    async def handle(request: web.Request) -> web.StreamResponse:
        bolt_response = await bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    return handle


class SlackHandler:
    """Handles one stored Slack request at a time (called by the inbox worker)."""

    def __init__(self, client: AsyncWebClient, service: Service, settings: Settings) -> None:
        self.client = client
        self.service = service
        self.settings = settings
        self.commands = ChatCommands(service)
        self._names: dict[str, str | None] = {}  # display names of mentioned people

    async def handle_item(self, item: InboxItem) -> None:
        body = json.loads(item.payload)
        if body.get("type") == "event_callback":
            await self.on_event(body.get("event") or {})
        elif body.get("type") == "block_actions":
            await self.on_action(body)
        elif body.get("type") == "view_submission":
            await self.on_view(body)
        elif "command" in body:
            await self.on_command(body)

    async def say(
        self,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        only_for: str | None = None,
    ) -> None:
        async with self.service.tx() as s:
            self.service.notice(s, PLATFORM, channel, text, thread_id=thread_ts, only_for=only_for)

    async def is_admin(self, user: str) -> bool:
        if user in self.settings.admin_ids(PLATFORM):
            return True
        u = await self.user_info(user) or {}
        return bool(u.get("is_admin") or u.get("is_owner") or u.get("is_primary_owner"))

    async def user_info(self, user: str) -> dict[str, Any] | None:
        try:
            info = await self.client.users_info(user=user)
        except (SlackApiError, SlackClientError) as e:
            log.warning("users.info failed", extra={"error": type(e).__name__})
            return None
        u = info.get("user")
        return u if isinstance(u, dict) else None

    async def plain_text(self, text: str) -> str:
        names: dict[str, str | None] = {}
        for user in set(MENTION.findall(text)):
            names[user] = await self.display_name(user)
        return slack_to_plain(text, names.get)

    async def display_name(self, user: str) -> str | None:
        if user in self._names:
            return self._names[user]
        u = await self.user_info(user)
        if u is None:
            return None
        profile = u.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or u.get("name")
        if len(self._names) > 10_000:
            self._names.clear()
        self._names[user] = str(name) if name else None
        return self._names[user]

    # --- events ---------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "message":
            return
        subtype = event.get("subtype")
        if subtype == "message_changed":
            await self.on_changed(event, deleted=False)
            return
        if subtype == "message_deleted":
            await self.on_changed(event, deleted=True)
            return
        if subtype not in (None, "thread_broadcast", "file_share"):
            return  # bot_message, channel_join, …
        if event.get("bot_id") or not event.get("user"):
            return  # our own messages and other apps'
        ts, thread_ts = event.get("ts"), event.get("thread_ts")
        if not thread_ts or thread_ts == ts:
            return  # a top-level channel message is not in any task
        # Slack's markup (<url|label>, <@U…>, &amp;) reaches Facebook as the plain text a
        # person reads in Slack
        text = await self.plain_text(str(event.get("text") or ""))
        result = await self.service.staff_message(
            platform=PLATFORM,
            chat_id=str(event["channel"]),
            thread_id=str(thread_ts),
            user_id=str(event["user"]),
            text=text,
            chat_message_id=str(ts),
            reply_to_chat_message_id=None,
            command_prefixes="!",
        )
        if result is None:
            return
        task, decision = result
        if isinstance(decision, routing.Command):
            await self.task_command(
                str(event["channel"]), str(thread_ts), task.id, str(event["user"]), decision
            )

    async def task_command(
        self, channel: str, thread_ts: str, task_id: int, user: str, command: routing.Command
    ) -> None:
        result = await self.commands.in_task(
            task_id, command, user_id=user, by=f"<@{user}>", prefix="!", chat_message_id=None
        )
        if isinstance(result, Menu):
            await self.service.say_in_task(task_id, result.text, choices=result.choices)
        elif result:
            await self.say(channel, result, thread_ts=thread_ts)

    async def on_changed(self, event: dict[str, Any], *, deleted: bool) -> None:
        """Facebook keeps what was sent: say so when a delivered answer changes in Slack."""
        previous = event.get("previous_message") or {}
        ts = str(previous.get("ts") or (event.get("message") or {}).get("ts") or "")
        channel = str(event.get("channel") or "")
        thread_ts = previous.get("thread_ts") or (event.get("message") or {}).get("thread_ts")
        if not ts or not thread_ts or previous.get("bot_id"):
            return
        async with self.service.db.read() as s:
            task = await self.service.repo.tasks.by_thread(s, PLATFORM, channel, str(thread_ts))
            if task is None:
                return
            msg = await self.service.repo.messages.by_chat_id(s, task.id, ts)
        if msg is None or msg.direction != "staff" or msg.state != "delivered":
            return
        if deleted:
            text = "Deleted in Slack only: the answer stays on Facebook."
        else:
            text = (
                "Edits are not sent to Facebook: the customer still sees the first text. "
                "Send a new message to correct it."
            )
        await self.say(channel, text, thread_ts=str(thread_ts))

    # --- buttons and the reply modal ---------------------------------------------------

    async def on_action(self, body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id", ""))
        channel = str((body.get("channel") or body.get("container") or {}).get("id", ""))
        if action.get("action_id") == "quick_pick":
            picked = parse_quick_choice(str((action.get("selected_option") or {}).get("value")))
            if picked is not None:
                reason = await self.service.send_quick(
                    picked[0], picked[1], user_id=user, by=f"<@{user}>", chat=(PLATFORM, channel)
                )
                if reason:
                    await self.service.say_in_task(picked[0], reason)
            return
        try:
            task_id = int(action.get("value", ""))
        except ValueError:
            return
        async with self.service.db.read() as s:
            task = await self.service.repo.tasks.get(s, task_id)
        if task is None or task.thread_id is None or (channel and channel != task.chat_id):
            return  # a button names a task of its own channel, never another chat's
        if action.get("action_id") == "task_close":
            text = await self.service.close_task(task_id, user)
        elif action.get("action_id") == "task_reopen":
            text = await self.service.reopen_task(task_id, user)
        elif action.get("action_id") == "task_quick":
            quick = routing.Command("quick", "")
            await self.task_command(channel or task.chat_id, task.thread_id, task_id, user, quick)
            return
        else:
            return
        await self.say(channel or task.chat_id, f"<@{user}>: {text}", thread_ts=task.thread_id)

    async def on_view(self, body: dict[str, Any]) -> None:
        view = body.get("view") or {}
        if view.get("callback_id") != REPLY_VIEW:
            return
        user = str((body.get("user") or {}).get("id", ""))
        values = (view.get("state") or {}).get("values") or {}
        text = str(((values.get("answer") or {}).get("text") or {}).get("value") or "")
        try:
            message_id = int(view.get("private_metadata") or "")
        except ValueError:
            return
        await self.service.answer_message(message_id, text, user)

    # --- slash commands ---------------------------------------------------------------

    async def on_command(self, body: dict[str, Any]) -> None:
        name = str(body.get("command", "")).lstrip("/")
        args = str(body.get("text") or "").strip()
        user = str(body.get("user_id", ""))
        channel = str(body.get("channel_id", ""))
        if name == "pagedesk" and args in ("", "help"):
            await self.say(channel, HELP, only_for=user)
            return
        if name == "connect":
            await self.connect(channel, user, args, str(body.get("channel_name") or channel))
            return
        if name in ("disconnect", "template") and not await self.is_admin(user):
            await self.say(channel, f"Only workspace admins can run /{name}.", only_for=user)
            return
        if name == "template":
            # mentions arrive as <@W123|name>: an assignee is the user id
            args = re.sub(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", r"\1", args)
            text = await self.commands.template(PLATFORM, channel, unescape(args))
            await self.say(channel, text, only_for=user)
            return
        if name == "quick":
            admin = args.split(" ", 1)[0] in ("add", "remove") and await self.is_admin(user)
            text = await self.commands.quick(PLATFORM, channel, unescape(args), is_admin=admin)
            await self.say(channel, text, only_for=user)
            return
        if name == "disconnect":
            if not args:
                text = "Usage: /disconnect <page id or name>"
            else:
                try:
                    text = await self.service.disconnect_page(PLATFORM, channel, args)
                except ServiceError as e:
                    text = str(e)
            await self.say(channel, text, only_for=user)
        else:
            await self.say(channel, HELP, only_for=user)

    async def connect(self, channel: str, user: str, ref: str, channel_name: str) -> None:
        # Slack's app lives in one workspace: its admins and owners are the operator's
        # people, as are BOT_ADMINS; nobody else binds or manages a Page.
        admin = await self.is_admin(user)
        actor = routing.Actor(PLATFORM, user, is_operator=admin, is_chat_admin=admin)
        if not admin:
            await self.say(channel, routing.binding_refusal(actor), only_for=user)
            return
        try:
            await self.client.conversations_join(channel=channel)
        except SlackApiError as e:
            error = e.response.get("error")
            if error != "method_not_supported_for_channel_type":
                await self.say(
                    channel,
                    f"I cannot join this channel ({error}): invite me with /invite, then run "
                    "/connect again.",
                    only_for=user,
                )
                return
        token = self.settings.fb_access_token
        text = await self.service.connect(
            ref,
            user_token=token.get_secret_value() if token else None,
            platform=PLATFORM,
            chat_id=channel,
            actor=actor,
            chat_label=f"the Slack channel #{channel_name}",
        )
        await self.say(channel, text, only_for=user)
