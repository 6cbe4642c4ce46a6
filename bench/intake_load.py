"""Intake under load (issue 10, target 3): signed deliveries a second that the real server
acknowledges while it processes them, against a bare aiohttp endpoint that verifies and
parses the same bodies and stores nothing. Both under wrk, in one run.

    .venv/bin/python bench/intake_load.py                     # 15 s each (3 rounds), 32 connections
    .venv/bin/python bench/intake_load.py --duration 30 --connections 64
    .venv/bin/python bench/intake_load.py --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/b

Needs wrk (``apt-get install wrk``; CI does not). The server is ``python -m bot serve`` set up
as bench/e2e.py does it (the Page connected, 50 tasks open, the fake Telegram behind it,
rate limits out of the way): every delivery is a comment on one of the 50 posts, stored
before its 200, and the inbox worker and the outbox keep handling them during the run. The
bare endpoint (``--bare``, a process of its own started by this script) checks the
signature and the content type, parses the JSON and then the delivery
(``bot.fb.webhook.parse_delivery``), and answers 200.

Lua in wrk has no HMAC: the bodies (each one unique) are signed here beforehand, one
``<signature> <body>`` a line, and bench/intake_wrk.lua cycles through them; each round
against the server starts after the bodies the ones before sent. The duration is cut in
``--rounds`` (3) taken in turn, server then bare endpoint, so that a machine whose speed
drifts during the run (a shared one does) weighs on both alike; the server is stopped
(SIGSTOP) during the bare endpoint's rounds, so that its backlog does not take the bare
endpoint's core. Processing's seconds on the server's event loop during its rounds come
from its /metrics. Target: the server at ≥ 0.5× the bare endpoint's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import (
    ADMIN_ID,
    CHAT,
    PAGE,
    PAGE_TOKEN,
    SECRET,
    TG_TOKEN,
    USER_TOKEN,
    Child,
    TimedTelegram,
    base_env,
    cpu_seconds,
    delivery,
    prepare,
    reset_postgres,
    serve_until_signalled,
    server_env,
    while_alive,
)

from bot.emulators.graph import FakeGraph
from bot.fb.signature import sign, verify
from bot.fb.webhook import MalformedDelivery, parse_delivery

HERE = Path(__file__).resolve().parent
LUA = HERE / "intake_wrk.lua"
SCRIPT = str(Path(__file__).resolve())


def write_bodies(path: Path, count: int, posts: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            body = delivery(i % posts, i)
            out.write(f"{sign(SECRET, body)} {body.decode()}\n")


async def wrk(args: argparse.Namespace, url: str, bodies: Path, first: int = 0) -> dict[str, int]:
    proc = await asyncio.create_subprocess_exec(
        args.wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration / args.rounds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url + "/webhooks/facebook",
        "--",
        str(bodies),
        str(args.threads),
        str(first),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: the server is gone
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    hit = re.search(r"^RESULT (.*)$", text, re.M)
    if proc.returncode != 0 or hit is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{text}")
    return {k: int(v) for k, v in (kv.split("=") for kv in hit.group(1).split())}


def show(name: str, r: dict[str, int]) -> float:
    rate = r["requests"] / (r["duration_us"] / 1e6)
    errors = sum(r[k] for k in ("connect", "read", "write", "timeout"))
    print(
        f"{name:<9} {rate:7.0f} req/s  ({r['requests']} in {r['duration_us'] / 1e6:.1f} s; "
        f"latency p50 {r['p50_us'] / 1000:.1f} ms p99 {r['p99_us'] / 1000:.1f} ms; "
        f"{r['non2xx']} not 2xx, {errors} socket errors"
        + (", BODIES RAN OUT: some were sent twice" if r["wrapped_threads"] else "")
        + ")",
        flush=True,
    )
    return rate


async def run(args: argparse.Namespace) -> int:
    work = Path(args.workdir)
    bodies = work / "bodies.txt"
    started = time.monotonic()
    write_bodies(bodies, args.bodies, args.posts)
    print(
        f"load:      wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"{args.bodies} unique signed bodies ({bodies.stat().st_size / 1e6:.0f} MB, made in "
        f"{time.monotonic() - started:.1f} s); {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, {'PostgreSQL' if args.postgres else 'SQLite'}",
        flush=True,
    )
    graph, tg = FakeGraph(user_token=USER_TOKEN), TimedTelegram(token=TG_TOKEN)
    await graph.start()
    await tg.start()
    graph.add_page(PAGE, "Bench Page", PAGE_TOKEN)
    tg.add_chat(CHAT, "Bench", admins={ADMIN_ID})
    if args.postgres:
        await reset_postgres(args.postgres)
    server = Child(
        [sys.executable, "-m", "bot", "serve"],
        server_env(tg, graph, args, "intake"),
        work / "serve.log",
    )
    bare = Child(
        [sys.executable, SCRIPT, "--bare"],
        base_env(tg, graph, work / "unused.db"),
        work / "bare.log",
    )
    served: list[dict[str, int]] = []
    bared: list[dict[str, int]] = []
    try:
        async with aiohttp.ClientSession() as http:
            await server.start()
            await bare.start()
            try:
                await prepare(server, tg, http, args)
                await asyncio.sleep(1.0)
                shown0, cpu0 = len(tg.shown), cpu_seconds(server.pid)
                sent, spent = 0, 0.0
                # Rounds in turn, so that a machine that gets slower or faster during the run
                # (a shared one does) weighs on both sides alike. The server is stopped
                # (SIGSTOP) while the bare endpoint runs: its backlog must not take the
                # bare endpoint's core.
                for _ in range(args.rounds):
                    spent -= await processing_seconds(http, server.url)
                    first = sent % args.bodies  # past the end: bodies the server has
                    served.append(await while_alive(server, wrk(args, server.url, bodies, first)))
                    spent += await processing_seconds(http, server.url)
                    # and the requests still in flight when wrk stopped (not counted)
                    sent += served[-1]["requests"] + args.connections
                    served[-1]["wrapped_threads"] += sent > args.bodies
                    os.kill(server.pid, signal.SIGSTOP)
                    try:
                        bared.append(await wrk(args, bare.url, bodies))
                    finally:
                        os.kill(server.pid, signal.SIGCONT)
                    # a step of processing that the stop cut in two ends now, long; the
                    # next round counts from after it
                    await asyncio.sleep(0.2)
                handled = len(tg.shown) - shown0
                cpu = cpu_seconds(server.pid) - cpu0
            finally:
                await server.stop()
                await bare.stop()
    finally:
        await graph.stop()
        await tg.stop()
    server_rate = show("server", total(served))
    busy = sum(r["duration_us"] for r in served) / 1e6
    print(
        f"          while it took them: {handled} comments reached the chat; server CPU "
        f"{cpu:.1f} s in its {busy:.1f} s of rounds (and {0.2 * args.rounds:.1f} s of pauses "
        f"between), of which processing {spent:.1f} s on the event loop",
        flush=True,
    )
    bare_rate = show("bare", total(bared))
    ratio = server_rate / bare_rate
    print(
        "rounds:    "
        + ", ".join(f"{rate(s):.0f}/{rate(b):.0f}" for s, b in zip(served, bared, strict=True))
        + " req/s (server/bare)"
    )
    print(f"ratio:     {ratio:.2f} of the bare endpoint's rate (target ≥ 0.5)")
    return 0


def rate(r: dict[str, int]) -> float:
    return r["requests"] / (r["duration_us"] / 1e6)


def total(rounds: list[dict[str, int]]) -> dict[str, int]:
    """The rounds as one run: counts added up, latencies the worst round's."""
    out = {k: sum(r[k] for r in rounds) for k in rounds[0]}
    for k in ("p50_us", "p99_us"):
        out[k] = max(r[k] for r in rounds)
    return out


async def processing_seconds(http: aiohttp.ClientSession, url: str) -> float:
    """``pagedesk_processing_seconds_total`` from the server's /metrics."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    hit = re.search(r"^pagedesk_processing_seconds_total (\S+)$", text, re.M)
    return float(hit.group(1)) if hit else float("nan")


# --- the bare endpoint, a process of its own --------------------------------------------


async def bare_endpoint() -> None:
    secret = os.environ["FB_APP_SECRET"]

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        if not verify(secret, raw, request.headers.get("X-Hub-Signature-256")):
            return web.Response(status=403, text="bad signature")
        if request.content_type != "application/json":
            return web.Response(status=415, text="expected application/json")
        try:
            parse_delivery(json.loads(raw))
        except (ValueError, MalformedDelivery):
            return web.Response(status=400, text="not a webhook delivery")
        return web.Response(text="EVENT_RECEIVED")

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/webhooks/facebook", handle)
    await serve_until_signalled(app)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of wrk against each")
    ap.add_argument("--rounds", type=int, default=3, help="the duration in rounds, in turn")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk's threads")
    ap.add_argument("--bodies", type=int, default=120_000, help="unique signed bodies")
    ap.add_argument("--posts", type=int, default=50)
    ap.add_argument("--senders", type=int, default=16, help="for opening the tasks")
    ap.add_argument("--wrk", default="wrk", help="the wrk executable")
    ap.add_argument(
        "--postgres",
        metavar="URL",
        help="serve on this PostgreSQL database (postgresql+asyncpg://…), emptied first",
    )
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        asyncio.run(bare_endpoint())
        return 0
    if shutil.which(args.wrk) is None:
        print(f"{args.wrk} not found: apt-get install wrk (or --wrk PATH)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
