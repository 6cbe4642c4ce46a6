"""A server without Telegram does not load aiogram (issue 10, target 5b).

Importing aiogram costs about 50 MB of RSS and seconds of CPU at every start. Each case runs
the real ``serve`` (until it listens, then SIGTERM) or ``check`` in a process of its own, with
the environment scrubbed and only one chat configured, and reports whether aiogram was
loaded when it exited. The Telegram cases show the probe sees aiogram when it is there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('aiogram loaded:', 'aiogram' in sys.modules, flush=True))\n"
    "from bot.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def closed_port() -> int:
    """A local port nothing listens on: every call to the platform is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(tmp_path: Path, chat: str) -> dict[str, str]:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "SYSTEMROOT") if k in os.environ}
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'imports.db'}",
        HOST="127.0.0.1",
        PORT="0",
        SECRET_KEY="imports-secret-key",
        FB_APP_SECRET="imports-app-secret",
        FB_GRAPH_URL=nowhere,
    )
    if chat == "slack":
        env.update(
            SLACK_BOT_TOKEN="xoxb-imports",
            SLACK_SIGNING_SECRET="imports-signing-secret",
            SLACK_API_URL=nowhere + "/api/",
        )
    else:
        # webhook mode: no poller knocking at the closed port while the server runs
        env.update(
            TELEGRAM_BOT_TOKEN="123456:imports-token",
            TELEGRAM_API_URL=nowhere,
            TELEGRAM_WEBHOOK_SECRET="imports-webhook-secret",
            PUBLIC_URL="https://pagedesk.example",
        )
    return env


def run(tmp_path: Path, command: str, chat: str) -> str:
    """Run ``python -m bot <command>`` through the probe; its whole output."""
    log = tmp_path / f"{command}-{chat}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, command],
            env=environment(tmp_path, chat),
            cwd=tmp_path,  # no .env of the developer's is read
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        if command == "serve":
            deadline = time.monotonic() + 60
            while "listening on" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("command", "chat", "loaded"),
    [
        ("serve", "slack", False),
        ("serve", "telegram", True),
        ("check", "slack", False),
        ("check", "telegram", True),
    ],
)
def test_aiogram_is_loaded_only_for_telegram(
    tmp_path: Path, command: str, chat: str, loaded: bool
) -> None:
    output = run(tmp_path, command, chat)
    assert f"aiogram loaded: {loaded}" in output, output
    if command == "serve":
        assert "pagedesk started" in output, output  # the whole start ran, platforms included
