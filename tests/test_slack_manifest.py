"""slack-manifest.yml must match what the code listens to and calls."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot.handlers.slack import SLASH_COMMANDS

MANIFEST = Path(__file__).parents[1] / "slack-manifest.yml"


def test_manifest_declares_what_the_bot_uses() -> None:
    m = yaml.safe_load(MANIFEST.read_text())
    commands = {c["command"].lstrip("/") for c in m["features"]["slash_commands"]}
    assert commands == set(SLASH_COMMANDS)
    urls = {c["url"] for c in m["features"]["slash_commands"]}
    urls |= {m["settings"]["event_subscriptions"]["request_url"]}
    urls |= {m["settings"]["interactivity"]["request_url"]}
    assert {u.rsplit("/webhooks/", 1)[1] for u in urls} == {"slack"}
    assert set(m["settings"]["event_subscriptions"]["bot_events"]) >= {
        "message.channels",
        "message.groups",
    }
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    # chat.postMessage/update/postEphemeral, conversations.join, reactions.add, users.info,
    # DMs to assignees, slash commands, the history scopes behind the message events, and
    # files.info and the download of files staff share
    assert scopes >= {
        "files:read",
        "chat:write",
        "channels:join",
        "reactions:write",
        "users:read",
        "im:write",
        "commands",
        "channels:history",
        "groups:history",
    }
    assert m["settings"]["interactivity"]["is_enabled"] is True
