"""Slack edge, after intake: a stored event, slash command, button or dialog turned into a
call of the core (staff desk, commands). Bolt stays at the front door (``handlers.slack``)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot import routing
from bot.commands import (
    ChatCommands,
    Invocation,
    Menu,
    Reply,
    parse_quick_choice,
    parse_write_choice,
)
from bot.config import Settings
from bot.core.context import Core
from bot.core.desk import StaffDesk, StaffMessage
from bot.handlers.slack import REPLY_VIEW
from bot.jobs.kinds import ChatNotice
from bot.platforms.slack import slack_to_plain, unescape
from bot.platforms.slack_files import media_kind
from bot.rules.access import Actor, may_delete_comment
from bot.storage.models import InboxItem

log = logging.getLogger(__name__)

PLATFORM = "slack"
MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


def staff_files(event: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The files shared with a staff message (``file_share``), as (kind, file id): the
    kind by the type Slack gives (a picture is what a comment can carry)."""
    return tuple(
        (media_kind(f.get("mimetype")), str(f["id"]))
        for f in event.get("files") or ()
        if isinstance(f, dict) and f.get("id")
    )


class SlackEdge:
    """Handles one stored Slack request at a time (called by the inbox worker)."""

    def __init__(
        self,
        client: AsyncWebClient,
        settings: Settings,
        core: Core,
        desk: StaffDesk,
        commands: ChatCommands,
    ) -> None:
        self.client = client
        self.settings = settings
        self.core = core
        self.desk = desk
        self.commands = commands
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
        reply: Reply,
        *,
        thread_ts: str | None = None,
        only_for: str | None = None,
    ) -> None:
        text = reply.text if isinstance(reply, Menu) else reply
        if text:
            await self.core.say(
                ChatNotice(PLATFORM, channel, text, thread_id=thread_ts, only_for=only_for)
            )

    # --- who is writing -------------------------------------------------------------------

    async def user_info(self, user: str) -> dict[str, Any] | None:
        try:
            info = await self.client.users_info(user=user)
        except (SlackApiError, SlackClientError) as e:
            log.warning("users.info failed", extra={"error": type(e).__name__})
            return None
        u = info.get("user")
        return u if isinstance(u, dict) else None

    async def actor(self, user: str) -> Actor:
        # Slack's app lives in one workspace: its admins and owners are the operator's
        # people, as are BOT_ADMINS; they manage every channel's Pages.
        admin = user in self.settings.admin_ids(PLATFORM)
        if not admin:
            u = await self.user_info(user) or {}
            admin = bool(u.get("is_admin") or u.get("is_owner") or u.get("is_primary_owner"))
        return Actor(PLATFORM, user, is_operator=admin, is_chat_admin=admin)

    async def plain_text(self, text: str) -> str:
        """Slack's markup (<url|label>, <@U…>, &amp;) as the plain text a person reads in
        Slack: what reaches Facebook."""
        names = {user: await self.display_name(user) for user in set(MENTION.findall(text))}
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

    def invocation(
        self, channel: str, user: str, command: routing.Command, task_id: int | None, **kw: Any
    ) -> Invocation:
        async def actor() -> Actor:
            return await self.actor(user)

        token = self.settings.fb_access_token
        return Invocation(
            platform=PLATFORM,
            chat_id=channel,
            name=command.name,
            args=command.args,
            user_id=user,
            by=f"<@{user}>",
            actor=actor,
            task_id=task_id,
            user_token=token.get_secret_value() if token else None,
            **kw,
        )

    # --- events ---------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "message":
            return
        subtype = event.get("subtype")
        if subtype in ("message_changed", "message_deleted"):
            await self.on_changed(event, deleted=subtype == "message_deleted")
            return
        if subtype not in (None, "thread_broadcast", "file_share"):
            return  # bot_message, channel_join, …
        if event.get("bot_id") or not event.get("user"):
            return  # our own messages and other apps'
        ts, thread_ts = event.get("ts"), event.get("thread_ts")
        if not thread_ts or thread_ts == ts:
            return  # a top-level channel message is not in any task
        channel, user = str(event["channel"]), str(event["user"])
        result = await self.desk.staff_message(
            StaffMessage(
                platform=PLATFORM,
                chat_id=channel,
                thread_id=str(thread_ts),
                user_id=user,
                text=await self.plain_text(str(event.get("text") or "")),
                chat_message_id=str(ts),
                command_prefixes="!",
                media=staff_files(event),
            )
        )
        if result is not None and isinstance(result.decision, routing.Command):
            await self.task_command(channel, str(thread_ts), result.task_id, user, result.decision)

    async def task_command(
        self, channel: str, thread_ts: str, task_id: int, user: str, command: routing.Command
    ) -> None:
        reply = await self.commands.run(
            self.invocation(channel, user, command, task_id, prefix="!")
        )
        if isinstance(reply, Menu):
            await self.desk.say_in_task(task_id, reply.text, choices=reply.choices)
        else:
            await self.say(channel, reply, thread_ts=thread_ts)

    async def on_changed(self, event: dict[str, Any], *, deleted: bool) -> None:
        """Facebook keeps what was sent: say so when a delivered answer changes in Slack."""
        previous = event.get("previous_message") or {}
        ts = str(previous.get("ts") or (event.get("message") or {}).get("ts") or "")
        thread_ts = previous.get("thread_ts") or (event.get("message") or {}).get("thread_ts")
        if not ts or not thread_ts or previous.get("bot_id"):
            return
        channel = str(event.get("channel") or "")
        await self.desk.staff_changed(PLATFORM, channel, str(thread_ts), ts, deleted=deleted)

    # --- buttons and the reply dialog ---------------------------------------------------

    async def on_action(self, body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        user = str((body.get("user") or {}).get("id", ""))
        channel = str((body.get("channel") or body.get("container") or {}).get("id", ""))
        if action.get("action_id") == "quick_pick":
            value = str((action.get("selected_option") or {}).get("value"))
            if (write := parse_write_choice(value)) is not None:
                # a contact card's "Write in Messenger" / "Reply to latest comment"
                said = await self.commands.cards.write_first(
                    *write, None, user_id=user, by=f"<@{user}>", chat=(PLATFORM, channel)
                )
                thread = await self.desk.task_thread(write[0], PLATFORM, channel)
                await self.say(channel, said, thread_ts=thread)
                return
            picked = parse_quick_choice(value)
            if picked is not None:
                reason = await self.desk.send_quick(
                    picked[0], picked[1], user_id=user, by=f"<@{user}>", chat=(PLATFORM, channel)
                )
                if reason:
                    thread = await self.desk.task_thread(picked[0], PLATFORM, channel)
                    await self.say(channel, reason, thread_ts=thread)
            return
        moderation = str(action.get("action_id") or "").removeprefix("comment_")
        if moderation in routing.MODERATION_ACTIONS:
            await self.on_moderation(body, action, channel, user, moderation)
            return
        try:
            task_id = int(action.get("value", ""))
        except ValueError:
            return
        # a button names a task of its own channel, never another chat's
        thread = await self.desk.task_thread(task_id, PLATFORM, channel)
        if thread is None:
            return
        action_id = action.get("action_id")
        if action_id == "task_close":
            text = await self.desk.close_task(task_id)
        elif action_id == "task_reopen":
            text = await self.desk.reopen_task(task_id)
        elif action_id == "task_quick":
            await self.task_command(channel, thread, task_id, user, routing.Command("quick", ""))
            return
        else:
            return
        await self.say(channel, f"<@{user}>: {text}", thread_ts=thread)

    async def on_moderation(
        self, body: dict[str, Any], action: dict[str, Any], channel: str, user: str, what: str
    ) -> None:
        """A relayed comment's Hide / Unhide / Like / Delete button (Slack asked for Delete's
        confirmation already); a refusal is shown to the person who clicked."""
        try:
            message_id = int(action.get("value", ""))
        except ValueError:
            return
        may_delete = what == routing.MOD_DELETE and may_delete_comment(await self.actor(user))
        reason = await self.desk.moderate(
            what,
            by=await self.display_name(user) or user,
            chat=(PLATFORM, channel),
            may_delete=may_delete,
            confirmed=True,
            message_id=message_id,
        )
        if reason:
            where = body.get("container") or {}
            thread = where.get("thread_ts") or (body.get("message") or {}).get("thread_ts")
            await self.say(channel, reason, thread_ts=thread, only_for=user)

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
        await self.desk.answer_message(message_id, text, user)

    # --- slash commands ---------------------------------------------------------------

    async def on_command(self, body: dict[str, Any]) -> None:
        name = str(body.get("command", "")).lstrip("/")
        args = str(body.get("text") or "").strip()
        user = str(body.get("user_id", ""))
        channel = str(body.get("channel_id", ""))
        if name == "template":
            # mentions arrive as <@W123|name>: an assignee is the user id
            args = re.sub(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", r"\1", args)
        if name == "pagedesk":
            name = "help"

        async def join() -> str | None:
            return await self.join(channel)

        command = routing.Command(name, unescape(args))
        reply = await self.commands.run(
            self.invocation(
                channel,
                user,
                command,
                None,
                chat_label=f"the Slack channel #{body.get('channel_name') or channel}",
                prepare=join,
            )
        )
        await self.say(channel, reply, only_for=user)

    async def join(self, channel: str) -> str | None:
        """The bot joins a public channel by itself; a private one must invite it."""
        try:
            await self.client.conversations_join(channel=channel)
        except SlackApiError as e:
            error = e.response.get("error")
            if error != "method_not_supported_for_channel_type":
                return (
                    f"I cannot join this channel ({error}): invite me with /invite, then run "
                    "/connect again."
                )
        return None
