"""Client-side rate limits for remote endpoints: requests per second and tokens per minute.

Two token buckets. A request takes one request token and its estimated token count before it is sent;
once the server reports the real usage, the difference is charged afterwards (the bucket may go into
debt, which later requests wait out). The buckets are safe to share between event loops and threads:
taking tokens is a short locked step, waiting is `asyncio.sleep` on the caller's own loop.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`; starts full."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"a token bucket needs a positive rate and capacity, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self, amount: float) -> float:
        """Take `amount` now and return 0, or take nothing and return the seconds until it could be taken.

        An amount above the capacity is clamped to it, so an oversized request waits for a full bucket
        instead of forever.
        """
        amount = min(amount, self.capacity)
        with self._lock:
            self._refill()
            if self._level >= amount:
                self._level -= amount
                return 0.0
            return (amount - self._level) / self.rate

    def charge(self, amount: float) -> None:
        """Take `amount` (or give it back, when negative) without waiting; the level may go below zero."""
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level - amount)


class RateLimiter:
    """Requests/s and tokens/min limits; either may be None (unlimited)."""

    def __init__(self, requests_per_s: float | None = None, tokens_per_min: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.requests = TokenBucket(requests_per_s, max(1.0, requests_per_s), clock) if requests_per_s else None
        self.tokens = TokenBucket(tokens_per_min / 60.0, tokens_per_min, clock) if tokens_per_min else None

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request carrying an estimated `tokens` may be sent."""
        for bucket, amount in ((self.tokens, tokens), (self.requests, 1)):
            if bucket is None:
                continue
            while (wait := bucket.try_take(amount)) > 0:
                await asyncio.sleep(wait)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token bucket once the real usage of a request is known."""
        if self.tokens is not None and actual != estimated:
            self.tokens.charge(actual - estimated)
