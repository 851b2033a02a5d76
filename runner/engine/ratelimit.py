"""Client-side flow control for API models: concurrency, request and token rates, 429s.

One :class:`Throttle` per model gates every attempt:

- at most ``concurrency`` requests in flight, a limit halved on each burst of 429s and
  raised again one step at a time as requests succeed (additive increase, multiplicative
  decrease, as TCP does), so a model that is rate-limited slows down instead of hammering;
- ``requests_per_minute`` as a minimum spacing between request starts (no bursts), so the
  rate over any window stays at or under the limit;
- ``tokens_per_minute`` as a token bucket holding one minute's worth, charged with an
  estimate before the request and settled with the real usage after it;
- a shared pause: a 429 with ``Retry-After`` holds back every new request until then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

Clock = Callable[[], float]


# The provider counts requests when they arrive, after network jitter has bunched some of
# them up; pacing 2% slower than the limit keeps its count under the limit too.
PACING_MARGIN = 1.02


class RequestPacer:
    """Spaces request starts ``60 / requests_per_minute`` seconds apart (plus a 2% margin)."""

    def __init__(self, requests_per_minute: float, clock: Clock = time.monotonic):
        self.base_interval = 60.0 / requests_per_minute * PACING_MARGIN
        self.interval = self.base_interval
        self._clock = clock
        self._next = 0.0

    async def wait(self) -> None:
        # Reserve the slot before sleeping: callers queue up in order without a lock.
        now = self._clock()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def slow_down(self) -> None:
        self.interval = min(self.interval * 2, self.base_interval * 16)

    def recover(self) -> None:
        self.interval = max(self.base_interval, self.interval * 0.9)


class TokenBucket:
    """``tokens_per_minute``: holds a minute's worth, refills continuously, may go into debt."""

    def __init__(self, tokens_per_minute: float, clock: Clock = time.monotonic):
        self.capacity = float(tokens_per_minute)
        self.rate = tokens_per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._t = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._t) * self.rate)
        self._t = now

    async def take(self, tokens: float) -> None:
        """Charge ``tokens`` now; wait as long as the bucket is in debt."""
        self._refill()
        self._level -= min(tokens, self.capacity)
        if self._level < 0:
            await asyncio.sleep(-self._level / self.rate)

    def settle(self, estimated: float, actual: float) -> None:
        """Correct an earlier charge once the real usage is known."""
        self._refill()
        self._level = min(self.capacity, self._level + min(estimated, self.capacity) - actual)


class Throttle:
    """Everything that decides when the next attempt of a model may start."""

    def __init__(self, concurrency: int, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, clock: Clock = time.monotonic):
        self.max_concurrency = concurrency
        self.limit = concurrency
        self.in_flight = 0
        self.pacer = RequestPacer(requests_per_minute, clock) if requests_per_minute else None
        self.bucket = TokenBucket(tokens_per_minute, clock) if tokens_per_minute else None
        self.pause_until = 0.0
        self.rate_limited = 0
        self._clock = clock
        self._cond = asyncio.Condition()
        self._successes = 0
        self._last_cut = float("-inf")

    @asynccontextmanager
    async def slot(self, estimated_tokens: float = 0.0) -> AsyncIterator[None]:
        """Hold one of the ``limit`` places for the length of one attempt."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            await self._wait_pause()
            if self.pacer:
                await self.pacer.wait()
            if self.bucket and estimated_tokens:
                await self.bucket.take(estimated_tokens)
            await self._wait_pause()  # a 429 may have arrived while this one waited
            yield
        finally:
            async with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    async def _wait_pause(self) -> None:
        while (delay := self.pause_until - self._clock()) > 0:
            await asyncio.sleep(delay)

    def on_success(self) -> None:
        self._successes += 1
        if self.pacer:
            self.pacer.recover()
        if self.limit < self.max_concurrency and self._successes >= self.limit:
            self._successes = 0
            self.limit += 1

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone for ``retry_after`` and cut the pace, once per burst."""
        self.rate_limited += 1
        now = self._clock()
        pause = retry_after if retry_after is not None else 1.0
        self.pause_until = max(self.pause_until, now + pause)
        # Requests already in flight when the limit was hit come back 429 together; count
        # that burst as one signal, or the limit would collapse to 1 at once.
        if now - self._last_cut < max(pause, 1.0):
            return
        self._last_cut = now
        self._successes = 0
        self.limit = max(1, self.limit // 2)
        if self.pacer:
            self.pacer.slow_down()

    def settle_tokens(self, estimated: float, actual: float) -> None:
        if self.bucket:
            self.bucket.settle(estimated, actual)
