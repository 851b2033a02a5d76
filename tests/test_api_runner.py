"""The API runner's flow control and bookkeeping, shared by every API backend.

Timing here is only ever a lower bound ("not earlier than"): a slow machine cannot fail it,
only a limiter that lets requests through too soon can.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from runner.backends.retry_after import parse_duration, retry_after_seconds
from runner.credentials import public_url
from runner.engine import concurrent_driver as api_runner
from runner.engine.ratelimit import Throttle, TokenBucket
from runner.redact import redact, remember
from tests.conftest import run_cli, write
from tests.fakes.openai_server import FakeOpenAI, Fault

KEY = "sk-runner-test-0123456789"


# --- flow control ------------------------------------------------------------------------


def test_concurrency_never_exceeds_the_limit_and_halves_only_when_most_requests_get_429():
    async def main():
        throttle = Throttle(concurrency=4)
        now, peak = 0, 0

        async def one(succeed: bool = True):
            nonlocal now, peak
            async with throttle.slot() as epoch:
                now += 1
                peak = max(peak, now)
                await asyncio.sleep(0.005)
                now -= 1
            if succeed:
                throttle.on_success(epoch)

        await asyncio.gather(*(one() for _ in range(20)))
        assert peak == 4

        # A sporadic 429 (one request in four, among successes) delays only its own request.
        assert throttle.on_rate_limited(retry_after=5.0, epoch=0) is None
        assert throttle.limit == 4 and throttle.pause_until < time.monotonic()
        # Half of the recent requests come back 429: that is the rate limit. Back off once...
        backoff = throttle.on_rate_limited(retry_after=0.0, epoch=0)
        assert backoff is not None and (backoff.limit_before, backoff.limit_after) == (4, 2)
        # ...and the other 429s of requests sent before the back-off do not cut it again.
        assert throttle.on_rate_limited(retry_after=0.0, epoch=0) is None
        assert throttle.on_rate_limited(retry_after=0.0, epoch=0) is None
        assert throttle.limit == 2 and throttle.rate_limited == 4 and throttle.backoffs == 1
        peak = 0
        await asyncio.gather(*(one(succeed=False) for _ in range(5)))
        assert peak == 2
        for _ in range(10):  # it climbs back one step at a time, never past the configured 4
            throttle.on_success(throttle.epoch)
        assert throttle.limit == 4

    asyncio.run(main())


def test_requests_per_minute_spaces_request_starts():
    async def main():
        throttle = Throttle(concurrency=8, requests_per_minute=600)  # one per 0.1 s
        starts: list[float] = []

        async def one():
            async with throttle.slot():
                starts.append(time.monotonic())

        await asyncio.gather(*(one() for _ in range(6)))
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert min(gaps) >= 0.1 - 0.005

    asyncio.run(main())


def test_a_rate_limit_pauses_every_new_request_until_retry_after():
    async def main():
        throttle = Throttle(concurrency=4)
        for _ in range(2):  # two of the last four requests (the smallest sample judged)
            throttle.on_rate_limited(retry_after=0.3, epoch=throttle.epoch)
        t = time.monotonic()
        async with throttle.slot():
            return time.monotonic() - t

    assert asyncio.run(main()) >= 0.3 - 0.005


def test_every_wait_is_capped_at_max_wait():
    throttle = Throttle(concurrency=2, requests_per_minute=60, max_wait=2.0)
    throttle.on_rate_limited(retry_after=3600.0, epoch=0)
    backoff = throttle.on_rate_limited(retry_after=3600.0, epoch=0)
    assert backoff is not None and backoff.pause_s == 2.0 and backoff.asked_s == 3600.0
    assert throttle.pause_until - time.monotonic() <= 2.0
    for _ in range(10):
        throttle.pacer.slow_down()
    assert throttle.pacer.interval <= 2.0  # slowed from 1.02 s, to no more than max_wait
    slow = Throttle(concurrency=1, requests_per_minute=1, max_wait=2.0)  # the user's own pace wins
    slow.pacer.slow_down()
    assert slow.pacer.interval == slow.pacer.base_interval

    policy = api_runner.RetryPolicy().capped(2.0)
    rng = random.Random(0)
    told = api_runner.TransientAPIError("rate_limit", "429", retry_after=3600.0)
    assert policy.wait_for(told, 1, rng) == 2.0
    assert all(policy.delay(attempt, rng) <= 2.0 for attempt in range(1, 12))


def test_tokens_per_minute_waits_once_the_minute_is_spent():
    async def main():
        bucket = TokenBucket(tokens_per_minute=600)  # refills 10 tokens a second
        await bucket.take(600)
        t = time.monotonic()
        await bucket.take(3)
        return time.monotonic() - t

    assert asyncio.run(main()) >= 0.3 - 0.005


def test_retry_after_in_all_its_spellings():
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 < retry_after_seconds({"Retry-After": format_datetime(later, usegmt=True)}) <= 30
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert parse_duration("41s") == 41.0 and parse_duration("0.5s") == 0.5
    assert parse_duration("forever") is None


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling():
    policy = api_runner.RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(0)
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = {policy.delay(attempt, rng) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays) and len(delays) > 1
    told = api_runner.TransientAPIError("rate_limit", "429", retry_after=3.0)
    assert 3.0 <= policy.wait_for(told, 1, rng) <= 3.1


def test_remembered_keys_are_scrubbed_from_any_text():
    remember(KEY)
    assert redact(f"Bearer {KEY} was refused") == "Bearer *** was refused"
    assert KEY not in str(api_runner.TransientAPIError("server", f"echoed {KEY}"))
    assert public_url("https://user:pw@proxy.example:8443/v1?key=abc") == "https://***@proxy.example:8443/v1?key=***"


def test_a_base_url_without_scheme_is_bad_input(project, pubmedqa, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg, _ = _run(project, pubmedqa, "localhost:8000/v1", 1)

    assert run_cli("run", cfg) == 2
    assert "must start with http:// or https://" in capsys.readouterr().err
    assert not (project / "out").exists()


# --- whole runs ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(api_runner, "DEFAULT_POLICY", api_runner.RetryPolicy(base_delay=0.01, max_delay=0.05))


def _run(project, pubmedqa, url, n, **model):
    lines = pubmedqa.read_text(encoding="utf-8").splitlines()[:n]
    (project / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    keys = "".join(f"\n            {k}: {json.dumps(v)}" for k, v in model.items())
    cfg = write(project / "models.yaml", f"""
        name: chaos
        questions: q.jsonl
        output: out
        generation: {{max_new_tokens: 2048}}
        models:
          - id: gpt-4o-mini
            base_url: {url}{keys}
        """)
    return cfg, [json.loads(line) for line in lines]


def test_under_random_faults_every_question_ends_answered_or_with_its_error(
        project, pubmedqa, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    rng = random.Random(7)
    kinds = [lambda: Fault.server_error(500), lambda: Fault.server_error(503),
             lambda: Fault.rate_limit(retry_after_ms=20), Fault.malformed, lambda: Fault.hang(5)]
    with FakeOpenAI(key=KEY, latency=(0.0, 0.02)) as server:
        server.enqueue(*(rng.choice(kinds)() for _ in range(40)))
        cfg, qs = _run(project, pubmedqa, server.url, 30, concurrency=8, max_retries=2, timeout=0.5)

        code = run_cli("run", cfg)

    (run,) = (project / "out").iterdir()
    out = run / "gpt-4o-mini"
    recs = {r["index"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}
    assert sorted(recs) == list(range(1, 31))  # nothing lost
    for i, q in enumerate(qs, start=1):
        r = recs[i]
        if r.get("error"):
            assert r["attempts"] == 3 and not (out / f"{i}.txt").exists()
        else:
            assert q["question"] in (out / f"{i}.txt").read_text()
    m = json.loads((out / "manifest.json").read_text())
    errors = sum(1 for r in recs.values() if r.get("error"))
    assert m["done"] + m["errors"] == 30 and m["errors"] == errors
    assert code == (1 if errors else 0)
    usage = m["usage"]  # every attempt accounted for: an answer or a failure of a known kind
    assert usage["attempts"] == usage["answered"] + sum(usage["this_session"]["failed_attempts"].values())
    # (an attempt can time out before the loaded server even reads it, never the reverse)
    assert len(server.requests) <= usage["attempts"]


def test_a_resumed_run_reports_usage_for_the_whole_model(project, pubmedqa, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(key=KEY) as server:
        cfg, qs = _run(project, pubmedqa, server.url, 4, max_retries=0,
                       prices={"input_per_million": 1.0, "output_per_million": 2.0})
        server.on(qs[3]["question"], Fault.server_error(500))
        assert run_cli("run", cfg) == 1
        assert run_cli("run", cfg) == 0

    (run,) = (project / "out").iterdir()
    m = json.loads((run / "gpt-4o-mini" / "manifest.json").read_text())
    lines = (run / "gpt-4o-mini" / "responses.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert m["usage"]["answered"] == 4 and len(recs) == 4
    assert m["usage"]["output_tokens"] == sum(r["output_tokens"] for r in recs)
    assert m["usage"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in recs), abs=1e-6)
