"""Who may do what in a staff chat. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    """A person in a staff chat, as far as permissions go.

    ``is_operator``: listed in ``BOT_ADMINS`` (in Slack, whose app lives in one workspace, a
    workspace admin or owner too). ``is_chat_admin``: an admin of the chat they typed in.
    Anyone can add the bot to a group of their own and be its admin there, so chat admin
    alone proves nothing about the operator's Pages.
    """

    platform: str
    user_id: str
    is_operator: bool
    is_chat_admin: bool
    anonymous: bool = False  # a Telegram admin writing as the group: no user id to name


def may_bind_page(actor: Actor, *, connected_here: bool) -> bool:
    """Binding a Page to a chat (new, or moved from another chat) is the operator's;
    managing it where it is connected (reconnect) is also for that chat's admins."""
    if connected_here:
        return actor.is_operator or actor.is_chat_admin
    return actor.is_operator


def may_manage_page(actor: Actor) -> bool:
    """Disconnect, templates, adding and removing quick replies of this chat's Pages."""
    return actor.is_operator or actor.is_chat_admin


def binding_refusal(actor: Actor) -> str:
    """What a person who may not bind a Page is told: no Page named, their own id given."""
    if actor.anonymous or not actor.user_id:
        return (
            "Only the operator of this Pagedesk can connect a Facebook Page to a chat. "
            "You are writing anonymously (as the group): write as yourself to see your "
            "user id, and hand it to the operator for BOT_ADMINS."
        )
    key = f"{actor.platform}:{actor.user_id}"
    return (
        "Only the operator of this Pagedesk can connect a Facebook Page to a chat. "
        f"Your user id is {actor.user_id}: ask the operator to add {key} to BOT_ADMINS."
    )


def may_delete_comment(actor: Actor) -> bool:
    """Deleting a customer's comment on Facebook cannot be undone and takes their words
    away for good: the chat's admins and BOT_ADMINS only. Anyone in the chat may hide it
    (which can be undone), unhide it or like it."""
    return actor.is_operator or actor.is_chat_admin
