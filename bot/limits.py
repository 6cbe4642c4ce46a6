"""Pacing: sends stay below the platforms' limits instead of bumping into them.

Every limit has two rules, per destination key (``tg:chat:-100…``, ``tg:global``,
``slack:channel:…``, ``fb:page:…``): a sliding window (never more than the limit in any
window, the hard guard), and even spacing after a short burst (GCRA), so that a burst does
not spend a whole minute's budget in its first second while comments are still arriving:
the waiting ones then go out together as digests.

Two limiters apply the same rules:

- ``LocalLimiter``: the state in this process. SQLite serves one process, so that is all
  the sends there are.
- ``SharedLimiter``: the state in the ``rate_limits`` table, one row per key. The outbox asks
  in the transaction that claims the job; the rows are locked (``SELECT … FOR UPDATE``, in
  key order so that two claims never deadlock) until it commits, so two replicas cannot both
  spend the last send of a window: the limits hold for the whole deployment. Time is the
  database's clock, the one clock every replica shares.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.shared import RateLimitRepository


@dataclass(frozen=True)
class Limit:
    count: int
    window: float  # seconds

    @property
    def guarded(self) -> float:
        """The window plus a margin: the platform counts a send when it arrives, which is
        a little after we counted it, and a request can wait behind the previous one."""
        return self.window + max(0.25, self.window * 0.05)


EXACT_UP_TO = 256  # a limit of more sends a window counts them per slot of the window
SLOTS = 64  # slots of the guarded window, for those


@dataclass
class Budget:
    """What one key has spent: GCRA's theoretical arrival time (0: none yet), and the
    sends still inside the guarded window. For a limit of up to ``EXACT_UP_TO`` sends, their
    times (oldest first, at most ``count``); above it, ``[slot, sends]`` pairs (oldest
    first), the window cut in ``SLOTS`` slots, so that a raised limit (10,000 a minute)
    does not keep, read and write thousands of times on every send."""

    sent: list[Any] = field(default_factory=list)
    tat: float = 0.0


class Rules:
    """The limits by key prefix, and the two rules."""

    def __init__(self, limits: dict[str, Limit], burst_share: float = 0.25) -> None:
        self._limits = limits
        self._burst_share = burst_share

    def limit(self, key: str) -> Limit | None:
        for prefix, limit in self._limits.items():
            if key == prefix or key.startswith(prefix + ":"):
                return limit
        return None

    def wait(self, limit: Limit, budget: Budget, now: float, cost: int) -> float:
        """0, or the seconds until ``cost`` more sends fit (drops what left the window)."""
        need = min(cost, limit.count)
        if limit.count > EXACT_UP_TO:
            wait = _slots_wait(limit, budget, now, need)
        else:
            sent = budget.sent = _times(budget.sent, limit)
            del sent[: bisect.bisect_right(sent, now - limit.guarded)]
            wait = 0.0
            if len(sent) + need > limit.count:
                # the oldest sends that must age out of the window first
                oldest = sent[len(sent) + need - limit.count - 1]
                wait = oldest + limit.guarded - now
        interval = limit.guarded / limit.count
        tolerance = (max(1, int(limit.count * self._burst_share)) - 1) * interval
        tat = max(budget.tat, now)
        if tat - now > tolerance:
            wait = max(wait, tat - now - tolerance)
        return wait

    @staticmethod
    def spend(limit: Limit, budget: Budget, now: float, cost: int) -> None:
        if limit.count > EXACT_UP_TO:
            slots = budget.sent = _slots(budget.sent, limit)
            slot = math.floor(now / (limit.guarded / SLOTS))
            if slots and slots[-1][0] == slot:
                slots[-1] = [slot, slots[-1][1] + cost]
            else:
                slots.append([slot, cost])
        else:
            budget.sent = _times(budget.sent, limit)
            budget.sent.extend([now] * cost)
            del budget.sent[: max(0, len(budget.sent) - limit.count)]
        budget.tat = max(budget.tat, now) + cost * limit.guarded / limit.count


def _slots_wait(limit: Limit, budget: Budget, now: float, need: int) -> float:
    """The window rule on slots: a slot counts whole while any of it is inside the window,
    so the sends of any window are never more than the limit (it may wait up to a slot,
    1/64 of the window, longer than counting each send would)."""
    width = limit.guarded / SLOTS
    slots = budget.sent = _slots(budget.sent, limit)
    first = math.floor((now - limit.guarded) / width)  # the oldest slot still inside
    while slots and slots[0][0] < first:
        del slots[0]
    over = sum(n for _, n in slots) + need - limit.count
    for slot, n in slots:
        if over <= 0:
            break
        over -= n
        if over <= 0:  # once this slot has left the window, the sends fit
            return float((slot + 1) * width + limit.guarded - now)
    return 0.0


def _slots(sent: list[Any], limit: Limit) -> list[Any]:
    """``sent`` as ``[slot, sends]`` pairs (times kept before the limit was raised are
    counted in their slots)."""
    if not sent or isinstance(sent[0], list):
        return sent
    width = limit.guarded / SLOTS
    slots: list[Any] = []
    for t in sent:
        slot = math.floor(t / width)
        if slots and slots[-1][0] == slot:
            slots[-1][1] += 1
        else:
            slots.append([slot, 1])
    return slots


def _times(sent: list[Any], limit: Limit) -> list[Any]:
    """``sent`` as send times (slots kept before the limit was lowered: their sends at
    the slot's end, the latest they may have been, at most ``count``)."""
    if not sent or not isinstance(sent[0], list):
        return sent
    width = limit.guarded / SLOTS
    times = [(slot + 1) * width for slot, n in sent for _ in range(min(n, limit.count))]
    return times[-limit.count :]


class Pacer:
    """The rules on state held in this process; ``reserve`` either counts the sends (0) or
    says how long to wait."""

    def __init__(self, limits: dict[str, Limit], burst_share: float = 0.25) -> None:
        self.rules = Rules(limits, burst_share)
        self._budgets: dict[str, Budget] = {}

    def reserve(self, keys: Sequence[str], now: float, cost: int = 1) -> float:
        """0 and the sends counted, or the seconds until ``cost`` sends fit under every
        key's limit."""
        budgets = []
        for key in keys:
            limit = self.rules.limit(key)
            if limit is not None:
                budgets.append((limit, self._budgets.setdefault(key, Budget())))
        wait = max((self.rules.wait(limit, b, now, cost) for limit, b in budgets), default=0.0)
        if wait > 0:
            return wait
        for limit, b in budgets:
            self.rules.spend(limit, b, now, cost)
        return 0.0


class Limiter(Protocol):
    async def reserve(self, s: AsyncSession, keys: Sequence[str], cost: int) -> float:
        """Inside the transaction that claims a job: 0 and ``cost`` sends counted against
        every key, or the seconds to wait (nothing counted)."""
        ...


class LocalLimiter:
    def __init__(self, pacer: Pacer, clock: Callable[[], float] = time.time) -> None:
        self.pacer = pacer
        self._clock = clock

    async def reserve(self, s: AsyncSession, keys: Sequence[str], cost: int) -> float:
        return self.pacer.reserve(keys, self._clock(), cost)


class SharedLimiter:
    """PostgreSQL: one budget per key for all replicas (see the module's docstring)."""

    def __init__(self, limits: dict[str, Limit], burst_share: float = 0.25) -> None:
        self.rules = Rules(limits, burst_share)
        self._repo = RateLimitRepository()

    async def reserve(self, s: AsyncSession, keys: Sequence[str], cost: int) -> float:
        limited = sorted({key for key in keys if self.rules.limit(key)})
        if not limited:
            return 0.0
        rows = await self._repo.lock(s, limited)
        if len(rows) < len(limited):
            have = {row.key for row, _ in rows}
            await self._repo.create(s, [k for k in limited if k not in have])
            rows = await self._repo.lock(s, limited)
        now = max(db_now for _, db_now in rows)
        budgets = []
        for row, _ in rows:
            limit = self.rules.limit(row.key)
            assert limit is not None
            budgets.append((row, limit, Budget(list(row.sent), row.tat)))
        wait = max(self.rules.wait(limit, budget, now, cost) for _, limit, budget in budgets)
        if wait > 0:
            return wait
        for row, limit, budget in budgets:
            self.rules.spend(limit, budget, now, cost)
            row.sent = budget.sent  # a new list: the ORM sees the change
            row.tat = budget.tat
        await s.flush()
        return 0.0
