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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass
class Budget:
    """What one key has spent: send times still inside the guarded window (oldest first,
    at most ``count`` of them) and GCRA's theoretical arrival time (0: none yet)."""

    sent: list[float] = field(default_factory=list)
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
        sent = budget.sent
        del sent[: bisect.bisect_right(sent, now - limit.guarded)]
        wait = 0.0
        need = min(cost, limit.count)
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
        budget.sent.extend([now] * cost)
        del budget.sent[: max(0, len(budget.sent) - limit.count)]
        budget.tat = max(budget.tat, now) + cost * limit.guarded / limit.count


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
