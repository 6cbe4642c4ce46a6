"""Acknowledgements before processing (bot/priority.py): what processing's steps cost is
counted, and while deliveries wait for their acknowledgement processing waits its turn.

Waits are checked from below only (a sleep never ends early); how fast things go is for
bench/intake_load.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select

from bot.emulators.stage import Stage, comment_delivery
from bot.intake import Delivery, Intake
from bot.priority import AcksFirst
from bot.storage.db import Database
from bot.storage.models import InboxItem
from tests.conftest import PAGE_ID
from tests.helpers import only_topic, relayed_lines


def hold_the_loop(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _hold(seconds: float) -> None:
    hold_the_loop(seconds)


async def test_metered_counts_the_steps_of_a_task_and_passes_results_and_errors() -> None:
    acks = AcksFirst()

    async def work(fail: bool) -> str:
        hold_the_loop(0.01)  # steps that hold the loop count
        await asyncio.sleep(0.05)  # waiting is not processing
        hold_the_loop(0.01)
        if fail:
            raise ValueError("broken")
        return "done"

    assert await asyncio.create_task(acks.metered(work(False))) == "done"
    assert 0.02 <= acks.processing < 0.05
    with pytest.raises(ValueError, match="broken"):
        await asyncio.create_task(acks.metered(work(True)))


async def test_a_metered_task_is_cancelled_inside_and_cleans_up() -> None:
    acks = AcksFirst()
    cleaned: list[str] = []
    started = asyncio.Event()

    async def work() -> None:
        try:
            started.set()
            await asyncio.sleep(30)
        finally:
            cleaned.append("finally ran")

    task = asyncio.create_task(acks.metered(work()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally ran"]


async def test_a_metered_coroutine_closed_before_its_end_closes_the_one_inside() -> None:
    """A task dropped unfinished is closed when it is collected: the coroutine it drives
    must be closed with it (its ``finally`` runs), not finalized on its own afterwards."""
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append("finally ran")

    driver = AcksFirst().metered(work())
    driver.send(None)  # as a task's first step: now inside the sleep
    driver.close()
    assert cleaned == ["finally ran"]
    # collected in the other order: the inner coroutine finalized first
    inner = work()
    driver = AcksFirst().metered(inner)
    driver.send(None)
    inner.close()
    driver.close()  # and no "cannot reuse already awaited coroutine"
    assert cleaned == ["finally ran"] * 2


async def test_processing_goes_on_at_once_while_few_deliveries_wait() -> None:
    acks = AcksFirst(share=0.1, busy_at=8)
    for _ in range(7):
        acks.arrived()
    await asyncio.create_task(acks.metered(_hold(0.02)))
    await acks.turn()
    assert not acks.busy
    assert acks.deferred == 0.0


async def test_while_deliveries_wait_processing_waits_its_share_then_goes_on() -> None:
    acks = AcksFirst(share=0.1, busy_at=8, hold=0.5)
    started = time.perf_counter()
    for _ in range(8):
        acks.arrived()
    assert acks.busy
    await asyncio.create_task(acks.metered(_hold(0.05)))  # 50 ms of processing
    await acks.turn()
    # the loop is the intake's for 9 × 50 ms after them, cut short when the intake has not
    # been busy for ``hold`` (0.5 s after the eighth delivery): 0.5 s at least
    assert time.perf_counter() - started >= 0.5
    assert acks.deferred > 0
    for _ in range(8):
        acks.answered()
    assert acks.waiting == 0


async def test_processing_waits_no_longer_than_the_intake_stays_busy() -> None:
    acks = AcksFirst(share=0.01, busy_at=1, hold=0.05)
    acks.arrived()
    await asyncio.create_task(acks.metered(_hold(0.05)))  # owes 99 × 50 ms = 5 s
    acks.answered()  # and nothing more arrives
    await asyncio.wait_for(acks.turn(), timeout=2)  # after ``hold``, not after 5 s
    assert acks.deferred < 2


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="share"):
        AcksFirst(share=0)
    with pytest.raises(ValueError, match="share"):
        AcksFirst(share=1.5)


async def test_deliveries_waiting_for_their_commit_make_processing_wait(sqlite_url: str) -> None:
    """The intake counts what waits: while a processing transaction holds the write lock,
    the deliveries that came meanwhile wait, and processing's next turn waits for them."""
    db = Database(sqlite_url)
    await db.migrate()
    acks = AcksFirst(share=0.1, busy_at=8, hold=2.0)
    intake = Intake(db, on_stored=lambda: None, acks=acks)
    intake.start()
    try:
        async with db.write():  # processing's transaction
            submitted = [
                asyncio.create_task(
                    intake.submit_all("facebook", [Delivery(f"k{i}", "{}", "facebook:1")])
                )
                for i in range(10)
            ]
            await asyncio.sleep(0.05)
            assert acks.waiting == 10 and acks.busy
            charged = time.perf_counter()
            await asyncio.create_task(acks.metered(_hold(0.05)))  # owes 9 × 50 ms after it
        await asyncio.gather(*submitted)
        assert acks.waiting == 0
        await acks.turn()  # the intake was busy within the last 2 s: processing owes
        assert time.perf_counter() - charged >= 0.5
    finally:
        await intake.close()
        async with db.read() as s:
            stored = await s.scalar(select(func.count()).select_from(InboxItem))
        await db.close()
    assert stored == 10


async def test_the_server_counts_the_deliveries_waiting_and_loses_none(connected: Stage) -> None:
    """The real app: deliveries that wait for their commit (a processing transaction holds
    the write lock) show on /metrics, make the intake busy, are all answered 200 once it
    ends, and are all handled; processing's time on the loop is counted."""
    post = f"{PAGE_ID}_777"
    first = await connected.deliver_facebook(
        comment_delivery(PAGE_ID, post, "c_first", ("u0", "Ann"), "hello")
    )
    assert first.status == 200
    await connected.settled()
    acks = connected.c.intake.acks
    async with connected.c.db.write():
        sending = [
            asyncio.create_task(
                connected.deliver_facebook(
                    comment_delivery(PAGE_ID, post, f"c_{i}", (f"u{i}", f"User {i}"), f"n{i}")
                )
            )
            for i in range(20)
        ]
        for _ in range(200):
            if acks.waiting == 20:
                break
            await asyncio.sleep(0.01)
        metrics = await _metrics(connected)
        assert metrics["pagedesk_deliveries_waiting"] == 20.0
        assert acks.busy
    answers = await asyncio.gather(*sending)
    assert [r.status for r in answers] == [200] * 20
    await connected.settled()
    lines = relayed_lines(connected, only_topic(connected))
    assert sorted(lines[1:]) == sorted(f"User {i}: n{i}" for i in range(20))
    metrics = await _metrics(connected)
    assert metrics["pagedesk_deliveries_waiting"] == 0.0
    assert metrics["pagedesk_processing_seconds_total"] > 0


async def _metrics(st: Stage) -> dict[str, float]:
    assert st.http is not None
    async with st.http.get(st.url + "/metrics") as resp:
        text = await resp.text()
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith("pagedesk_") and len(parts := line.split()) == 2
        for name, value in [parts]
    }
