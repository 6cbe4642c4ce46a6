"""`python -m bot demo` is the README's first command: it must keep working."""

from __future__ import annotations

from bot.demo import run_demo


async def test_demo_runs_both_chats_and_exits_zero() -> None:
    lines: list[str] = []
    assert await run_demo(out=lines.append) == 0
    text = "\n".join(lines)
    assert "=== What the staff saw in Telegram ===" in text
    assert "=== What the staff saw in Slack (#support) ===" in text
    assert "under 139560936755999_1001: 'Yes! We make it with oat milk.'" in text
    assert "Demo finished: every step behaved as expected." in text
