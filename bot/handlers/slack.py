"""Slack edge, intake: slack-bolt on our aiohttp server (or Socket Mode). Every event,
command and interaction is stored before it is acknowledged; the inbox worker hands it to
``handlers.slack_events`` after."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import lanes
from bot.config import Settings
from bot.handlers import Handler
from bot.intake import Intake
from bot.metrics import Metrics

log = logging.getLogger(__name__)

PLATFORM = "slack"
SLASH_COMMANDS = ("connect", "disconnect", "template", "quick", "pagedesk")
REPLY_VIEW = "comment_reply_view"


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
        await intake.submit("slack", key, json.dumps(body), lane=lanes.slack(body))
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
