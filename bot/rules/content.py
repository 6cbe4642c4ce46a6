"""What a new task looks like: its title, description, assignees and system data. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain import PageInfo, PostInfo
from bot.templates import TITLE_MAX, TaskTemplate, excerpt, render


@dataclass(frozen=True)
class TaskContent:
    title: str
    description: str
    assignees: tuple[str, ...]
    additional_data: str
    tags: tuple[str, ...] = ()


def additional_data(
    *,
    page: PageInfo,
    post: PostInfo | None,
    contact_name: str,
    contact_fb_id: str,
    first_message_at: datetime,
    opened_at: datetime,
) -> str:
    """System data about a task. Built here only; staff cannot edit it."""
    lines = []
    if post is not None:
        lines.append(f"Post: {post.url or post.id}")
    lines.append(f"Page: {page.name} ({page.id})")
    lines.append(f"Customer: {contact_name} (facebook id {contact_fb_id})")
    lines.append(f"First message: {first_message_at:%Y-%m-%d %H:%M} UTC")
    lines.append(f"Task opened: {opened_at:%Y-%m-%d %H:%M} UTC")
    return "\n".join(lines)


def template_values(
    *,
    page: PageInfo,
    post: PostInfo | None,
    contact_name: str,
    first_text: str,
    data: str,
) -> dict[str, str]:
    post_text = post.text if post is not None else ""
    if post is None:
        post_excerpt = f"Message from {contact_name}"
    elif post_text:
        post_excerpt = excerpt(post_text)
    else:
        post_excerpt = f"Post {post.id.rsplit('_', 1)[-1]}"
    post_date = post.created_time.strftime("%Y-%m-%d") if post and post.created_time else ""
    return {
        "post.text": post_text,
        "post.excerpt": post_excerpt,
        "post.url": (post.url or "") if post else "",
        "post.date": post_date,
        "contact.name": contact_name,
        "comment.text": first_text,
        "page.name": page.name,
        "task.additional_data": data,
    }


def task_content(template: TaskTemplate, values: dict[str, str]) -> TaskContent:
    title = " ".join(render(template.title, values).split()).strip(" ·-") or "New task"
    if len(title) > TITLE_MAX:
        title = title[: TITLE_MAX - 1] + "…"
    return TaskContent(
        title=title,
        description=render(template.description, values).strip(),
        assignees=template.assignees,
        additional_data=values["task.additional_data"],
        tags=template.tags,
    )
