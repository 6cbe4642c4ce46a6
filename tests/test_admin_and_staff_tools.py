"""Issue 4 end to end: templates, assignees, contacts, merges and quick replies."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.emulators.stage import Stage, comment_delivery
from bot.storage.models import Contact, Template
from tests.conftest import ADMIN, AGENT, CHAT_ID, PAGE_ID, PAGE_TOKEN
from tests.helpers import general_texts, only_topic, plain, thread_texts, topics

POST_A = f"{PAGE_ID}_1001"
POST_B = f"{PAGE_ID}_1002"


async def admin_says(st: Stage, text: str, thread: int | None = None) -> str:
    await st.telegram_update(st.telegram.user_message(CHAT_ID, ADMIN, text, thread_id=thread))
    await st.settled()
    return general_texts(st)[-1] if thread is None else thread_texts(st, thread)[-1]


async def staff_says(st: Stage, text: str, thread: int) -> str:
    await st.telegram_update(st.telegram.user_message(CHAT_ID, AGENT, text, thread_id=thread))
    await st.settled()
    return thread_texts(st, thread)[-1]


async def comment(st: Stage, post: str, cid: str, who: tuple[str, str], text: str) -> None:
    await st.deliver_facebook(comment_delivery(PAGE_ID, post, cid, who, text))
    await st.settled()


async def test_task_template_shapes_new_tasks_and_notifies_assignees(connected: Stage) -> None:
    reply = await admin_says(
        connected, "/template task title {{contact.name}} asks on {{page.name}}"
    )
    assert reply.startswith("Saved.")
    await admin_says(connected, f"/template task assignees {AGENT['id']} @sal")
    await admin_says(connected, "/template task description Comment: {{comment.text}}")
    await admin_says(connected, "/template task tags vip")
    connected.graph.add_post(POST_A, "Autumn menu", "2026-11-20T09:31:16+0000")
    await comment(connected, POST_A, "c_1", ("u1", "Ann"), "Vegan?")
    topic = only_topic(connected)
    assert topics(connected)[topic]["name"] == "Ann asks on Bottender Coffee"
    root_msg = connected.telegram.thread_messages(CHAT_ID, topic)[0]["text"]
    assert f'<a href="tg://user?id={AGENT["id"]}">{AGENT["id"]}</a> @sal' in root_msg
    assert "Comment: Vegan?" in plain(root_msg) and "#vip" in root_msg
    [dm] = connected.telegram.private
    assert int(dm["chat_id"]) == AGENT["id"]
    assert (
        dm["text"]
        == f"New task for you: Ann asks on Bottender Coffee\nhttps://t.me/c/2271335705/{topic}"
    )


async def test_bad_template_input_changes_nothing_and_names_known_variables(
    connected: Stage,
) -> None:
    reply = await admin_says(connected, "/template task title Hi {{customer}}")
    assert reply.startswith("Nothing changed: unknown variable customer; known: {{post.text}}")
    async with connected.c.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Template)) == 0
    show = await admin_says(connected, "/template show")
    assert "Task title: {{post.excerpt}} · {{post.date}}" in show  # the default
    assert "{{task.additional_data}}" in await admin_says(connected, "/template help")


async def test_non_admins_cannot_change_templates_or_quick_replies(connected: Stage) -> None:
    await connected.telegram_update(
        connected.telegram.user_message(CHAT_ID, AGENT, "/template task title X")
    )
    await connected.telegram_update(
        connected.telegram.user_message(CHAT_ID, AGENT, "/quick add hi Hello")
    )
    await connected.telegram_update(connected.telegram.user_message(CHAT_ID, AGENT, "/quick list"))
    await connected.settled()
    assert general_texts(connected)[-3:] == [
        "Only admins of this chat can change templates.",
        "Only admins can add quick replies.",
        "Bottender Coffee has no quick replies yet: /quick add <name> <text>.",
    ]


async def test_contact_is_found_again_and_the_card_lists_every_task(connected: Stage) -> None:
    await admin_says(connected, "/template contact group Autumn campaign")
    connected.graph.add_profile("u1", "Ann", "https://pics.example/ann.jpg")
    await comment(connected, POST_A, "c_1", ("u1", "Ann"), "Vegan?")
    await comment(connected, POST_B, "c_2", ("u1", "Ann L."), "And this one?")
    async with connected.c.db.read() as s:
        contacts = list(await s.scalars(select(Contact)))
    assert [(c.fb_id, c.name, c.fields) for c in contacts] == [
        ("u1", "Ann L.", {"group": "Autumn campaign"})
    ]
    first, _ = sorted(topics(connected))
    card = await staff_says(connected, "/contact", first)
    assert card.startswith("👤 Ann L. (contact #1)")
    assert "Facebook: https://www.facebook.com/u1" in card
    assert "Picture: https://pics.example/ann.jpg" in card and "group: Autumn campaign" in card
    assert (
        f"• #1 open: Post 1001 (comments on post {POST_A}) https://t.me/c/2271335705/{first}"
        in card
    )
    assert f"• #2 open: Post 1002 (comments on post {POST_B})" in card


async def test_contact_merge_keeps_each_tasks_channel(connected: Stage) -> None:
    await comment(connected, POST_A, "c_1", ("u1", "Ann"), "Vegan?")
    await comment(connected, POST_B, "c_2", ("u9", "Ann (other account)"), "Me again")
    first, second = sorted(topics(connected))
    reply = await staff_says(connected, "/contact merge 2", first)
    assert reply.startswith("Merged contact #2 (Ann (other account)) into #1 (Ann)")
    card = await staff_says(connected, "/contact", second)
    assert card.startswith("👤 Ann (contact #1)")
    assert "#1 open" in card and "#2 open" in card
    assert "https://www.facebook.com/u9 (contact #2, Ann (other account))" in card
    # answers still go to each task's own comments
    await staff_says(connected, "Hi from A", first)
    await staff_says(connected, "Hi from B", second)
    assert [(c.parent_id, c.message) for c in connected.graph.comments] == [
        ("c_1", "Hi from A"),
        ("c_2", "Hi from B"),
    ]
    assert "already on this card" in await staff_says(connected, "/contact merge 2", first)
    assert "There is no contact #99" in await staff_says(connected, "/contact merge 99", first)


async def test_quick_reply_fills_variables_and_reaches_facebook(connected: Stage) -> None:
    connected.graph.add_post(
        POST_A, "Autumn menu", "2026-11-20T09:31:16+0000", url="https://fb.example/p/1001"
    )
    added = await admin_says(
        connected, "/quick add thanks Thanks {{contact.name}}! Details: {{post.url}}"
    )
    assert added == "Added the quick reply thanks."
    assert (await admin_says(connected, "/quick add bad Hi {{nope}}")).startswith(
        "Nothing changed: unknown variable nope"
    )
    await comment(connected, POST_A, "c_1", ("u1", "Ann"), "Vegan?")
    topic = only_topic(connected)
    await staff_says(connected, "/quick thanks", topic)
    [posted] = connected.graph.comments
    assert (posted.parent_id, posted.message, posted.token) == (
        "c_1",
        "Thanks Ann! Details: https://fb.example/p/1001",
        PAGE_TOKEN,
    )
    unknown = await staff_says(connected, "/quick nothing", topic)
    assert unknown == "No quick reply 'nothing'. Known: thanks."


async def test_quick_reply_from_inline_buttons(connected: Stage) -> None:
    await admin_says(connected, "/quick add hours We open at 8.")
    await comment(connected, POST_A, "c_1", ("u1", "Ann"), "When do you open?")
    topic = only_topic(connected)
    await staff_says(connected, "/quick", topic)
    menu = connected.telegram.thread_messages(CHAT_ID, topic)[-1]
    [send] = connected.telegram.called("sendMessage")[-1:]
    buttons = send.params["reply_markup"]["inline_keyboard"]
    assert buttons == [[{"text": "hours", "callback_data": "q:1:hours"}]]
    update = {
        "update_id": 777001,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "chat_instance": "-1",
            "data": "q:1:hours",
            "from": AGENT,
            "message": {**menu, "chat": {"id": CHAT_ID, "type": "supergroup"}},
        },
    }
    assert (await connected.telegram_update(update)).status == 200
    await connected.settled()
    assert [(c.parent_id, c.message) for c in connected.graph.comments] == [
        ("c_1", "We open at 8.")
    ]
    assert connected.telegram.called("answerCallbackQuery")
    assert thread_texts(connected, topic)[-1] == "Ines to Ann: We open at 8."


async def test_merged_task_later_comments_join_the_surviving_task(connected: Stage) -> None:
    await comment(connected, POST_A, "c_1", ("u1", "Ann"), "First post")
    await comment(connected, POST_B, "c_2", ("u1", "Ann"), "Second post")
    first, second = sorted(topics(connected))
    assert (await staff_says(connected, "/merge 2", first)).startswith("Task #2")
    assert topics(connected)[second]["closed"] is True
    await comment(connected, POST_B, "c_3", ("u1", "Ann"), "More on the second post")
    assert thread_texts(connected, first)[-1] == "Ann: More on the second post"
    assert len(topics(connected)) == 2
    await staff_says(connected, "Answer", first)
    assert [c.parent_id for c in connected.graph.comments] == ["c_3"]
    assert "merged into #1" in await staff_says(connected, "/reopen", second)
