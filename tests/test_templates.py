from __future__ import annotations

import re

import pytest

from bot.templates import TaskTemplate, TemplateError, check_pattern, excerpt, render


def test_render_fills_known_variables_and_keeps_spacing_forgiving() -> None:
    assert render(
        "{{ contact.name }} on {{page.name}}", {"contact.name": "Ann", "page.name": "P"}
    ) == ("Ann on P")


def test_unknown_variable_is_refused_with_the_known_list() -> None:
    with pytest.raises(TemplateError) as e:
        check_pattern("Hi {{contact.nmae}}")
    assert "unknown variable contact.nmae" in str(e.value)
    assert "{{contact.name}}" in str(e.value)


def test_unbalanced_braces_are_refused() -> None:
    with pytest.raises(TemplateError):
        check_pattern("Hi {{contact.name")


def test_template_json_round_trip_and_defaults() -> None:
    t = TaskTemplate(title="{{page.name}}", assignees=("@ann", "42"))
    assert TaskTemplate.from_json(t.to_json()) == t
    assert TaskTemplate.from_json({}) == TaskTemplate()


def test_excerpt() -> None:
    assert excerpt("one two three") == "one two three"
    assert excerpt("a b c d e f g h") == "a b c d e f…"
    assert len(excerpt("x" * 500)) == 60


from bot.templates import (  # noqa: E402
    ContactTemplate,
    apply_change,
    parse_template_command,
)


def test_parse_and_apply_task_changes() -> None:
    t, c = TaskTemplate(), ContactTemplate()
    change = parse_template_command("task title {{contact.name}} on {{page.name}}", set())
    t, c = apply_change(t, c, change)
    assert t.title == "{{contact.name}} on {{page.name}}"
    t, c = apply_change(t, c, parse_template_command("task assignees @ann, 42 @ann", set()))
    assert t.assignees == ("@ann", "42")
    t, c = apply_change(t, c, parse_template_command("task tags #vip urgent", set()))
    assert t.tags == ("vip", "urgent")
    t, c = apply_change(t, c, parse_template_command("task assignees none", set()))
    assert t.assignees == ()
    t, c = apply_change(t, c, parse_template_command("task reset", set()))
    assert t == TaskTemplate()


def test_parse_and_apply_contact_changes_and_page_selector() -> None:
    change = parse_template_command("123 contact group VIP customers", {"123"})
    assert (change.page, change.kind, change.field, change.value) == (
        "123",
        "contact",
        "group",
        "VIP customers",
    )
    _, c = apply_change(TaskTemplate(), ContactTemplate(), change)
    _, c = apply_change(TaskTemplate(), c, parse_template_command("contact field source fb", set()))
    assert c.new_contact_fields() == {"source": "fb", "group": "VIP customers"}
    _, c = apply_change(TaskTemplate(), c, parse_template_command("contact field source -", set()))
    assert c.new_contact_fields() == {"group": "VIP customers"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("task title Hi {{contact.nmae}}", "unknown variable contact.nmae"),
        ("task title", "the title pattern is empty"),
        ("task colour red", "task takes title, description, assignees, tags or reset"),
        ("tasks title x", "unknown /template part 'tasks'"),
        ("contact field", "usage: /template contact field"),
        ("contact field bad!name x", "a field name is letters"),
        ("task assignees", "name the assignees, or say none"),
    ],
)
def test_bad_template_commands_are_refused(args: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse_template_command(args, set())


def test_show_and_help_parse() -> None:
    assert parse_template_command("", set()).kind == "show"
    assert parse_template_command("show", set()).kind == "show"
    assert parse_template_command("help", set()).kind == "help"
