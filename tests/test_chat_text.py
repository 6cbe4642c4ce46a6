"""Text as the chats count and show it: measuring, cutting, rendering, Slack markup to
plain text, and the fakes' parsers. Pure: no server, no database."""

from __future__ import annotations

import pytest

from bot.emulators.slack_blocks import block_errors
from bot.emulators.telegram_markup import MarkupError, parse_html
from bot.platforms.slack import slack_to_plain
from bot.platforms.slack_text import (
    notice_text,
    post_messages,
    post_text,
    root_blocks,
    root_text,
)
from bot.platforms.telegram_text import (
    MESSAGE_MAX,
    WORD_JOINER,
    inert,
    render_edit,
    render_post,
    render_root,
)
from bot.platforms.text import fit, shorten, split, utf16_len
from bot.ports import ChatPost, RootMessage

NASTY = ("& \" ' < > " * 400)[:3000]
EMOJI = "😀"  # outside the BMP: one character, two UTF-16 units


def visible(html: str) -> str:
    return parse_html(html).text


def root(**changes: object) -> RootMessage:
    base: dict[str, object] = {
        "task_id": 7,
        "title": "Pumpkin latte is back! · 2026-11-20",
        "description": "Pumpkin latte is back!",
        "assignees": ("1998627310", "sal"),
        "additional_data": (
            "Post: https://www.facebook.com/1/posts/2\nCustomer: Ann (facebook id u1)"
        ),
        "status": "open",
        "tags": ("vip",),
    }
    base.update(changes)
    return RootMessage(**base)  # type: ignore[arg-type]


# --- measuring and cutting ----------------------------------------------------------------


def test_utf16_counts_astral_characters_twice() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len(EMOJI) == 2
    assert utf16_len("é" + EMOJI * 3) == 7


def test_shorten_keeps_what_fits_and_marks_the_cut() -> None:
    assert shorten("hello", 5) == "hello"
    assert shorten("hello world", 8) == "hello w…"
    assert shorten("hello world", 7) == "hello…"  # no space before the mark
    cut = shorten(EMOJI * 10, 5)
    assert cut == EMOJI * 2 + "…" and utf16_len(cut) <= 5  # never half an emoji


def test_split_keeps_every_character_in_order_and_prefers_word_breaks() -> None:
    text = ("word" + EMOJI + " ") * 2000 + "end"
    pieces = split(text, 3000)
    assert "".join(pieces) == text
    assert all(utf16_len(p) <= 3000 for p in pieces)
    assert all(p.endswith(" ") for p in pieces[:-1])
    assert split("", 10) == [""]
    assert split("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_fit_shortens_before_escaping_so_no_escape_is_cut() -> None:
    def esc(t: str) -> str:
        return t.replace("&", "&amp;")

    out = fit("&" * 100, 50, esc)
    assert utf16_len(out) <= 50
    assert out.endswith("&amp;…") and "&am…" not in out


# --- Telegram -----------------------------------------------------------------------------


def test_inert_text_makes_no_mention_and_no_command_but_reads_the_same() -> None:
    text = "@admin hi /start and a/b, mail ann@example.com https://x.example/a/b"
    out = inert(text)
    assert out.replace(WORD_JOINER, "") == text
    assert "@" + WORD_JOINER + "admin" in out and "/" + WORD_JOINER + "start" in out
    assert "ann@example.com" in out and "https://x.example/a/b" in out and "a/b" in out


def test_root_with_a_post_full_of_markup_characters_parses_and_fits() -> None:
    html = render_root(root(description=NASTY))
    shown = visible(html)
    assert NASTY in shown
    assert utf16_len(shown) <= MESSAGE_MAX


def test_long_description_is_shortened_and_links_to_the_post() -> None:
    url = "https://www.facebook.com/1/posts/2?a=1&b=2"
    html = render_root(root(description="<&>" * 3000, post_url=url))
    parsed = parse_html(html)
    assert utf16_len(parsed.text) <= MESSAGE_MAX
    assert "…" in parsed.text and "full post" in parsed.text
    links = [e["url"] for e in parsed.entities if e["type"] == "text_link"]
    assert url in links
    assert "Status: 🟢 open · task #7" in parsed.text  # the rest of the root survives
    assert "Customer: Ann (facebook id u1)" in parsed.text


def test_root_blocks_and_mentions_are_ours() -> None:
    parsed = parse_html(render_root(root()))
    kinds = {e["type"] for e in parsed.entities}
    assert kinds == {"bold", "text_link", "blockquote"}
    assert "Assignees: 1998627310 @sal" in parsed.text


def test_a_long_comment_goes_out_whole_in_numbered_parts() -> None:
    text = ("Ünïcode " + EMOJI + " & <b>not bold</b> ") * 300
    messages = render_post(ChatPost(kind="customer", author="Ann", text=text))
    assert len(messages) >= 2
    bodies = []
    for n, html in enumerate(messages, start=1):
        shown = visible(html)
        assert utf16_len(shown) <= MESSAGE_MAX
        head = f"Ann ({n}/{len(messages)}): "
        assert shown.startswith(head)
        bodies.append(shown.removeprefix(head))
    assert "".join(bodies).replace(WORD_JOINER, "") == text


def test_a_digest_never_passes_the_limit_and_cuts_no_comment() -> None:
    items = tuple(
        ChatPost(kind="customer", author=f"User {i}", text=("x" * 5000 if i == 3 else f"hi {i}"))
        for i in range(6)
    )
    messages = render_post(ChatPost(kind="digest", author="", text="", items=items))
    shown = [visible(m) for m in messages]
    assert all(utf16_len(s) <= MESSAGE_MAX for s in shown)
    assert shown[0].startswith(f"6 comments arrived together (1/{len(shown)}):")
    everything = "\n".join(shown)
    assert everything.count("x") == 5000
    for i in (0, 1, 2, 4, 5):
        assert f"User {i}: hi {i}" in everything


def test_an_edit_of_a_long_comment_is_one_message_shortened() -> None:
    post = ChatPost(kind="customer", author="Ann", text="y" * 8000, fb_status="removed")
    html = render_edit(post)
    shown = visible(html)
    assert utf16_len(shown) <= MESSAGE_MAX
    assert shown.endswith("…\nremoved on Facebook")
    assert any(e["type"] == "strikethrough" for e in parse_html(html).entities)


def test_customer_markup_is_text_in_telegram() -> None:
    text = '<b>x</b> <a href="https://evil.example">click</a> &amp; @channel /start'
    html = render_post(ChatPost(kind="customer", author="Eve <i>", text=text))[0]
    parsed = parse_html(html)
    assert parsed.text.replace(WORD_JOINER, "") == f"Eve <i>: {text}"
    assert parsed.entities == [{"type": "bold", "offset": 0, "length": len("Eve <i>")}]


def test_a_notice_is_escaped_and_split_when_long() -> None:
    messages = render_post(ChatPost(kind="notice", author="", text="Sal to Ann: " + "<z> " * 3000))
    assert len(messages) == 3
    assert "".join(visible(m) for m in messages) == "Sal to Ann: " + "<z> " * 3000


# --- Slack --------------------------------------------------------------------------------


def test_comment_text_and_author_sit_in_plain_text_and_split_into_sections() -> None:
    text = "<!channel> *bold* <https://evil|click> " + "z" * 8000
    post = ChatPost(kind="customer", author="Eve *x*", text=text, message_id=4)
    [(fallback, blocks)] = post_messages(post)
    assert blocks is not None and not block_errors(blocks)
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == 3
    assert all(s["text"]["type"] == "plain_text" for s in sections)
    assert "".join(s["text"]["text"] for s in sections) == text
    assert blocks[0]["elements"][-1] == {"type": "plain_text", "text": "Eve *x*", "emoji": True}
    assert "<!channel>" not in fallback and "&lt;!channel&gt;" in fallback
    assert "<https://evil|click>" not in fallback


def test_a_post_past_fifty_blocks_continues_in_another_message() -> None:
    post = ChatPost(kind="customer", author="Ann", text="w" * 3000 * 60, message_id=1)
    messages = post_messages(post)
    assert len(messages) == 2
    joined = ""
    for _, blocks in messages:
        assert blocks is not None and not block_errors(blocks)
        joined += "".join(b["text"]["text"] for b in blocks if b["type"] == "section")
    assert joined == "w" * 3000 * 60


def test_a_digest_in_slack_keeps_each_comment_as_text() -> None:
    items = tuple(
        ChatPost(kind="customer", author=f"U{i}", text=f"<!here> {i}" * (400 if i == 1 else 1))
        for i in range(3)
    )
    [(fallback, blocks)] = post_messages(ChatPost(kind="digest", author="", text="", items=items))
    assert blocks is not None and not block_errors(blocks)
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert texts[0] == "U0: <!here> 0" and texts[-1] == "U2: <!here> 2"
    assert "<!here>" not in fallback


def test_slack_root_shortens_header_and_description_and_links_the_post() -> None:
    r = root(title="T" * 200, description="d & <b>" * 1000, post_url="https://fb.example/p?a=1")
    blocks = root_blocks(r)
    assert not block_errors(blocks)
    assert blocks[0]["text"]["text"] == "T" * 149 + "…"
    assert blocks[1]["text"]["type"] == "plain_text"
    assert blocks[1]["text"]["text"].endswith("…")
    assert (
        blocks[2]["elements"][0]["text"] == "<https://fb.example/p?a=1|The whole post on Facebook>"
    )
    assert "<" not in root_text(root(title="<!channel> sale"))


def test_slack_root_with_a_post_full_of_markup_characters_is_valid() -> None:
    blocks = root_blocks(root(description=NASTY))
    assert not block_errors(blocks)
    assert blocks[1]["text"] == {"type": "plain_text", "text": NASTY, "emoji": True}


def test_notices_are_escaped_but_keep_the_acting_staff_mention() -> None:
    assert (
        notice_text("<@W222> to <!channel> Ann: <b>")
        == "<@W222> to &lt;!channel&gt; Ann: &lt;b&gt;"
    )
    assert notice_text("Task <@W1> & co") == "Task &lt;@W1&gt; &amp; co"
    shown = post_text(ChatPost(kind="notice", author="", text="<@W222> to Eve: <!here>"))
    assert shown == "<@W222> to Eve: &lt;!here&gt;"


# --- Slack markup in a staff answer, for Facebook ------------------------------------------

NAMES = {"U123": "sal", "W9": "ines"}


@pytest.mark.parametrize(
    ("markup", "plain"),
    [
        ("See <https://x.example/menu|our menu>", "See our menu (https://x.example/menu)"),
        ("<https://x.example/menu>", "https://x.example/menu"),
        ("<https://x.example|https://x.example>", "https://x.example"),
        ("<http://example.com|example.com>", "example.com"),
        ("<https://example.com/a?b=1&amp;c=2|example.com/a?b=1&amp;c=2>", "example.com/a?b=1&c=2"),
        ("<mailto:a@b.example|a@b.example>", "a@b.example"),
        ("<mailto:a@b.example|write us>", "write us (a@b.example)"),
        ("<@U123>", "@sal"),
        ("<@U123|someone>", "@sal"),
        ("<@U777|pat>", "@pat"),
        ("<@U777>", "@U777"),
        ("<#C123|general>", "#general"),
        ("<#C123>", "#C123"),
        ("<!here>", "@here"),
        ("<!channel>", "@channel"),
        ("<!everyone>", "@everyone"),
        ("<!here|here>", "@here"),
        ("<!subteam^S1|@team>", "@team"),
        ("<!date^1392734382^{date_short}|Feb 18, 2014>", "Feb 18, 2014"),
        ("a &lt;3 &amp; b &gt; c", "a <3 & b > c"),
        ("&amp;lt; stays as typed", "&lt; stays as typed"),
        ("*bold* _it_ ~s~ `code`", "*bold* _it_ ~s~ `code`"),
        ("", ""),
    ],
)
def test_slack_to_plain(markup: str, plain: str) -> None:
    assert slack_to_plain(markup, NAMES.get) == plain


# --- the fakes' parsers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        "<b>open",
        "<b>x</i>",
        "x</b>",
        "<b><i>x</b></i>",
        "<marquee>x</marquee>",
        "<span>x</span>",
        '<a title="x">x</a>',
        "<code><b>x</b></code>",
        "<blockquote><blockquote>x</blockquote></blockquote>",
        "a < b",
        "a > b",
        "fish & chips",
        "&nbsp;",
        "&amp",
        "&#xZZ;",
    ],
)
def test_telegram_html_refused(html: str) -> None:
    with pytest.raises(MarkupError):
        parse_html(html)


def test_telegram_html_accepted() -> None:
    html = (
        "<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s>"
        '<strike>k</strike><del>d</del><span class="tg-spoiler">p</span>'
        '<tg-spoiler>q</tg-spoiler><a href="https://x.example/?a=1&amp;b=2">l</a>'
        '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji><code>c</code>'
        '<pre><code class="language-python">x = 1</code></pre><pre>p</pre>'
        "<blockquote>q</blockquote><blockquote expandable>e</blockquote>"
        "&lt;&gt;&amp;&quot;&#39;&#x1F600;"
    )
    parsed = parse_html(html)
    assert parsed.text.endswith("<>&\"'😀")
    link = next(e for e in parsed.entities if e["type"] == "text_link")
    assert link["url"] == "https://x.example/?a=1&b=2"
    assert any(e["type"] == "pre" and e["length"] == len("x = 1") for e in parsed.entities)
    assert any(e.get("language") == "python" for e in parsed.entities)


def test_telegram_entity_offsets_are_utf16() -> None:
    parsed = parse_html(EMOJI + "<b>x</b>")
    assert parsed.entities == [{"type": "bold", "offset": 2, "length": 1}]


def test_block_kit_limits() -> None:
    def section(n: int) -> dict[str, object]:
        return {"type": "section", "text": {"type": "plain_text", "text": "s" * n}}

    assert block_errors([section(3000)] * 50) == []
    assert block_errors([section(1)] * 51) == [
        "no more than 50 items allowed [json-pointer:/blocks]"
    ]
    assert block_errors([section(3001)]) == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    ]
    assert block_errors([section(0)]) == [
        "must be more than 0 characters [json-pointer:/blocks/0/text/text]"
    ]
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}
    assert block_errors([header]) == [
        "must be less than 151 characters [json-pointer:/blocks/0/text/text]"
    ]
    header_md = {"type": "header", "text": {"type": "mrkdwn", "text": "h"}}
    assert block_errors([header_md]) == [
        "must be a valid enum value [json-pointer:/blocks/0/text/type]"
    ]
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}
    assert block_errors([context]) == [
        "no more than 10 items allowed [json-pointer:/blocks/0/elements]"
    ]
    button = {"type": "button", "text": {"type": "plain_text", "text": "b" * 76}, "action_id": "a"}
    assert block_errors([{"type": "actions", "elements": [button]}]) == [
        "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]"
    ]
    # Slack's "characters" read as UTF-16 units, the stricter reading
    assert block_errors([section(0) | {"text": {"type": "plain_text", "text": EMOJI * 1501}}])
