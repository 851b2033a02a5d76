"""Drive an ``AsyncGenerator``: many requests in flight, each retried, paced and stored as it lands.

Used for every API model and for the judge. One :class:`~runner.engine.ratelimit.Throttle`
gates every attempt (concurrency, requests and tokens per minute, 429 back-off) and one retry
loop (``runner.engine.retries``) decides what to do with each failure; both cap every wait at
the model's ``max_wait``. Every result is handed to the recorder on one writer thread as soon
as it arrives, so a slow object store never stalls the event loop and a killed run keeps every
finished answer. Long waits are told to the progress line (``Progress.note``) while they last.
What the server said is vetted first (``runner.engine.untrusted``: redacted, valid text,
possible token counts), so nothing it sends can stop the model or be priced as it likes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.backends.base import AsyncGenerator, GenRequest, GenResult
from runner.config.backends import APIModel
from runner.engine.ratelimit import DEFAULT_MAX_WAIT, Backoff, Throttle
from runner.engine.recording import Progress, Recorder
from runner.engine.retries import DEFAULT_POLICY, RetryPolicy, with_retries
from runner.engine.untrusted import vet
from runner.errors import BackendFatal, MedbenchError, TransientAPIError

log = logging.getLogger("medbench.api")

# Checkpoints (the manifest's counts that `launcher status` shows) at most this often.
CHECKPOINT_EVERY_S = 2.0
# One question's retry waiting at least this long is shown in the progress line; shorter
# ones (the usual sporadic 429 or 5xx) would only flicker past.
NOTE_WAIT_S = 5.0


@dataclass
class ConcurrentStats:
    """What happened in this session, for the manifest (answers themselves are in the records)."""

    retries: int = 0
    failed_attempts: Counter = field(default_factory=Counter)
    rate_limited: int = 0
    concurrency: int = 0
    concurrency_at_end: int = 0
    wall_s: float = 0.0


def estimate_tokens(prompt: Any, max_new_tokens: int) -> int:
    """What a request may cost against tokens_per_minute, before the API says (4 chars/token)."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    return len(text) // 4 + max_new_tokens


def cost_usd(spec: APIModel, res: GenResult) -> float | None:
    prices = spec.prices
    if prices is None or res.input_tokens is None or res.output_tokens is None:
        return None
    return round((res.input_tokens * prices.input_per_million
                  + res.output_tokens * prices.output_per_million) / 1e6, 8)


class _Run:
    def __init__(self, backend: AsyncGenerator, recorder: Recorder, spec: APIModel, max_new_tokens: int,
                 policy: RetryPolicy, label: str, progress: Progress | None = None):
        self.backend, self.recorder, self.spec = backend, recorder, spec
        self.max_new_tokens = max_new_tokens
        self.max_wait = spec.max_wait or DEFAULT_MAX_WAIT
        self.policy = policy.capped(self.max_wait)
        self.label = label
        self.progress = progress
        self.rng = random.Random()
        self.stats = ConcurrentStats(concurrency=spec.concurrency)
        self.throttle = Throttle(spec.concurrency, spec.requests_per_minute, spec.tokens_per_minute,
                                 max_wait=self.max_wait)
        self._note_serial = 0
        self._told_capped = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medbench-store")
        self._last_checkpoint = time.monotonic()
        self._pending: list[Future] = []
        self._store_error: BaseException | None = None

    async def run_all(self, requests: list[GenRequest]) -> None:
        queue = iter(requests)
        workers = min(self.spec.concurrency, len(requests))
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(workers):
                    tg.create_task(self._worker(queue))
            await self._drain()
        except BaseExceptionGroup as group:
            raise _first(group) from None
        finally:
            self._note_serial += 1  # a clear still scheduled must not fire into the next model
            if self.progress is not None:
                self.progress.note("")
            await self.backend.aclose()

    async def _worker(self, queue: Iterator[GenRequest]) -> None:
        # One shared iterator: each worker takes the next question as soon as it is free.
        for req in queue:
            self._raise_store_error()
            res = await self._answer(req)
            self._store(req, res)

    def _store(self, req: GenRequest, res: GenResult) -> None:
        # Handed to the writer thread without waiting: a worker goes straight on to its next
        # question instead of queueing behind other workers' writes.
        future = self._writer.submit(self._store_sync, req, res)
        self._pending.append(future)
        future.add_done_callback(self._stored)

    def _store_sync(self, req: GenRequest, res: GenResult) -> None:
        self.recorder.store(req, res)
        if time.monotonic() - self._last_checkpoint > CHECKPOINT_EVERY_S:
            self._last_checkpoint = time.monotonic()
            self.recorder.checkpoint()

    def _stored(self, future: Future) -> None:
        # Runs on the writer thread; one assignment, so no lock is needed.
        if not future.cancelled() and future.exception() is not None and self._store_error is None:
            self._store_error = future.exception()

    def _raise_store_error(self) -> None:
        if self._store_error is not None:
            raise self._store_error

    async def _drain(self) -> None:
        """Wait for every result handed to the writer to be written."""
        for future in list(self._pending):
            await asyncio.wrap_future(future)
        self._raise_store_error()

    # --- what the progress line says while the model waits ------------------------------------

    def _note(self, text: str, seconds: float) -> None:
        """Show ``text`` in the progress line for ``seconds`` (until a newer note replaces it)."""
        if self.progress is None:
            return
        self._note_serial += 1
        serial = self._note_serial
        self.progress.note(text)
        asyncio.get_running_loop().call_later(seconds, self._clear_note, serial)

    def _clear_note(self, serial: int) -> None:
        if serial == self._note_serial and self.progress is not None:
            self.progress.note("")

    def _asked(self, retry_after: float | None) -> str:
        """", the server asked for Ns" where its Retry-After was cut down to max_wait."""
        if retry_after is None or retry_after <= self.max_wait:
            return ""
        if not self._told_capped:
            self._told_capped = True
            log.warning("%s: the server asked to wait %gs (Retry-After); waiting at most max_wait, %gs",
                        self.label, retry_after, self.max_wait)
        return f" (the server asked for {retry_after:.0f}s; max_wait is {self.max_wait:g}s)"

    def _backed_off(self, b: Backoff) -> None:
        text = (f"rate limited ({b.limited} of the last {b.window} requests got HTTP 429): "
                f"every request paused {b.pause_s:.0f}s{self._asked(b.asked_s)}, "
                f"concurrency {b.limit_before} -> {b.limit_after}")
        log.debug("%s: %s", self.label, text)  # the progress (a log line in a pod) tells the user
        self._note(text, b.pause_s)

    # --- one question ------------------------------------------------------------------------

    async def _answer(self, req: GenRequest) -> GenResult:
        throttle = self.throttle
        estimate = estimate_tokens(req.prompt, self.max_new_tokens)
        guard = self.spec.timeout * 1.1 + 1.0  # the SDK's own timeout should fire first
        epoch = 0  # the throttle's epoch when the latest attempt started

        async def once() -> GenResult:
            nonlocal epoch
            async with throttle.slot(estimate) as epoch:  # waiting for a slot is not the request's time
                t = time.perf_counter()
                res = await asyncio.wait_for(self.backend.agenerate(req), timeout=guard)
                res.latency_s = round(time.perf_counter() - t, 4)
                return res

        def failed(err: TransientAPIError, attempt: int, wait: float | None) -> None:
            self.stats.failed_attempts[err.kind] += 1
            backoff = throttle.on_rate_limited(err.retry_after, epoch) if err.rate_limited else None
            if backoff is not None:
                self._backed_off(backoff)
            if wait is None:
                return
            self.stats.retries += 1
            log.info("%s: question %s: %s; retry %d/%d in %.2fs", self.label, req.question.id, err,
                     attempt, self.spec.max_retries, wait)
            if wait >= NOTE_WAIT_S and backoff is None:
                self._note(f"question {req.question.id}: {err.kind.replace('_', ' ')}, retry "
                           f"{attempt}/{self.spec.max_retries} in {wait:.0f}s{self._asked(err.retry_after)}",
                           wait)

        res, answered = await with_retries(once, timeout=self.spec.timeout, max_retries=self.spec.max_retries,
                                           policy=self.policy, rng=self.rng, on_failure=failed)
        vet(res, req.prompt, self.max_new_tokens)
        if answered:
            throttle.on_success(epoch)
            used = (res.input_tokens or 0) + (res.output_tokens or 0)
            throttle.settle_tokens(estimate, used or estimate)
            cost = cost_usd(self.spec, res)
            if cost is not None:
                res.extra["cost_usd"] = cost
        return res

    def close(self, wall_s: float) -> None:
        self._writer.shutdown(wait=True)
        self.stats.wall_s = wall_s
        self.stats.rate_limited = self.throttle.rate_limited
        self.stats.concurrency_at_end = self.throttle.limit


def _first(group: BaseExceptionGroup) -> BaseException:
    """The exception that matters from a TaskGroup: a fatal one first, then ours, then any."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                walk(e)
            else:
                leaves.append(e)

    walk(group)
    for kind in (BackendFatal, MedbenchError, BaseException):
        for e in leaves:
            if isinstance(e, kind) and not isinstance(e, asyncio.CancelledError):
                return e
    return leaves[0]


def run_coroutine(make: Callable[[], Any]) -> None:
    """Run the coroutine ``make()`` returns, also when called from inside a running event loop
    (a notebook): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(make())
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(make())).result()


def run_concurrent(backend: AsyncGenerator, requests: list[GenRequest], recorder: Recorder, spec: APIModel,
                   *, max_new_tokens: int, policy: RetryPolicy | None = None,
                   label: str = "", progress: Progress | None = None) -> ConcurrentStats:
    """Answer ``requests`` concurrently and store each result as it comes.

    Prompts are built here (``backend.build_prompt``). Raises ``BackendFatal`` when the
    service refuses the model as a whole; every answer received before that is stored.
    ``progress`` hears (``note``) what the model is waiting for, while it waits.
    """
    for r in requests:
        r.prompt = backend.build_prompt(r)
    run = _Run(backend, recorder, spec, max_new_tokens, policy or DEFAULT_POLICY, label or spec.model_dir,
               progress)
    t0 = time.perf_counter()
    try:
        run_coroutine(lambda: run.run_all(requests))
    finally:
        run.close(time.perf_counter() - t0)
    return run.stats
