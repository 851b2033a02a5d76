"""Client-side flow control for API models: concurrency, request and token rates, 429s.

One :class:`Throttle` per model gates every attempt:

- at most ``concurrency`` requests in flight;
- ``requests_per_minute`` as a minimum spacing between request starts (no bursts), so the
  rate over any window stays at or under the limit;
- ``tokens_per_minute`` as a token bucket holding one minute's worth, charged with an
  estimate before the request and settled with the real usage after it;
- back-off when the model's rate limit is really hit: when at least half of the recent
  attempts came back 429, every new request is held back until the ``Retry-After`` (a shared
  pause), the concurrency limit is halved and the pace slowed; the limit then grows back one
  step at a time as requests succeed (additive increase, multiplicative decrease, as TCP does).

A sporadic 429 (a preview model short of capacity for a moment) is not a rate limit: it
delays only its own request, which waits its ``Retry-After`` in the retry loop while the
others go on. Pausing and halving on every 429 would collapse a run with a few percent of
429s to one request at a time.

Every wait the throttle adds on top of the configured rates is capped at ``max_wait``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

Clock = Callable[[], float]

#: The longest single wait (Retry-After, back-off, shared pause) unless a model sets max_wait.
DEFAULT_MAX_WAIT = 120.0

# The rate limit counts as hit when at least this share of the recent attempts got a 429...
SATURATED_SHARE = 0.5
# ...judged over the last ``limit`` attempts, and never fewer than this many: at a limit of 1
# or 2 one unlucky 429 says nothing about the service.
MIN_SAMPLE = 4


# The provider counts requests when they arrive, after network jitter has bunched some of
# them up; pacing 2% slower than the limit keeps its count under the limit too.
PACING_MARGIN = 1.02


class RequestPacer:
    """Spaces request starts ``60 / requests_per_minute`` seconds apart (plus a 2% margin)."""

    def __init__(self, requests_per_minute: float, clock: Clock = time.monotonic,
                 max_wait: float = DEFAULT_MAX_WAIT):
        self.base_interval = 60.0 / requests_per_minute * PACING_MARGIN
        self.interval = self.base_interval
        # Slowing down never spaces requests further apart than max_wait (or the configured
        # rate, when that is slower still).
        self.max_interval = max(self.base_interval, min(self.base_interval * 16, max_wait))
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
        self.interval = min(self.interval * 2, self.max_interval)

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


@dataclass(frozen=True)
class Backoff:
    """What a 429 that really hit the rate limit made the throttle do."""

    pause_s: float  # every new request held back this long
    asked_s: float | None  # what the server's Retry-After asked for (None: not said)
    limited: int  # 429s among...
    window: int  # ...this many recent attempts
    limit_before: int
    limit_after: int


class Throttle:
    """Everything that decides when the next attempt of a model may start.

    Each attempt runs inside :meth:`slot`, which yields its *epoch*: the number of back-offs
    before it started. Outcomes are judged only against attempts of the current epoch, so the
    429s of requests sent before a back-off (they come back together) count once, not again
    against the lowered limit.
    """

    def __init__(self, concurrency: int, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, clock: Clock = time.monotonic,
                 max_wait: float = DEFAULT_MAX_WAIT):
        self.max_concurrency = concurrency
        self.limit = concurrency
        self.in_flight = 0
        self.max_wait = max_wait
        self.pacer = RequestPacer(requests_per_minute, clock, max_wait) if requests_per_minute else None
        self.bucket = TokenBucket(tokens_per_minute, clock) if tokens_per_minute else None
        self.pause_until = 0.0
        self.rate_limited = 0
        self.backoffs = 0
        self.epoch = 0
        self._clock = clock
        self._cond = asyncio.Condition()
        self._successes = 0
        # Outcomes of this epoch's attempts, newest last: True for a 429.
        self._outcomes: deque[bool] = deque(maxlen=max(concurrency, MIN_SAMPLE))

    @asynccontextmanager
    async def slot(self, estimated_tokens: float = 0.0) -> AsyncIterator[int]:
        """Hold one of the ``limit`` places for the length of one attempt; yields its epoch."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            await self._wait_pause()
            if self.pacer:
                await self.pacer.wait()
            if self.bucket and estimated_tokens:
                await self.bucket.take(estimated_tokens)
            await self._wait_pause()  # a back-off may have begun while this one waited
            yield self.epoch
        finally:
            async with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()

    async def _wait_pause(self) -> None:
        while (delay := self.pause_until - self._clock()) > 0:
            await asyncio.sleep(delay)

    def capped(self, seconds: float) -> float:
        """``seconds``, or ``max_wait`` if that is less."""
        return min(seconds, self.max_wait)

    def on_success(self, epoch: int | None = None) -> None:
        if epoch is None or epoch == self.epoch:
            self._outcomes.append(False)
        self._successes += 1
        if self.pacer:
            self.pacer.recover()
        if self.limit < self.max_concurrency and self._successes >= self.limit:
            self._successes = 0
            self.limit += 1

    def on_rate_limited(self, retry_after: float | None, epoch: int | None = None) -> Backoff | None:
        """A 429. Backs off (and says how) when the rate limit is really hit, else None:
        a sporadic 429 only delays its own request, in the retry loop."""
        self.rate_limited += 1
        if epoch is not None and epoch != self.epoch:
            return None  # sent before the last back-off: that back-off already answered it
        self._outcomes.append(True)
        # The limit grows back only over a whole run of successes: just under the service's
        # real limit some requests keep getting 429s, and growing there would only add more.
        self._successes = 0
        window = max(self.limit, MIN_SAMPLE)
        limited = sum(list(self._outcomes)[-window:])
        if limited < window * SATURATED_SHARE:
            return None
        pause = self.capped(retry_after if retry_after is not None else 1.0)
        self.pause_until = max(self.pause_until, self._clock() + pause)
        before = self.limit
        self.limit = max(1, self.limit // 2)
        self._outcomes.clear()
        self.epoch += 1
        self.backoffs += 1
        if self.pacer:
            self.pacer.slow_down()
        return Backoff(pause_s=pause, asked_s=retry_after, limited=limited, window=window,
                       limit_before=before, limit_after=self.limit)

    def settle_tokens(self, estimated: float, actual: float) -> None:
        if self.bucket:
            self.bucket.settle(estimated, actual)
