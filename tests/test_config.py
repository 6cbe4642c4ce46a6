"""Settings: defaults, and one clear line naming the variable for an unusable value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.config import ConfigError, load_settings


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    s = load_settings()
    assert s.database_url == "sqlite+aiosqlite:///./pagedesk.db"
    assert (s.host, s.port) == ("0.0.0.0", 8080)
    assert s.fb_graph_url == "https://graph.facebook.com"
    assert s.fb_api_version == "v26.0"
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.slack_api_url == "https://slack.com/api/"
    assert (
        s.rate_telegram_group_per_min,
        s.rate_telegram_global_per_sec,
        s.rate_slack_channel_per_sec,
        s.rate_fb_page_per_min,
    ) == (20, 30, 1, 30)
    assert not s.telegram_enabled and not s.slack_enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TELEGRAM_BOT_TOKEN": "nonsense"}, "TELEGRAM_BOT_TOKEN: must look like 123456:ABC-DEF"),
        ({"PORT": "99999"}, "PORT: "),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL: must start with sqlite+aiosqlite://"),
        ({"FB_API_VERSION": "26"}, "FB_API_VERSION: must look like v26.0"),
        ({"BOT_ADMINS": "telegram:1,bob"}, "BOT_ADMINS: 'bob' must be telegram:<user id>"),
        ({"TELEGRAM_WEBHOOK_SECRET": "has space"}, "TELEGRAM_WEBHOOK_SECRET: must be 1-256"),
        ({"PUBLIC_URL": "pagedesk.example"}, "PUBLIC_URL: must be an http(s) URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: "),
    ],
)
def test_unusable_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert str(e.value).startswith(expected)
    assert "\n" not in str(e.value)


def test_secret_values_never_appear_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "leaked-secret-value")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "leaked-secret-value" not in str(e.value)


def test_empty_value_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "")
    assert load_settings().telegram_bot_token is None


def test_serve_stops_with_one_line_on_a_bad_value(tmp_path: object) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env={"PORT": "not-a-port", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "configuration error: PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]
