"""The product's rules, without network or database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot import routing
from bot.domain import CommentEvent, FbUser, MessengerEvent, PageInfo, PostInfo
from bot.routing import MessageView, TaskView
from bot.rules import content as rules_content
from bot.templates import TaskTemplate

PAGE = PageInfo("137542570280111", "Bottender Coffee")
POST = "137542570280111_139560936755999"
T0 = datetime(2026, 11, 20, 9, 31, tzinfo=UTC)


def comment(
    verb: str = "add",
    author: str = "u1",
    cid: str = "c1",
    parent: str | None = None,
    text: str = "hi",
) -> CommentEvent:
    return CommentEvent(PAGE.id, POST, cid, parent or POST, verb, FbUser(author, "Ann"), text, T0)


def msg(
    id: int = 1,
    direction: str = "customer",
    fb_id: str | None = "c1",
    text: str = "hi",
    parent: str | None = POST,
    state: str = "relayed",
) -> MessageView:
    return MessageView(id, direction, fb_id, parent, text, state, POST)


def test_first_comment_on_a_post_opens_a_task() -> None:
    assert routing.route_comment(comment(), PAGE, known=None, open_task=None) == routing.OpenTask()


def test_later_comment_joins_the_open_task() -> None:
    d = routing.route_comment(comment(), PAGE, known=None, open_task=TaskView(7, "open"))
    assert d == routing.JoinTask(7)


def test_a_comment_seen_before_is_ignored() -> None:
    d = routing.route_comment(comment(), PAGE, known=msg(), open_task=TaskView(7, "open"))
    assert isinstance(d, routing.Ignore)


def test_page_echo_of_an_unconfirmed_answer_binds_instead_of_showing() -> None:
    answer = msg(id=9, direction="staff", fb_id=None, text="Thanks!", state="sending")
    d = routing.route_comment(
        comment(author=PAGE.id, cid="c9", text=" Thanks! "),
        PAGE,
        known=None,
        open_task=TaskView(7, "open"),
        unconfirmed_answers=[answer],
    )
    assert d == routing.BindEcho(9)


def test_other_page_comments_show_as_the_page_but_never_open_a_task() -> None:
    by_page = comment(author=PAGE.id, text="Posted by a human admin on Facebook")
    assert routing.route_comment(by_page, PAGE, known=None, open_task=TaskView(7, "open")) == (
        routing.JoinTask(7, as_page=True)
    )
    assert isinstance(
        routing.route_comment(by_page, PAGE, known=None, open_task=None), routing.Ignore
    )


@pytest.mark.parametrize(
    ("verb", "status"), [("hide", "hidden"), ("unhide", "visible"), ("remove", "removed")]
)
def test_hide_unhide_remove_mark_the_relayed_message(verb: str, status: str) -> None:
    d = routing.route_comment(comment(verb=verb), PAGE, known=msg(), open_task=None)
    assert d == routing.MarkRelayed(1, status, None)


def test_edit_updates_text_but_edits_of_unknown_comments_are_ignored() -> None:
    d = routing.route_comment(comment(verb="edited", text="new"), PAGE, known=msg(), open_task=None)
    assert d == routing.MarkRelayed(1, "edited", "new")
    d = routing.route_comment(comment(verb="edited"), PAGE, known=None, open_task=None)
    assert isinstance(d, routing.Ignore)


def test_direct_messages_one_task_per_contact() -> None:
    ev = MessengerEvent(PAGE.id, "psid", PAGE.id, "mid.1", "hello", T0)
    assert routing.route_direct_message(ev, PAGE, known=None, open_task=None) == routing.OpenTask()
    assert routing.route_direct_message(ev, PAGE, known=None, open_task=TaskView(3, "open")) == (
        routing.JoinTask(3)
    )


def test_staff_message_decisions() -> None:
    latest = msg(id=2, fb_id="c2")
    chosen = msg(id=1, fb_id="c1")
    assert routing.route_staff_message(
        "note: internal", explicit_target=None, latest_customer=latest
    ) == routing.Internal("note: internal")
    assert routing.route_staff_message(
        "/close@pagedesk_bot now", explicit_target=None, latest_customer=latest
    ) == routing.Command("close", "now")
    assert routing.route_staff_message(
        "!close", explicit_target=None, latest_customer=latest, command_prefixes="!/"
    ) == routing.Command("close", "")
    assert routing.route_staff_message(
        "Hello", explicit_target=None, latest_customer=latest
    ) == routing.Answer(latest, "Hello")
    assert routing.route_staff_message(
        "Hello", explicit_target=chosen, latest_customer=latest
    ) == routing.Answer(chosen, "Hello")
    # replying to a bot notice or a staff message is not a choice of comment
    assert routing.route_staff_message(
        "Hello", explicit_target=msg(id=5, direction="staff"), latest_customer=latest
    ) == routing.Answer(latest, "Hello")
    assert isinstance(
        routing.route_staff_message("Hello", explicit_target=None, latest_customer=None),
        routing.Refuse,
    )
    assert isinstance(
        routing.route_staff_message("  ", explicit_target=None, latest_customer=latest),
        routing.Refuse,
    )


def test_answer_target_of_a_reply_is_its_top_level_comment() -> None:
    assert routing.comment_reply_target(msg(fb_id="c1", parent=POST)) == "c1"
    assert routing.comment_reply_target(msg(fb_id="c2", parent="c1")) == "c1"


def test_default_task_names_the_post_by_its_first_words_and_date() -> None:
    post = PostInfo(POST, "New autumn menu: pumpkin latte is back! Which one?", None, T0)
    data = rules_content.additional_data(
        page=PAGE,
        post=post,
        contact_name="Ann",
        contact_fb_id="u1",
        first_message_at=T0,
        opened_at=T0,
    )
    values = rules_content.template_values(
        page=PAGE, post=post, contact_name="Ann", first_text="hi", data=data
    )
    content = rules_content.task_content(TaskTemplate(), values)
    assert content.title == "New autumn menu: pumpkin latte is… · 2026-11-20"
    assert content.description == post.text
    assert content.additional_data == data
    assert "Post: 137542570280111_139560936755999" in data
    assert "Customer: Ann (facebook id u1)" in data


def test_post_without_text_still_gets_a_title() -> None:
    values = rules_content.template_values(
        page=PAGE, post=PostInfo(POST, "", None, None), contact_name="Ann", first_text="hi", data=""
    )
    assert rules_content.task_content(TaskTemplate(), values).title == "Post 139560936755999"
