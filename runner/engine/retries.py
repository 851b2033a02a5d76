"""The one retry loop for API calls (models answering questions, and the judge).

A backend makes ONE attempt and raises one of the typed errors of ``runner.errors``:

    TransientAPIError   429 (rate limit), 5xx, timeout, connection, malformed body: back off
                        (Retry-After when the server gives one, else exponential with jitter)
                        and try again, up to the model's ``max_retries``;
    PermanentAPIError   this question cannot be answered (a 400): record the error, go on;
    BackendFatal        rejected key, exhausted daily quota, unknown model: propagates, and
                        stops the model at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from runner.backends.base import GenResult
from runner.errors import PermanentAPIError, TransientAPIError


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off between attempts. Retry-After, when the server sends one, wins, up to ``max_wait``."""

    base_delay: float = 1.0
    max_delay: float = 60.0
    #: No wait is longer, whatever the server asks for (a model's ``max_wait`` sets it).
    max_wait: float = 120.0

    def capped(self, max_wait: float) -> RetryPolicy:
        """This policy with every wait at most ``max_wait`` seconds."""
        return dataclasses.replace(self, max_wait=max_wait, max_delay=min(self.max_delay, max_wait))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential with "equal jitter": half fixed, half random, so clients spread out."""
        d = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return d / 2 + rng.uniform(0, d / 2)

    def wait_for(self, err: TransientAPIError, attempt: int, rng: random.Random) -> float:
        if err.retry_after is not None:
            # A little jitter on top, so the requests that were paused together do not all
            # come back in the same millisecond; the cap holds with the jitter included.
            return min(err.retry_after + rng.uniform(0, 0.1), self.max_wait)
        return self.delay(attempt, rng)


DEFAULT_POLICY = RetryPolicy()

#: Hears of each transient failure: the error, the attempt number, and the wait before the
#: next attempt (None when giving up).
OnFailure = Callable[[TransientAPIError, int, float | None], None]


async def with_retries(
    once: Callable[[], Awaitable[GenResult]],
    *,
    timeout: float,
    max_retries: int,
    policy: RetryPolicy = DEFAULT_POLICY,
    rng: random.Random | None = None,
    on_failure: OnFailure | None = None,
) -> tuple[GenResult, bool]:
    """Call ``once()`` until it answers; returns the result (``attempts`` set) and whether the
    service answered. ``BackendFatal`` propagates."""
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            res = await once()
        except TimeoutError:
            err = TransientAPIError("timeout", f"no answer within {timeout:g}s")
        except TransientAPIError as e:
            err = e
        except PermanentAPIError as e:
            return GenResult(text=None, error=str(e), attempts=attempt), False
        else:
            res.attempts = attempt
            return res, True
        if attempt > max_retries:
            if on_failure is not None:
                on_failure(err, attempt, None)
            return GenResult(text=None, error=f"{err} (gave up after {attempt} attempts)",
                             attempts=attempt), False
        wait = policy.wait_for(err, attempt, rng)
        if on_failure is not None:
            on_failure(err, attempt, wait)
        await asyncio.sleep(wait)
