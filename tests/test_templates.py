from __future__ import annotations

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
