"""Burst benchmark: 1,000 comments on 5 posts against fakes that enforce the platforms' limits.

    .venv/bin/python bench/burst.py                    # Telegram's real 20 a minute per group
    .venv/bin/python bench/burst.py --group-per-min 120  # a quicker run

Reports the time to drain (every comment visible to staff) against the limit's own minimum
for the sends that were needed, the 429s received (goal: zero), comments lost (must be zero)
and duplicated (must be zero).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.emulators.stage import OPERATOR_TELEGRAM_ID, Stage, comment_delivery

PAGE = "137542570280111"
CHAT = -1002271335705
ADMIN = {"id": OPERATOR_TELEGRAM_ID, "is_bot": False, "first_name": "Admin"}  # BOT_ADMINS
LINE = re.compile(r"^(?:↪ )?(?:<b>)?P(\d+) U\d+(?:</b>)?: (\d+)$")


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        st = Stage(
            f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            rate_telegram_group_per_min=args.group_per_min,
            rate_telegram_global_per_sec=30,
            telegram_options={
                "enforce_limits": True,
                "group_per_min": args.group_per_min,
                "global_per_sec": 30,
            },
        )
        await st.start()
        try:
            return await burst(st, args)
        finally:
            await st.stop()


async def burst(st: Stage, args: argparse.Namespace) -> int:
    st.graph.add_page(PAGE, "Bench Page", "bench-token")
    st.telegram.add_chat(CHAT, "Bench", admins={1})
    await st.telegram_update(st.telegram.user_message(CHAT, ADMIN, f"/connect {PAGE}"))
    await st.settled()
    connect_sends = len(st.telegram.called("sendMessage"))

    total = args.posts * args.per_post
    bodies = [
        comment_delivery(PAGE, f"{PAGE}_{p}", f"{p}_{n}", (f"u{n}", f"P{p} U{n % 9}"), str(n))
        for n in range(args.per_post)
        for p in range(args.posts)
    ]
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    started = time.monotonic()

    async def sender() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            resp = await st.deliver_facebook(body)
            assert resp.status == 200

    await asyncio.gather(*(sender() for _ in range(args.concurrency)))
    intake = time.monotonic() - started

    def seen() -> Counter[tuple[int, int]]:
        got: Counter[tuple[int, int]] = Counter()
        for m in st.telegram.chats[CHAT].messages.values():
            if m.get("from", {}).get("is_bot") and "message_thread_id" in m:
                for line in m.get("text", "").splitlines():
                    hit = LINE.match(line.strip())
                    if hit:
                        got[(int(hit.group(1)), int(hit.group(2)))] += 1
        return got

    deadline = started + args.timeout
    while len(seen()) < total and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a fake
        await asyncio.sleep(0.2)
    drained = time.monotonic() - started
    got = seen()
    sends = len(st.telegram.called("sendMessage")) + len(st.telegram.called("createForumTopic"))
    accepted = sends - st.telegram.throttled - connect_sends
    limit = args.group_per_min

    def window_minimum(n: int) -> float:
        """The least time n sends take under the limit: a window's worth at once, then
        one window per further window's worth."""
        return math.ceil((n - limit) / limit) * 60.0 if n > limit else 0.0

    minimum = window_minimum(accepted)
    one_each = window_minimum(total + 2 * args.posts)
    lost = total - len(got)
    dups = sum(c - 1 for c in got.values())
    print(f"comments:            {total} on {args.posts} posts")
    print(f"intake:              {intake:.2f} s ({total / intake:.0f} deliveries/s, all 200)")
    print(f"chat sends accepted: {accepted} (digests of waiting comments included)")
    print(f"time to drain:       {drained:.1f} s")
    print(f"limit's own minimum: {minimum:.1f} s for {accepted} sends at {limit:g}/min/group")
    print(f"one message each:    {one_each:.0f} s minimum (the lag digests avoid)")
    print(f"429s received:       {st.telegram.throttled}")
    print(f"lost:                {lost}")
    print(f"duplicates:          {dups}")
    return 0 if lost == 0 and dups == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--posts", type=int, default=5)
    ap.add_argument("--per-post", type=int, default=200)
    ap.add_argument("--group-per-min", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=900)
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
