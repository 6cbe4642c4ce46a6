"""Acknowledgements before processing.

One event loop serves both the webhooks and the work they bring, so a flood of deliveries
and the processing of the ones before it compete for the same core. Facebook gives up on a
delivery after about 20 s and drops a subscription that keeps failing, Slack retries after
3 s: the acknowledgements must not wait for processing. Processing can wait, its work is
stored.

``AcksFirst`` counts the deliveries that wait for their acknowledgement (``Intake`` does).
While ``busy_at`` or more of them wait, processing gets at most ``share`` of the loop: the
time its own steps take is measured (``metered``) and at its next turn (``turn``, between
two transactions or two calls, never inside one) it waits until the rest of the loop has
had its part. When the waiting drops below ``busy_at``, it goes on at once. At ordinary
rates deliveries are answered as they come, nothing waits, and processing runs unpaced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

SHARE = 0.1  # of the loop processing gets while acknowledgements wait
BUSY_AT = 8  # deliveries waiting for their acknowledgement: the intake is busy
HOLD = 0.05  # seconds the intake stays busy after that


class AcksFirst:
    def __init__(self, share: float = SHARE, busy_at: int = BUSY_AT, hold: float = HOLD) -> None:
        if not 0 < share <= 1:
            raise ValueError("share: between 0 (excluded) and 1")
        self.busy_at = busy_at
        self.hold = hold
        self.waiting = 0  # deliveries received and not yet answered
        # for /metrics: seconds processing held the loop, and seconds it waited its turn
        self.processing = 0.0
        self.deferred = 0.0
        self._owed_per_second = (1 - share) / share
        self._busy_until = 0.0  # perf_counter time
        self._free_at = 0.0  # perf_counter time from which processing may go on

    @property
    def busy(self) -> bool:
        """``busy_at`` deliveries or more waited for their acknowledgement within the last
        ``hold`` seconds. (Their number drops to nothing each time a group commit ends
        and all its deliveries are answered at once.)"""
        return time.perf_counter() < self._busy_until

    # --- the intake's side ---------------------------------------------------------------

    def arrived(self) -> None:
        self.waiting += 1
        if self.waiting >= self.busy_at:
            self._busy_until = time.perf_counter() + self.hold

    def answered(self) -> None:
        self.waiting -= 1

    # --- processing's side ---------------------------------------------------------------

    def spent(self, seconds: float) -> None:
        """Processing held the loop for ``seconds``: while the intake is busy, the loop is
        the intake's for ``seconds × (1 − share) / share`` after it."""
        self.processing += seconds
        now = time.perf_counter()
        if now < self._busy_until:
            self._free_at = max(self._free_at, now - seconds) + seconds * (
                1 + self._owed_per_second
            )

    async def turn(self) -> None:
        """Before a unit of processing: wait while the intake is busy and processing has
        had its share. Never call it inside a transaction (it would hold the write lock
        while it waits)."""
        started = now = time.perf_counter()
        while now < self._busy_until and now < self._free_at:
            # until its share is due, or the intake has not been busy for ``hold``
            await asyncio.sleep(min(self._free_at, self._busy_until) - now)
            now = time.perf_counter()
        self.deferred += now - started

    def metered(self, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """``coro``, with the time each of its steps holds the loop counted as processing
        (``spent``). Wrap a task's whole coroutine: every step of the task is measured,
        whatever it awaits inside."""
        return _run_metered(self, coro)


async def _run_metered(acks: AcksFirst, coro: Coroutine[Any, Any, T]) -> T:
    result: T = await _Metered(acks, coro)
    return result


class _Metered:
    """Drives a coroutine step by step for the task that awaits it, timing each step."""

    __slots__ = ("_acks", "_coro")

    def __init__(self, acks: AcksFirst, coro: Coroutine[Any, Any, Any]) -> None:
        self._acks = acks
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, spent, clock = self._coro, self._acks.spent, time.perf_counter
        value: Any = None
        error: BaseException | None = None
        while True:
            started = clock()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                spent(clock() - started)
                return stop.value
            except BaseException:
                spent(clock() - started)
                raise
            spent(clock() - started)
            try:
                value = yield yielded
                error = None
            except GeneratorExit:  # this driver is closed (its task was dropped): so is coro
                coro.close()
                raise
            except BaseException as e:  # a cancellation, thrown in by the task
                value, error = None, e
