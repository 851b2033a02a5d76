"""Drive an API backend's ``agenerate`` concurrently: retries, rate limits, recording.

This is the one place retries live for every API provider (the SDKs' own retries are off).
A backend makes ONE attempt and raises one of the typed errors below; this module decides:

    TransientAPIError   429 (rate limit), 5xx, timeout, connection, malformed body:
                        back off (Retry-After when the server gives one, else exponential
                        with jitter) and try again, up to the model's ``max_retries``;
    PermanentAPIError   this question cannot be answered (a 400): record the error, go on;
    BackendFatal        rejected key, exhausted daily quota, unknown model: stop the model
                        at once (``ModelRun`` marks its manifest failed).

Every answer is stored by question index as soon as it arrives, through ``ModelRun.store``
on one writer thread, so a slow object store never stalls the event loop and a killed run
keeps every finished answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.backends.base import GenerateBackend, GenRequest, GenResult
from runner.credentials import redact
from runner.errors import BackendFatal, MedbenchError
from runner.execute import done_indices, read_records
from runner.ratelimit import Throttle

if TYPE_CHECKING:
    from runner.execute import ModelRun

log = logging.getLogger("medbench.api")


class APICallError(MedbenchError):
    """One attempt at one question failed (internal: the runner turns it into a record)."""


class TransientAPIError(APICallError):
    """Worth retrying: the service was busy, slow, or answered garbage."""

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None):
        super().__init__(redact(message))
        self.kind = kind  # rate_limit | server | timeout | connection | malformed
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        return self.kind == "rate_limit"


class PermanentAPIError(APICallError):
    """Retrying would get the same refusal (a bad request for this question)."""

    def __init__(self, message: str):
        super().__init__(redact(message))


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off between attempts. Retry-After, when the server sends one, wins."""

    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential with "equal jitter": half fixed, half random, so clients spread out."""
        d = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return d / 2 + rng.uniform(0, d / 2)

    def wait_for(self, err: TransientAPIError, attempt: int, rng: random.Random) -> float:
        if err.retry_after is not None:
            # A little jitter on top, so the requests that were paused together do not all
            # come back in the same millisecond.
            return min(err.retry_after, self.max_retry_after) + rng.uniform(0, 0.1)
        return self.delay(attempt, rng)


DEFAULT_POLICY = RetryPolicy()


async def with_retries(
    once: Callable[[], Awaitable[GenResult]],
    *,
    timeout: float,
    max_retries: int,
    policy: RetryPolicy = DEFAULT_POLICY,
    rng: random.Random | None = None,
    on_failure: Callable[[TransientAPIError, int, float | None], None] | None = None,
) -> tuple[GenResult, bool]:
    """The one retry loop for API calls (the runner's and the judge's).

    Calls ``once()`` until it answers; a transient error (429, 5xx, timeout, connection,
    malformed body) is retried after the policy's back-off or the server's Retry-After, up to
    ``max_retries``; a permanent one is recorded at once. ``on_failure(err, attempt, wait)``
    hears of each transient error (``wait`` None when giving up). ``BackendFatal`` propagates.
    Returns the result (with ``attempts`` set) and whether the service answered.
    """
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

# Answers that come back empty for a reason other than an error, and what to tell the user.
_EMPTY_REASONS = {
    "length": "the output-token limit was reached before any answer text (thinking/reasoning "
              "tokens count against it); raise generation.max_new_tokens (now {limit})",
    "content_filter": "the provider's safety filter blocked the answer",
}


@dataclass
class _Totals:
    retries: int = 0
    by_kind: Counter = field(default_factory=Counter)
    empty: dict[str, list[str]] = field(default_factory=dict)
    versions: Counter = field(default_factory=Counter)


def estimate_tokens(prompt: Any, max_new_tokens: int) -> int:
    """What a request may cost against tokens_per_minute, before the API says (4 chars/token)."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    return len(text) // 4 + max_new_tokens


class _APIRun:
    def __init__(self, model_run: ModelRun, backend: GenerateBackend, policy: RetryPolicy):
        self.mr = model_run
        self.backend = backend
        self.spec = model_run.task.spec
        self.policy = policy
        self.max_new_tokens = model_run.task.generation.max_new_tokens
        self.rng = random.Random()
        self.totals = _Totals()
        self.throttle: Throttle | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medbench-store")
        self._last_save = time.monotonic()
        self._pending: list[Future] = []
        self._store_error: BaseException | None = None

    # --- the loop ----------------------------------------------------------------------------

    async def run_all(self, requests: list[GenRequest]) -> None:
        self.throttle = Throttle(self.spec.concurrency, self.spec.requests_per_minute,
                                 self.spec.tokens_per_minute)
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
            aclose = getattr(self.backend, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _worker(self, queue) -> None:
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

    def _stored(self, future: Future) -> None:
        # Runs on the writer thread; one assignment, so no lock is needed.
        if not future.cancelled() and future.exception() is not None and self._store_error is None:
            self._store_error = future.exception()

    def _raise_store_error(self) -> None:
        if self._store_error is not None:
            raise self._store_error

    async def _drain(self) -> None:
        """Wait for every answer handed to the writer to be written."""
        for future in list(self._pending):
            await asyncio.wrap_future(future)
        self._raise_store_error()

    async def _answer(self, req: GenRequest) -> GenResult:
        assert self.throttle is not None
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
            self.totals.by_kind[err.kind] += 1
            if err.rate_limited:
                throttle.on_rate_limited(err.retry_after)
            if wait is not None:
                self.totals.retries += 1
                log.info("%s: question %s: %s; retry %d/%d in %.2fs", self.mr.task.model_dir,
                         req.question.id, err, attempt, self.spec.max_retries, wait)

        res, answered = await with_retries(once, timeout=self.spec.timeout,
                                           max_retries=self.spec.max_retries, policy=self.policy,
                                           rng=self.rng, on_failure=failed)
        if answered:
            throttle.on_success()
            self._accepted(req, res, estimate)
        return res

    def _accepted(self, req: GenRequest, res: GenResult, estimate: int) -> None:
        assert self.throttle is not None
        used = (res.input_tokens or 0) + (res.output_tokens or 0)
        self.throttle.settle_tokens(estimate, used or estimate)
        prices = self.spec.prices
        if prices is not None and res.input_tokens is not None and res.output_tokens is not None:
            cost = (res.input_tokens * prices.input_per_million
                    + res.output_tokens * prices.output_per_million) / 1e6
            res.extra["cost_usd"] = round(cost, 8)
        version = res.extra.get("model_version")
        if version:
            self.totals.versions[version] += 1
        if not (res.text or "").strip() and res.finish_reason in _EMPTY_REASONS:
            self.totals.empty.setdefault(res.finish_reason, []).append(req.question.id)

    def _store_sync(self, req: GenRequest, res: GenResult) -> None:
        self.mr.store(req, res)
        # The manifest's done/errors counts are what `launcher status` shows mid-run.
        if time.monotonic() - self._last_save > 2.0:
            self._last_save = time.monotonic()
            self.mr.save_manifest()

    # --- the manifest ------------------------------------------------------------------------

    def finish(self, wall_s: float) -> None:
        """Usage, cost, warnings and the answering model version, into the manifest."""
        self._writer.shutdown(wait=True)
        m = self.mr.manifest
        self.mr.gen_seconds = wall_s
        for w in getattr(self.backend, "warnings", []):
            if w not in m.warnings:
                m.warnings.append(w)
        for reason, ids in self.totals.empty.items():
            shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            why = _EMPTY_REASONS[reason].format(limit=self.max_new_tokens)
            m.warnings.append(
                f"{len(ids)} answer(s) empty with finish_reason '{reason}': {why}; questions {shown}")
        if self.totals.versions:
            m.revision = self.totals.versions.most_common(1)[0][0]
        m.usage = self._usage()
        if self.throttle is not None:
            m.throughput["concurrency"] = {"configured": self.spec.concurrency,
                                           "at_end": self.throttle.limit}

    def _usage(self) -> dict[str, Any]:
        # From the stored records, so a resumed run reports the whole model, not one session.
        mine = {q.index for q in self.mr.mine()}
        records = {i: r for i, r in read_records(self.mr.storage, self.mr.keys).items() if i in mine}
        answered = [records[i] for i in done_indices(records)]
        usage: dict[str, Any] = {
            "answered": len(answered),
            "input_tokens": sum(r.input_tokens or 0 for r in answered),
            "output_tokens": sum(r.output_tokens or 0 for r in answered),
            "reasoning_tokens": sum(r.reasoning_tokens or 0 for r in answered),
            "attempts": sum(r.attempts for r in records.values()),
            "this_session": {
                "retries": self.totals.retries,
                "failed_attempts": dict(self.totals.by_kind),
                "rate_limited": self.throttle.rate_limited if self.throttle else 0,
            },
        }
        prices = self.spec.prices
        if prices is not None:
            usage["cost_usd"] = round(sum(r.cost_usd or 0.0 for r in answered), 6)
            usage["prices_per_million"] = prices.model_dump()
        return usage


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


def _run_coroutine(coro) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    # Called from inside an event loop (a notebook): run ours on a thread of its own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


def run_async(model_run: ModelRun, backend: GenerateBackend, requests: list[GenRequest],
              policy: RetryPolicy | None = None) -> None:
    """Answer ``requests`` with ``backend`` concurrently and store each result as it comes.

    Raises ``BackendFatal`` when the service refuses the model as a whole; every answer
    received before that is already stored.
    """
    for r in requests:
        r.prompt = backend.build_prompt(r)
    run = _APIRun(model_run, backend, policy or DEFAULT_POLICY)
    t0 = time.perf_counter()
    try:
        _run_coroutine(run.run_all(requests))
    finally:
        run.finish(time.perf_counter() - t0)
