"""The product's rules, without network or database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot import routing
from bot.domain import Attachment, CommentEvent, FbUser, MessengerEvent, PageInfo, PostInfo
from bot.routing import MessageView, TaskView
from bot.rules import content as rules_content
from bot.rules.access import Actor, binding_refusal, may_bind_page, may_manage_page
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


# --- a task's life and where answers go (rules that moved in from the service) -------------

OPEN = TaskView(1, "open")
CLOSED = TaskView(1, "closed")


def test_a_removed_post_closes_its_open_task_and_nothing_else() -> None:
    assert routing.route_post_removed(OPEN) == routing.CloseTask(
        "The post was removed on Facebook: task closed."
    )
    assert isinstance(routing.route_post_removed(None), routing.Ignore)


def test_close_and_reopen_refusals() -> None:
    assert routing.close_refusal(OPEN) is None
    assert routing.close_refusal(CLOSED) == "This task is already closed."
    assert routing.reopen_refusal(CLOSED, page_here=True, newer_open=None) is None
    assert routing.reopen_refusal(OPEN, page_here=True, newer_open=None) == (
        "This task is already open."
    )
    merged = TaskView(1, "merged", merged_into_id=7)
    assert routing.reopen_refusal(merged, page_here=True, newer_open=None) == (
        "This task was merged into #7: work there."
    )
    assert "no longer connected" in (
        routing.reopen_refusal(CLOSED, page_here=False, newer_open=None) or ""
    )
    assert routing.reopen_refusal(CLOSED, page_here=True, newer_open=9) == (
        "A newer task for this post is open (#9): close it first."
    )


@pytest.mark.parametrize(
    ("other", "in_chat", "other_survivor", "task_survivor", "task", "expected"),
    [
        (None, False, None, 1, OPEN, "There is no task #5 among this chat's Pages."),
        (TaskView(5, "open"), False, 5, 1, OPEN, "There is no task #5 among this chat's Pages."),
        (TaskView(1, "open"), True, 1, 1, OPEN, "That task is already this one."),
        (TaskView(5, "merged"), True, 1, 1, OPEN, "That task is already this one."),
        (TaskView(5, "open"), True, 5, 5, OPEN, "This task was merged into #5: merge there"),
        (TaskView(5, "open"), True, 5, 1, CLOSED, "Reopen this task first"),
        (TaskView(5, "open"), True, 5, 1, OPEN, None),
    ],
)
def test_merge_refusals(
    other: TaskView | None,
    in_chat: bool,
    other_survivor: int | None,
    task_survivor: int,
    task: TaskView,
    expected: str | None,
) -> None:
    refusal = routing.merge_refusal(
        task,
        other,
        5,
        other_in_chat=in_chat,
        other_survivor=other_survivor,
        task_survivor=task_survivor,
    )
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.startswith(expected)


def test_a_contact_card_sees_only_the_chats_pages() -> None:
    tasks = [("t1", "page-a"), ("t2", "page-b"), ("t3", "page-a")]
    assert routing.visible_tasks(tasks, {"page-a"}, lambda t: t[1]) == [
        ("t1", "page-a"),
        ("t3", "page-a"),
    ]


def test_an_answer_goes_where_the_tasks_channel_is() -> None:
    reply = MessageView(1, "customer", "c2", "c1", "hi", "relayed", POST, author_fb_id="u1")
    top = MessageView(2, "customer", "c1", POST, "hi", "relayed", POST, author_fb_id="u1")
    # comments: under the top-level comment (Facebook threads one level deep)
    assert routing.answer_destination(OPEN, reply) == routing.CommentReply("c1")
    assert routing.answer_destination(OPEN, top) == routing.CommentReply("c1")
    dm = MessageView(3, "customer", "m_1", None, "hi", "relayed", None, author_fb_id="psid-9")
    messenger = TaskView(2, "open", channel="messenger")
    assert routing.answer_destination(messenger, dm) == routing.MessengerSend("psid-9")


def test_a_staff_answer_is_refused_once_the_page_left_the_chat() -> None:
    decision = routing.route_staff_message(
        "Hello", explicit_target=None, latest_customer=msg(), page_here=False
    )
    assert decision == routing.Refuse("the Page is no longer connected to this chat")


def test_who_may_bind_and_manage_a_page() -> None:
    stranger = Actor("telegram", "66", is_operator=False, is_chat_admin=True)
    operator = Actor("telegram", "1", is_operator=True, is_chat_admin=False)
    member = Actor("telegram", "2", is_operator=False, is_chat_admin=False)
    assert not may_bind_page(stranger, connected_here=False)  # admin of their own group
    assert may_bind_page(stranger, connected_here=True)  # reconnect where it is
    assert may_bind_page(operator, connected_here=False)
    assert not may_bind_page(member, connected_here=True)
    assert may_manage_page(stranger) and may_manage_page(operator)
    assert not may_manage_page(member)
    refusal = binding_refusal(stranger)
    assert "telegram:66" in refusal and "BOT_ADMINS" in refusal
    anonymous = Actor("telegram", "", is_operator=False, is_chat_admin=True, anonymous=True)
    assert "anonymously" in binding_refusal(anonymous)


# --- issue 12: Messenger's windows, echoes, merged channels, private replies ----------------


def test_messengers_24_hour_rule_and_the_human_agent_tag() -> None:
    def rule(age: timedelta, human: bool = True) -> routing.SendRule | routing.Refuse:
        return routing.messenger_send_rule(T0 - age, T0, written_by_person=human)

    assert rule(timedelta(hours=1)) == routing.SendRule("RESPONSE")
    assert rule(timedelta(hours=24)) == routing.SendRule("RESPONSE")
    assert rule(timedelta(hours=1), human=False) == routing.SendRule("RESPONSE")
    tagged = rule(timedelta(hours=30))
    assert isinstance(tagged, routing.SendRule)
    assert (tagged.messaging_type, tagged.tag) == ("MESSAGE_TAG", "HUMAN_AGENT")
    assert tagged.note and "30 hours" in tagged.note
    quick = rule(timedelta(hours=30), human=False)  # a quick reply is never tagged
    assert isinstance(quick, routing.Refuse) and "quick reply" in quick.reason
    late = rule(timedelta(days=8))
    assert isinstance(late, routing.Refuse) and "8 days old" in late.reason
    assert isinstance(routing.messenger_send_rule(None, T0, written_by_person=True), routing.Refuse)


def test_echoes_are_ours_by_mid_or_metadata_never_by_text() -> None:
    echo = MessengerEvent(PAGE.id, PAGE.id, "psid", "mid.9", "Thanks", T0, is_echo=True)
    task = TaskView(3, "open", channel="messenger")
    pending = MessageView(7, "staff", None, None, "Thanks", "sending", None)
    ours = replace(echo, metadata=routing.send_metadata(7))
    assert routing.route_direct_message(
        ours, PAGE, known=None, open_task=task, unconfirmed_answers=[pending]
    ) == routing.BindEcho(7)
    assert isinstance(
        routing.route_direct_message(ours, PAGE, known=None, open_task=task), routing.Ignore
    )
    # the same text without our marker: a person wrote it in the Page's inbox
    assert routing.route_direct_message(
        echo, PAGE, known=None, open_task=task, unconfirmed_answers=[pending]
    ) == routing.JoinTask(3, as_page=True)
    other_app = replace(echo, app_id="42")
    assert isinstance(
        routing.route_direct_message(other_app, PAGE, known=None, open_task=task, our_app_id="42"),
        routing.Ignore,
    )


def test_an_echo_of_one_of_an_answers_files_names_that_file() -> None:
    assert routing.send_metadata(7) == "pagedesk:7"
    assert routing.send_metadata(7, 1) == "pagedesk:7:1"
    assert (routing.our_send_id("pagedesk:7:1"), routing.our_send_part("pagedesk:7:1")) == (7, 1)
    assert (routing.our_send_id("pagedesk:7"), routing.our_send_part("pagedesk:7")) == (7, None)
    for other in ("pagedesk:7:x", "pagedesk::1", "other:7:1", None):
        assert routing.our_send_id(other) is None and routing.our_send_part(other) is None
    echo = MessengerEvent(
        PAGE.id, PAGE.id, "psid", "mid.9", "", T0, is_echo=True, metadata="pagedesk:7:1"
    )
    task = TaskView(3, "open", channel="messenger")
    # kept on the file, also when the answer's text came back before (no longer unconfirmed)
    assert routing.route_direct_message(echo, PAGE, known=None, open_task=task) == (
        routing.BindEcho(7, part=1)
    )


def test_an_answer_after_a_merge_takes_the_surviving_tasks_channel() -> None:
    dm = MessageView(3, "customer", "m_1", None, "hi", "relayed", None, author_fb_id="psid-9")
    top = MessageView(2, "customer", "c1", POST, "hi", "relayed", POST, author_fb_id="u1")
    comments, messenger = OPEN, TaskView(2, "open", channel="messenger")
    assert routing.answer_destination(comments, dm, top) == routing.CommentReply("c1", True)
    assert routing.answer_destination(messenger, top, dm) == routing.MessengerSend("psid-9", True)
    assert isinstance(routing.answer_destination(messenger, top, None), routing.Refuse)
    assert isinstance(routing.answer_destination(messenger, top, top), routing.Refuse)
    assert routing.rerouted_note(routing.CommentReply("c1")) is None
    assert routing.rerouted_note(routing.MessengerSend("p", True))


def test_a_private_reply_once_per_comment_within_7_days() -> None:
    fresh = replace(msg(), created_at=T0 - timedelta(days=2))
    assert routing.private_reply_refusal(fresh, T0, already_sent=False) is None
    assert "already" in (routing.private_reply_refusal(fresh, T0, already_sent=True) or "")
    old = replace(fresh, created_at=T0 - timedelta(days=10))
    assert "10 days old" in (routing.private_reply_refusal(old, T0, already_sent=False) or "")
    dm = MessageView(3, "customer", "m_1", None, "hi", "relayed", None)
    assert routing.private_reply_refusal(dm, T0, already_sent=False)
    assert routing.private_reply_refusal(None, T0, already_sent=False)


def test_media_to_show_keeps_pictures_and_files_with_a_url() -> None:
    shown = routing.media_to_show(
        [
            Attachment("image", "https://x/p.jpg"),
            Attachment("file", None),
            Attachment("location", "https://maps"),
            Attachment("audio", "https://x/a.mp4"),
        ]
    )
    assert shown == [
        {"type": "image", "url": "https://x/p.jpg"},
        {"type": "audio", "url": "https://x/a.mp4"},
    ]
    assert routing.media_to_show([]) is None


# --- moderation ----------------------------------------------------------------------------


def _comment(
    fb_status: str | None = None, liked: bool = False, **kw: object
) -> routing.CommentState:
    view = routing.MessageView(1, "customer", "c_1", "p_1", "Hi", "relayed", post_id="p_1")
    return routing.CommentState(replace(view, **kw), fb_status, liked)


def test_moderation_offer_follows_the_comment_state() -> None:
    assert routing.moderation_offer(_comment()) == ("hide", "like", "delete")
    assert routing.moderation_offer(_comment("hidden", liked=True)) == ("unhide", "delete")
    assert routing.moderation_offer(_comment("removed")) == ()
    assert routing.moderation_offer(_comment(direction="page")) == ()
    assert routing.moderation_offer(_comment(post_id=None)) == ()  # a Messenger message


def test_moderation_refusals_and_who_may_delete() -> None:
    ok = _comment()
    assert routing.moderation_refusal(ok, "hide", may_delete=False) is None
    assert routing.moderation_refusal(ok, "like", may_delete=False) is None
    assert "admins" in (routing.moderation_refusal(ok, "delete", may_delete=False) or "")
    assert routing.moderation_refusal(ok, "delete", may_delete=True) is None
    assert "not hidden" in (routing.moderation_refusal(ok, "unhide", may_delete=True) or "")
    hidden = _comment("hidden")
    assert "already hidden" in (routing.moderation_refusal(hidden, "hide", may_delete=True) or "")
    gone = _comment("removed")
    assert "no longer on Facebook" in (
        routing.moderation_refusal(gone, "like", may_delete=True) or ""
    )
    assert "reply to a relayed comment" in (
        routing.moderation_refusal(None, "hide", may_delete=True) or ""
    )
    assert "Messenger" in (
        routing.moderation_refusal(_comment(post_id=None), "hide", may_delete=True) or ""
    )
    assert "no longer connected" in (
        routing.moderation_refusal(ok, "hide", may_delete=True, page_here=False) or ""
    )


def test_moderation_results_and_state_lines() -> None:
    assert routing.moderation_result("hide", "edited") == ("hidden", None)
    assert routing.moderation_result("unhide", "hidden") == (None, None)
    assert routing.moderation_result("like", None) == (None, True)
    assert routing.moderation_result("delete", "hidden") == ("removed", None)
    assert routing.moderation_line("hidden", False, "hide", "Ines") == "hidden by Ines"
    assert routing.moderation_line(None, False, "unhide", "Ines") == "unhidden by Ines"
    assert (
        routing.moderation_line("hidden", True, "like", "Bo")
        == "hidden on Facebook · liked as the Page by Bo"
    )
    assert routing.moderation_line("removed", True, "delete", "Sal") == (
        "deleted on Facebook by Sal · liked as the Page"
    )
    assert routing.moderation_line("hidden", False, None, None) is None


def test_instagram_media_ids_are_numbers_alone() -> None:
    assert routing.is_instagram_media("17895695668004550")
    assert not routing.is_instagram_media("137542570280111_139560936755999")
    assert not routing.is_instagram_media(None)


def test_writing_first_goes_through_the_channels_task_within_messengers_rules() -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    dm = MessageView(7, "customer", "mid.1", None, "hi", "relayed", author_fb_id="psid")
    comment = MessageView(8, "customer", "c_1", "p_1", "hi", "relayed", post_id="p_1")
    open_dm = TaskView(2, "open", channel="messenger")
    closed = TaskView(1, "closed")
    rule = routing.write_first
    assert rule("messenger", dm, open_dm, open_on_post=None, last_in_messenger=now, now=now) == (
        routing.WriteFirst(2, 7)
    )
    old = now - timedelta(days=8)
    refused = rule("messenger", dm, open_dm, open_on_post=None, last_in_messenger=old, now=now)
    assert isinstance(refused, routing.Refuse) and "8 days old" in refused.reason
    assert isinstance(
        rule("messenger", None, None, open_on_post=None, last_in_messenger=None, now=now),
        routing.Refuse,
    )
    newer = TaskView(5, "open")
    assert rule(
        "comments", comment, closed, open_on_post=newer, last_in_messenger=None, now=now
    ) == (routing.WriteFirst(5, 8))
    assert rule(
        "comments", comment, closed, open_on_post=None, last_in_messenger=None, now=now
    ) == (routing.WriteFirst(1, 8, reopen=True))


def test_an_answer_with_media_goes_as_one_call_or_several() -> None:
    pic, pdf = ("image", "f1"), ("file", "f2")
    to_dm, to_comment = routing.MessengerSend("psid-9"), routing.CommentReply("c1")
    # Messenger: the text first, then each file, each its own message
    assert routing.answer_calls(to_dm, "Here", [pic, pdf]) == [
        routing.AnswerCall("Here"),
        routing.AnswerCall("", pic, part=0),
        routing.AnswerCall("", pdf, part=1),
    ]
    assert routing.answer_calls(to_dm, "", [pic]) == [routing.AnswerCall("", pic, part=0)]
    assert routing.answer_calls(to_dm, "Hi", []) == [routing.AnswerCall("Hi")]
    # a comment: text and one picture in one call; other files and Instagram refused
    assert routing.answer_calls(to_comment, "Here", [pic]) == [routing.AnswerCall("Here", pic)]
    assert isinstance(routing.answer_calls(to_comment, "x", [pdf]), routing.Refuse)
    assert isinstance(routing.answer_calls(to_comment, "x", [pic, pic]), routing.Refuse)
    assert isinstance(routing.answer_calls(to_comment, "x", [pic], instagram=True), routing.Refuse)


def test_a_staff_picture_is_an_answer_and_refused_where_it_cannot_be_fetched() -> None:
    latest = MessageView(1, "customer", "c1", None, "Hi", "relayed", post_id="p1")
    media = (("image", "f1"),)
    decided = routing.route_staff_message(
        "", explicit_target=None, latest_customer=latest, media=media
    )
    assert decided == routing.Answer(latest, "", media)
    refused = routing.route_staff_message(
        "Look", explicit_target=None, latest_customer=latest, media=media, media_sendable=False
    )
    assert isinstance(refused, routing.Refuse) and "not sent yet" in refused.reason
