"""Intake benchmark: signed Facebook deliveries per second, each stored durably (SQLite,
WAL, synchronous=FULL) before its 200, with the worker processing behind.

    .venv/bin/python bench/intake.py --deliveries 5000 --concurrency 64

Group commit is what this measures: deliveries that arrive while a commit runs are written
together in the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.emulators.stage import APP_SECRET, Stage, comment_delivery
from bot.fb.signature import sign

PAGE = "137542570280111"


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        st = Stage(f"sqlite+aiosqlite:///{Path(tmp) / 'intake.db'}")
        await st.start()
        try:
            bodies = [
                json.dumps(
                    comment_delivery(PAGE, f"{PAGE}_{i % 50}", f"c{i}", (f"u{i}", "U"), "hi")
                ).encode()
                for i in range(args.deliveries)
            ]
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for b in bodies:
                queue.put_nowait(b)
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def sender() -> int:
                    ok = 0
                    while not queue.empty():
                        body = queue.get_nowait()
                        async with http.post(
                            st.url + "/webhooks/facebook",
                            data=body,
                            headers={
                                "Content-Type": "application/json",
                                "X-Hub-Signature-256": sign(APP_SECRET, body),
                            },
                        ) as r:
                            await r.read()
                            ok += r.status == 200
                    return ok

                started = time.monotonic()
                oks = await asyncio.gather(*(sender() for _ in range(args.concurrency)))
                elapsed = time.monotonic() - started
            print(f"deliveries:   {args.deliveries} signed, {args.concurrency} at a time")
            print(f"acknowledged: {sum(oks)} (200 after each was committed)")
            print(f"elapsed:      {elapsed:.2f} s")
            print(f"throughput:   {args.deliveries / elapsed:.0f} deliveries/s")
        finally:
            await st.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--deliveries", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
