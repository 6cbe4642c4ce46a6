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


@dataclass(frozen=True)
class ContactTemplate:
    """What a new contact gets: a group (label) and default fields."""

    group: str = ""
    fields: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"group": self.group, "fields": dict(self.fields)}

    @classmethod
    def from_json(cls, body: Mapping[str, object]) -> ContactTemplate:
        raw = body.get("fields")
        fields = tuple((str(k), str(v)) for k, v in raw.items()) if isinstance(raw, dict) else ()
        return cls(group=str(body.get("group") or ""), fields=fields)

    def new_contact_fields(self) -> dict[str, str]:
        out = dict(self.fields)
        if self.group:
            out["group"] = self.group
        return out


TEMPLATE_HELP = (
    "Templates shape each new task and contact of a page.\n"
    "/template show — the current templates\n"
    "/template task title <pattern> — the task's title\n"
    "/template task description <pattern> — the text under the title\n"
    "/template task assignees <user> [<user> …] | none — who is mentioned and notified\n"
    "/template task tags <tag> [<tag> …] | none\n"
    "/template task reset — back to the default\n"
    "/template contact group <label> | none — the group new contacts join\n"
    "/template contact field <name> <value> | <name> - — a default field of new contacts\n"
    "/template contact reset\n"
    "With several pages in this chat, name the page first: /template <page id> task …\n"
    "Patterns use {{variable}}: "
    + ", ".join("{{" + k + "}} (" + v + ")" for k, v in VARIABLES.items())
)


@dataclass(frozen=True)
class TemplateChange:
    """A parsed /template command. ``kind``: show, help, task, contact."""

    kind: str
    page: str | None = None
    field: str = ""
    value: str = ""


def parse_template_command(args: str, page_refs: set[str]) -> TemplateChange:
    """Parse and validate ``/template`` arguments; TemplateError says what is wrong."""
    words = args.split(maxsplit=1)
    page = None
    if words and words[0] in page_refs:
        page = words[0]
        args = words[1] if len(words) > 1 else ""
    head, _, rest = args.strip().partition(" ")
    rest = rest.strip()
    if head in ("", "show"):
        return TemplateChange("show", page)
    if head == "help":
        return TemplateChange("help", page)
    if head not in ("task", "contact"):
        raise TemplateError(f"unknown /template part {head!r}: use task, contact, show or help")
    field, _, value = rest.partition(" ")
    value = value.strip()
    if head == "task":
        if field == "reset":
            return TemplateChange("task", page, "reset")
        if field in ("title", "description"):
            if not value:
                raise TemplateError(f"the {field} pattern is empty")
            check_pattern(value)
            if field == "title" and len(value) > 500:
                raise TemplateError("the title pattern is longer than 500 characters")
            return TemplateChange("task", page, field, value)
        if field in ("assignees", "tags"):
            if not value:
                raise TemplateError(f"name the {field}, or say none")
            return TemplateChange("task", page, field, value)
        raise TemplateError(
            "task takes title, description, assignees, tags or reset; see /template help"
        )
    if field == "reset":
        return TemplateChange("contact", page, "reset")
    if field == "group":
        if not value:
            raise TemplateError("name the group, or say none")
        return TemplateChange("contact", page, "group", value)
    if field == "field":
        name, _, fvalue = value.partition(" ")
        if not name or not fvalue.strip():
            raise TemplateError("usage: /template contact field <name> <value> (or - to remove)")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise TemplateError("a field name is letters, digits, _ and -")
        return TemplateChange("contact", page, "field", f"{name} {fvalue.strip()}")
    raise TemplateError("contact takes group, field or reset; see /template help")


def apply_change(
    task: TaskTemplate, contact: ContactTemplate, change: TemplateChange
) -> tuple[TaskTemplate, ContactTemplate]:
    """The templates after a validated change. Pure."""
    v = change.value
    if change.kind == "task":
        if change.field == "reset":
            return TaskTemplate(), contact
        if change.field == "title":
            return TaskTemplate(v, task.description, task.assignees, task.tags), contact
        if change.field == "description":
            return TaskTemplate(task.title, v, task.assignees, task.tags), contact
        items = () if v.lower() == "none" else tuple(dict.fromkeys(v.replace(",", " ").split()))
        if change.field == "assignees":
            return TaskTemplate(task.title, task.description, items, task.tags), contact
        tags = tuple(t.lstrip("#") for t in items)
        return TaskTemplate(task.title, task.description, task.assignees, tags), contact
    if change.field == "reset":
        return task, ContactTemplate()
    if change.field == "group":
        return task, ContactTemplate("" if v.lower() == "none" else v, contact.fields)
    name, _, value = v.partition(" ")
    fields = dict(contact.fields)
    if value == "-":
        fields.pop(name, None)
    else:
        fields[name] = value
    return task, ContactTemplate(contact.group, tuple(fields.items()))


def describe(page_name: str, task: TaskTemplate, contact: ContactTemplate) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in contact.fields) or "none"
    return (
        f"Templates of {page_name}\n"
        f"Task title: {task.title}\n"
        f"Task description: {task.description or '(empty)'}\n"
        f"Assignees: {' '.join(task.assignees) or 'none'}\n"
        f"Tags: {' '.join('#' + t for t in task.tags) or 'none'}\n"
        f"New contacts: group {contact.group or 'none'}; fields {fields}"
    )
