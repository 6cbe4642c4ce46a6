"""Task templates: ``{{variable}}`` patterns, validated when set and rendered per task. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

VARIABLES: Mapping[str, str] = {
    "post.text": "the post's full text",
    "post.excerpt": "the post's first words",
    "post.url": "link to the post",
    "post.date": "the post's date (YYYY-MM-DD)",
    "contact.name": "the commenter's name",
    "comment.text": "the comment that opened the task",
    "page.name": "the Facebook Page's name",
    "task.additional_data": "the system data block (post link, commenter, times)",
}

_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
TITLE_MAX = 128  # Telegram's forum topic name limit


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class TaskTemplate:
    title: str = "{{post.excerpt}} · {{post.date}}"
    description: str = "{{post.text}}"
    assignees: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "description": self.description,
            "assignees": list(self.assignees),
            "tags": list(self.tags),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, object]) -> TaskTemplate:
        default = cls()
        assignees = body.get("assignees") or []
        tags = body.get("tags") or []
        return cls(
            title=str(body.get("title") or default.title),
            description=str(body.get("description", default.description)),
            assignees=tuple(str(a) for a in assignees) if isinstance(assignees, list) else (),
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        )


def check_pattern(pattern: str) -> None:
    """Raise TemplateError naming unknown variables and listing the known ones."""
    if pattern.count("{{") != pattern.count("}}"):
        raise TemplateError("unbalanced {{ }} in the pattern")
    unknown = sorted({m.group(1) for m in _VAR.finditer(pattern)} - set(VARIABLES))
    if unknown:
        known = ", ".join("{{" + v + "}}" for v in VARIABLES)
        raise TemplateError(f"unknown variable {', '.join(unknown)}; known: {known}")


def render(pattern: str, values: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), pattern)


def excerpt(text: str, words: int = 6, limit: int = 60) -> str:
    parts = text.split()
    out = " ".join(parts[:words])
    if len(out) > limit:
        out = out[: limit - 1].rstrip() + "…"
    elif len(parts) > words:
        out += "…"
    return out
