"""Block Kit's limits as the Slack Web API enforces them, for the fake Slack.

Slack refuses a message whose blocks break a limit with ``invalid_blocks`` and one
reason per fault, each ending with a JSON pointer to the fault, e.g.
``must be less than 3001 characters [json-pointer:/blocks/1/text/text]``. The numbers are
those of https://docs.slack.dev/reference/block-kit/blocks; lengths are counted in
UTF-16 units, the stricter reading of Slack's "characters".
"""

from __future__ import annotations

from typing import Any

from bot.platforms.text import utf16_len

BLOCKS_MAX = 50
TEXT_MAX = 40_000  # the top-level text; Slack truncates beyond, the fake refuses

BLOCK_TYPES = {
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
}


class Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fault(self, reason: str, pointer: str) -> None:
        self.errors.append(f"{reason} [json-pointer:{pointer}]")

    def length(self, value: Any, pointer: str, most: int, *, least: int = 1) -> None:
        if not isinstance(value, str):
            self.fault("must be a string", pointer)
        elif utf16_len(value) < least:
            self.fault(f"must be more than {least - 1} characters", pointer)
        elif utf16_len(value) > most:
            self.fault(f"must be less than {most + 1} characters", pointer)

    def text(self, obj: Any, pointer: str, most: int, *, plain_only: bool = False) -> None:
        if not isinstance(obj, dict):
            self.fault("must be a text object", pointer)
            return
        kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
        if obj.get("type") not in kinds:
            self.fault("must be a valid enum value", pointer + "/type")
            return
        if "emoji" in obj and obj["type"] != "plain_text":
            self.fault("emoji is only allowed in plain_text", pointer + "/emoji")
        self.length(obj.get("text"), pointer + "/text", most)

    def many(self, items: Any, pointer: str, most: int) -> list[Any]:
        if not isinstance(items, list) or not items:
            self.fault("must provide at least 1 item", pointer)
            return []
        if len(items) > most:
            self.fault(f"no more than {most} items allowed", pointer)
        return items

    def element(self, el: Any, pointer: str) -> None:
        kind = el.get("type") if isinstance(el, dict) else None
        if kind == "button":
            self.text(el.get("text"), pointer + "/text", 75, plain_only=True)
            if "value" in el:
                self.length(el["value"], pointer + "/value", 2000)
            if "url" in el:
                self.length(el["url"], pointer + "/url", 3000)
            if el.get("style", "primary") not in ("primary", "danger"):
                self.fault("must be a valid enum value", pointer + "/style")
        elif kind == "static_select":
            if "placeholder" in el:
                self.text(el["placeholder"], pointer + "/placeholder", 150, plain_only=True)
            for i, option in enumerate(self.many(el.get("options"), pointer + "/options", 100)):
                here = f"{pointer}/options/{i}"
                self.text(option.get("text"), here + "/text", 75, plain_only=True)
                self.length(option.get("value"), here + "/value", 150)
        elif kind == "image":
            self.length(el.get("image_url"), pointer + "/image_url", 3000)
            self.length(el.get("alt_text"), pointer + "/alt_text", 2000)
        elif kind is None:
            self.fault("must be an element", pointer)
        if isinstance(el, dict) and "action_id" in el:
            self.length(el["action_id"], pointer + "/action_id", 255)

    def block(self, block: Any, pointer: str) -> None:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            self.fault("must be a valid block type", pointer + "/type")
            return
        if "block_id" in block:
            self.length(block["block_id"], pointer + "/block_id", 255)
        if kind == "section":
            if "text" not in block and "fields" not in block:
                self.fault("must provide text or fields", pointer)
            if "text" in block:
                self.text(block["text"], pointer + "/text", 3000)
            for i, f in enumerate(block.get("fields") or []):
                self.text(f, f"{pointer}/fields/{i}", 2000)
            if "accessory" in block:
                self.element(block["accessory"], pointer + "/accessory")
        elif kind == "header":
            self.text(block.get("text"), pointer + "/text", 150, plain_only=True)
        elif kind == "context":
            for i, el in enumerate(self.many(block.get("elements"), pointer + "/elements", 10)):
                here = f"{pointer}/elements/{i}"
                if isinstance(el, dict) and el.get("type") == "image":
                    self.element(el, here)
                else:
                    self.text(el, here, 3000)
        elif kind == "actions":
            for i, el in enumerate(self.many(block.get("elements"), pointer + "/elements", 25)):
                self.element(el, f"{pointer}/elements/{i}")
        elif kind == "image":
            self.element(block, pointer)


def block_errors(blocks: Any) -> list[str]:
    """Why Slack would refuse these blocks; empty when it would take them."""
    check = Checker()
    if not isinstance(blocks, list):
        check.fault("must be an array", "/blocks")
        return check.errors
    if len(blocks) > BLOCKS_MAX:
        check.fault(f"no more than {BLOCKS_MAX} items allowed", "/blocks")
    for i, block in enumerate(blocks):
        check.block(block, f"/blocks/{i}")
    return check.errors
