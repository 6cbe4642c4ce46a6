"""``python -m bot serve|demo|check`` (also the ``pagedesk`` console script)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from bot.config import ConfigError, Settings, load_settings
from bot.logs import setup_logging


async def serve(settings: Settings) -> int:
    from bot.app import create_app

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    try:
        await runner.setup()  # runs migrations before anything listens
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        await runner.cleanup()
        return 2
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    host, port = runner.addresses[0][:2]  # the real port when PORT=0
    logging.getLogger("bot").info("listening on %s:%s", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("bot").info("stopping: finishing work in flight")
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pagedesk",
        description="Facebook Page comments and messages as tasks in Telegram and Slack.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP server and background workers")
    demo = sub.add_parser("demo", help="a scripted conversation against local emulators")
    demo.add_argument("--quiet", action="store_true", help="print only the transcript")
    sub.add_parser("check", help="check the configuration against each platform")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from bot.demo import run_demo

        setup_logging("WARNING")
        return asyncio.run(run_demo())

    try:
        settings = load_settings()
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if args.command == "serve":
        return asyncio.run(serve(settings))
    from bot.check import run_check

    return asyncio.run(run_check(settings))


if __name__ == "__main__":
    sys.exit(main())
