"""What Slack shows of a task: the root and each post as Block Kit within Slack's limits.
Pure.

Customer text (comments, author names) goes into ``plain_text`` objects, which Slack
shows as written: no mrkdwn, link, mention or ``@channel``. Where mrkdwn is needed (the
fallback text, notices) it is escaped. Text is measured with ``bot.platforms.text``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from bot.platforms.text import fit, shorten, split, utf16_len
from bot.ports import ChatPost, RootMessage

SECTION_MAX = 3000  # a section's text
HEADER_MAX = 150
BLOCKS_MAX = 50  # in one message
TEXT_MAX = 40_000  # the top-level text; Slack truncates beyond
FALLBACK_MAX = 3000  # a notification shows a preview, the blocks carry the whole text
DIGEST_LINE_MAX = 200
NAME_MAX = 300
ASSIGNEES_MAX = 50  # mentions of at most 40 characters each stay within a section
LEADING_MENTION = re.compile(r"<@[UW][A-Z0-9]+>")


def escape(text: str) -> str:
    """Slack's three control characters; everything else is literal."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(text: str) -> dict[str, Any]:
    """A text object Slack shows as it is: no mrkdwn, no link, no mention."""
    return {"type": "plain_text", "text": text, "emoji": True}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def sections(text: str) -> list[dict[str, Any]]:
    """Customer text over as many plain_text sections as it needs, nothing cut."""
    return [{"type": "section", "text": plain_text(piece)} for piece in split(text, SECTION_MAX)]


def mention(assignee: str) -> str:
    a = assignee.lstrip("@")
    if a[:1] in ("U", "W") and a[1:].isalnum() and a.upper() == a:
        return f"<@{a}>"
    return escape(assignee)


def notice_text(text: str) -> str:
    """Our own notice, escaped: it quotes customer names and texts, which must not become
    links or mentions. The one live piece is a leading ``<@U…>``: the service and the
    Slack handler start a notice with the mention of the staff member who acted
    (``by=f"<@{user}>"``), and no notice starts with customer text."""
    lead = LEADING_MENTION.match(text)
    head = lead.group() if lead else ""
    return head + escape(text[len(head) :])


def quote(text: str) -> str:
    return "\n".join("> " + escape(line) for line in text.splitlines())


def root_blocks(root: RootMessage) -> list[dict[str, Any]]:
    title = shorten(root.title, HEADER_MAX) if root.title.strip() else f"Task #{root.task_id}"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": plain_text(title)}]
    if root.description.strip():
        description = shorten(root.description, SECTION_MAX)
        blocks.append({"type": "section", "text": plain_text(description)})
        if description != root.description and root.post_url:
            url = root.post_url.replace("|", "%7C")
            link = f"<{escape(url)}|The whole post on Facebook>"
            blocks.append({"type": "context", "elements": [mrkdwn(link)]})
    if root.assignees:
        people = " ".join(mention(a) for a in root.assignees[:ASSIGNEES_MAX])
        blocks.append({"type": "section", "text": mrkdwn(f"Assignees: {people}")})
    if root.tags:
        tags = fit(" ".join("#" + t for t in root.tags), SECTION_MAX, escape)
        blocks.append({"type": "context", "elements": [mrkdwn(tags)]})
    if root.additional_data.strip():
        # system data (post link, page, the commenter's name from Facebook) as a quote
        quoted = fit(root.additional_data, SECTION_MAX, quote)
        blocks.append({"type": "context", "elements": [mrkdwn(quoted)]})
    status = {
        "open": ":large_green_circle: open",
        "merged": ":twisted_rightwards_arrows: merged",
    }.get(root.status, ":white_check_mark: closed")
    blocks.append(
        {
            "type": "context",
            "elements": [mrkdwn(f"Status: *{status}* · task #{root.task_id}")],
        }
    )
    if root.status == "merged":
        return blocks  # work goes on in the surviving task
    toggle = (
        {"text": "Close", "action_id": "task_close", "style": "danger"}
        if root.status == "open"
        else {"text": "Reopen", "action_id": "task_reopen", "style": "primary"}
    )
    blocks.append(
        {
            "type": "actions",
            "block_id": f"task:{root.task_id}",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": toggle["text"]},
                    "action_id": toggle["action_id"],
                    "style": toggle["style"],
                    "value": str(root.task_id),
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Quick reply"},
                    "action_id": "task_quick",
                    "value": str(root.task_id),
                },
            ],
        }
    )
    return blocks


def root_text(root: RootMessage) -> str:
    """The notification and fallback text of the root."""
    return f"{fit(root.title, HEADER_MAX, escape)} (task #{root.task_id}, {root.status})"


def _who(post: ChatPost) -> str:
    return (post.author or "Someone") + (" (Page)" if post.kind == "page" else "")


def post_text(post: ChatPost) -> str:
    """The top-level text: a notification's words and the fallback of the blocks. Customer
    text is escaped, so ``<!channel>`` or ``<@U…>`` in it shows as written and notifies
    no one; it is a preview, the blocks carry the whole comment."""
    if post.kind == "digest":
        lines = [f"_{len(post.items)} comments arrived together:_"]
        for item in post.items:
            line = post_text(replace(item, text=shorten(item.text, DIGEST_LINE_MAX)))
            if utf16_len("\n".join([*lines, line])) > FALLBACK_MAX:
                lines.append("…")
                break
            lines.append(line)
        return "\n".join(lines)
    if post.kind == "notice":
        return fit(post.text, TEXT_MAX, notice_text)
    who = fit(_who(post), NAME_MAX, escape)
    text = fit(post.text, FALLBACK_MAX, escape)
    if post.fb_status == "removed":
        return f"*{who}*: ~{text}~\n_removed on Facebook_"
    if post.fb_status == "hidden":
        return f"*{who}*: {text}\n_hidden on Facebook_"
    label = " (edited)" if post.fb_status == "edited" else ""
    arrow = "↪ " if post.is_reply else ""
    return f"{arrow}*{who}*{label}: {text}"


STATUS_LABEL = {
    "edited": " · edited",
    "hidden": " · hidden on Facebook",
    "removed": " · removed on Facebook",
}


def comment_blocks(post: ChatPost) -> list[dict[str, Any]]:
    header: list[dict[str, Any]] = []
    if post.picture_url:
        header.append(
            {"type": "image", "image_url": post.picture_url, "alt_text": post.author or "?"}
        )
    prefix = "↪ " if post.is_reply else ""
    label = STATUS_LABEL.get(post.fb_status or "", "")
    if post.moderation is not None and post.moderation.state:
        label = f" · {post.moderation.state}"  # "hidden by Ines": who moderated it here
    header.append(plain_text(prefix + shorten(_who(post), NAME_MAX) + label))
    body = (
        sections(post.text)
        if post.text.strip()
        else [{"type": "section", "text": mrkdwn("_(no text)_")}]
    )
    blocks: list[dict[str, Any]] = [{"type": "context", "elements": header}, *body]
    if post.kind == "customer" and post.message_id is not None and post.fb_status != "removed":
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Reply"},
                        "action_id": "comment_reply",
                        "value": str(post.message_id),
                    },
                    *moderation_buttons(post),
                ],
            }
        )
    return blocks


MODERATION_BUTTONS = {"hide": "Hide", "unhide": "Unhide", "like": "Like", "delete": "Delete"}
DELETE_CONFIRM = {
    "title": plain_text("Delete on Facebook?"),
    "text": plain_text("The comment is deleted on Facebook. This cannot be undone."),
    "confirm": plain_text("Delete"),
    "deny": plain_text("Cancel"),
    "style": "danger",
}


def moderation_buttons(post: ChatPost) -> list[dict[str, Any]]:
    """Hide / Unhide / Like / Delete of a relayed comment (``comment_{action}``, its message
    id as the value); Delete asks first with Slack's own confirmation."""
    if post.moderation is None or post.message_id is None:
        return []
    out: list[dict[str, Any]] = []
    for action in post.moderation.actions:
        button: dict[str, Any] = {
            "type": "button",
            "text": plain_text(MODERATION_BUTTONS.get(action, action)),
            "action_id": f"comment_{action}",
            "value": str(post.message_id),
        }
        if action == "delete":
            button.update(style="danger", confirm=DELETE_CONFIRM)
        out.append(button)
    return out


def digest_blocks(post: ChatPost) -> list[dict[str, Any]]:
    head = mrkdwn(f"_{len(post.items)} comments arrived together:_")
    blocks: list[dict[str, Any]] = [{"type": "context", "elements": [head]}]
    for item in post.items:
        arrow = "↪ " if item.is_reply else ""
        label = STATUS_LABEL.get(item.fb_status or "", "")
        blocks.extend(sections(f"{arrow}{shorten(_who(item), NAME_MAX)}{label}: {item.text}"))
    return blocks


def post_blocks(post: ChatPost) -> list[dict[str, Any]] | None:
    """All the blocks of a post, in order; ``post_messages`` deals them into messages."""
    if post.kind == "digest":
        return digest_blocks(post)
    if post.kind == "notice" and post.choices:
        # a contact card's choices write first; the others are quick replies
        hint = "Write first" if post.choices[0][1].startswith("w:") else "Quick reply"
        options = [
            {"text": plain_text(shorten(label, 75)), "value": value[:150]}
            for label, value in post.choices[:100]
        ]
        return [
            {"type": "section", "text": mrkdwn(fit(post.text or "…", SECTION_MAX, notice_text))},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "static_select",
                        "action_id": "quick_pick",
                        "placeholder": plain_text(hint),
                        "options": options,
                    }
                ],
            },
        ]
    if post.kind == "notice":
        return None
    return comment_blocks(post)


def post_messages(post: ChatPost) -> list[tuple[str, list[dict[str, Any]] | None]]:
    """(text, blocks) of each message a post needs: one unless its blocks pass Slack's 50,
    then the rest follow in messages that say they continue it."""
    text, blocks = post_text(post), post_blocks(post)
    if blocks is None or len(blocks) <= BLOCKS_MAX:
        return [(text, blocks)]
    per = BLOCKS_MAX - 1
    chunks = [blocks[i : i + per] for i in range(0, len(blocks), per)]
    out: list[tuple[str, list[dict[str, Any]] | None]] = [(text, chunks[0])]
    for n, chunk in enumerate(chunks[1:], start=2):
        mark = f"_continued ({n}/{len(chunks)})_"
        out.append((mark, [{"type": "context", "elements": [mrkdwn(mark)]}, *chunk]))
    return out


def media_blocks(post: ChatPost) -> list[dict[str, Any]]:
    """A post's pictures as image blocks, its other files as links."""
    out: list[dict[str, Any]] = []
    for kind, url in post.media:
        if kind == "image":
            out.append({"type": "image", "image_url": url, "alt_text": f"image from {post.author}"})
        else:
            label = {"video": "🎬 video", "audio": "🔊 audio"}.get(kind, "📎 file")
            out.append({"type": "section", "text": mrkdwn(f"<{escape(url)}|{label}>")})
    return out
