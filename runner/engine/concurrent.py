"""Drive an ``AsyncGenerator``: many requests in flight, each retried, paced and stored as it lands.

Used for every API model and for the judge. One :class:`~runner.engine.ratelimit.Throttle`
gates every attempt (concurrency, requests and tokens per minute, 429 back-off) and one retry
loop (``runner.engine.retries``) decides what to do with each failure. Every result is handed
to the recorder on one writer thread as soon as it arrives, so a slow object store never
stalls the event loop and a killed run keeps every finished answer.
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
from runner.engine.ratelimit import Throttle
from runner.engine.recording import Recorder
from runner.engine.retries import DEFAULT_POLICY, RetryPolicy, with_retries
from runner.errors import BackendFatal, MedbenchError, TransientAPIError

log = logging.getLogger("medbench.api")

# Checkpoints (the manifest's counts that `launcher status` shows) at most this often.
CHECKPOINT_EVERY_S = 2.0


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
                 policy: RetryPolicy, label: str):
        self.backend, self.recorder, self.spec = backend, recorder, spec
        self.max_new_tokens = max_new_tokens
        self.policy = policy
        self.label = label
        self.rng = random.Random()
        self.stats = ConcurrentStats(concurrency=spec.concurrency)
        self.throttle = Throttle(spec.concurrency, spec.requests_per_minute, spec.tokens_per_minute)
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

    async def _answer(self, req: GenRequest) -> GenResult:
        throttle = self.throttle
        estimate = estimate_tokens(req.prompt, self.max_new_tokens)
        guard = self.spec.timeout * 1.1 + 1.0  # the SDK's own timeout should fire first

        async def once() -> GenResult:
            async with throttle.slot(estimate):  # waiting for a slot is not the request's time
                t = time.perf_counter()
                res = await asyncio.wait_for(self.backend.agenerate(req), timeout=guard)
                res.latency_s = round(time.perf_counter() - t, 4)
                return res

        def failed(err: TransientAPIError, attempt: int, wait: float | None) -> None:
            self.stats.failed_attempts[err.kind] += 1
            if err.rate_limited:
                throttle.on_rate_limited(err.retry_after)
            if wait is not None:
                self.stats.retries += 1
                log.info("%s: question %s: %s; retry %d/%d in %.2fs", self.label, req.question.id, err,
                         attempt, self.spec.max_retries, wait)

        res, answered = await with_retries(once, timeout=self.spec.timeout, max_retries=self.spec.max_retries,
                                           policy=self.policy, rng=self.rng, on_failure=failed)
        if answered:
            throttle.on_success()
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
                   label: str = "") -> ConcurrentStats:
    """Answer ``requests`` concurrently and store each result as it comes.

    Prompts are built here (``backend.build_prompt``). Raises ``BackendFatal`` when the
    service refuses the model as a whole; every answer received before that is stored.
    """
    for r in requests:
        r.prompt = backend.build_prompt(r)
    run = _Run(backend, recorder, spec, max_new_tokens, policy or DEFAULT_POLICY, label or spec.model_dir)
    t0 = time.perf_counter()
    try:
        run_coroutine(lambda: run.run_all(requests))
    finally:
        run.close(time.perf_counter() - t0)
    return run.stats
