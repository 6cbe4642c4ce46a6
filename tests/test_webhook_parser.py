"""Parsing real delivery payloads from shared/fixtures."""

from __future__ import annotations

import pytest

from bot.domain import CommentEvent, MessengerEvent, PostRemovedEvent
from bot.fb.webhook import MalformedDelivery, parse_delivery
from tests.conftest import load_fixture


def wrap(*changes: object, page: str = "137542570280222") -> dict[str, object]:
    return {"object": "page", "entry": [{"id": page, "time": 1, "changes": list(changes)}]}


def test_real_capture_top_level_comment() -> None:
    [ev] = parse_delivery(load_fixture("fb_feed_delivery_comment_add_toplevel_realcapture.json"))
    assert isinstance(ev, CommentEvent)
    assert (ev.page_id, ev.post_id, ev.comment_id) == (
        "206070979425408",
        "206070979425408_712750021053074",
        "712750021053074_1063824911537852",
    )
    assert (ev.author.id, ev.author.name, ev.text, ev.verb) == (
        "24266381753005180",
        "Wong Tsun-Lok Frank",
        "+1",
        "add",
    )
    assert not ev.is_reply
    assert ev.created_time.timestamp() == 1707211876


def test_reply_edit_remove_and_ignored_items() -> None:
    events = parse_delivery(
        wrap(
            load_fixture("fb_feed_change_comment_add_reply.json"),
            load_fixture("fb_feed_change_comment_edited.json"),
            load_fixture("fb_feed_change_comment_remove.json"),
            load_fixture("fb_feed_change_reaction_add_on_comment.json"),
            load_fixture("fb_feed_change_status_add.json"),
            load_fixture("fb_feed_change_post_remove.json"),
        )
    )
    reply, edited, removed, post_removed = events
    assert isinstance(reply, CommentEvent) and reply.is_reply
    assert isinstance(edited, CommentEvent) and (edited.verb, edited.text) == ("edited", "Great")
    assert isinstance(removed, CommentEvent) and removed.verb == "remove" and removed.text == ""
    assert removed.author.name is None
    assert isinstance(post_removed, PostRemovedEvent)


def test_doc_sample_post_add_is_ignored() -> None:
    [delivery] = load_fixture("fb_feed_delivery_post_add_webhooks_for_pages_doc.json")
    assert parse_delivery(delivery) == []


def test_messenger_messages_and_echoes() -> None:
    item = load_fixture("fb_messenger_messaging_item_text.json")
    echo = load_fixture("fb_messenger_message_echo_doc.json")
    echo_items = echo["entry"][0]["messaging"] if "entry" in echo else [echo]
    body = {
        "object": "page",
        "entry": [{"id": "404217156637689", "time": 1, "messaging": [item, *echo_items]}],
    }
    events = parse_delivery(body)
    first = events[0]
    assert isinstance(first, MessengerEvent)
    assert (first.sender_id, first.mid, first.text) == (
        "1423587017700273",
        "mid.$cAAE1UUyiiwthh0NPrVbVf4HFNDGl",
        "Sharp tools make good work.",
    )
    assert first.timestamp.timestamp() == pytest.approx(1491796363.181)
    assert any(isinstance(e, MessengerEvent) and e.is_echo for e in events[1:])


def test_attachment_only_message_says_what_it_was() -> None:
    body = load_fixture("fb_messenger_entry_attachment_doc.json")
    if "entry" not in body:
        body = {"object": "page", "entry": [body]}
    events = [e for e in parse_delivery(body) if isinstance(e, MessengerEvent)]
    assert events and events[0].text.startswith("[")


@pytest.mark.parametrize(
    "body", [[], {"object": "page"}, {"entry": "x"}, {"object": "user", "entry": []}]
)
def test_not_a_page_delivery(body: object) -> None:
    with pytest.raises(MalformedDelivery):
        parse_delivery(body)
