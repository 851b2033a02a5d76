"""429s slow a run down, they do not serialise it; and no wait is longer than ``max_wait``.

The stories, through ``launcher run`` and the pod entry point:

- a preview model short of capacity answers a few requests 429: only those requests wait
  their Retry-After, the others go on at full concurrency;
- a service whose real limit is hit answers most requests 429: the runner backs off (every
  new request paused, concurrency cut) and ``requests_per_minute`` still holds;
- a server that says ``Retry-After: 3600``: the model waits ``max_wait`` at most, and the pod's
  log says what it is waiting for.

Nothing here is timed: the checks are on what the server saw (a request arriving while
another waits) or lower bounds ("not earlier than"), which a slow machine cannot fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.artefacts.stored import stage_run
from runner.config import parse_config
from runner.engine import concurrent_driver as api_runner
from runner.main import main as runner_main
from runner.plan import make_plan
from runner.storage import open_storage
from tests.conftest import run_cli, write
from tests.fakes.openai_server import FakeOpenAI, Fault

KEY = "sk-faults-0123456789abcdef"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """5xx back-off in milliseconds; a Retry-After is still honoured as the server says."""
    monkeypatch.setattr(api_runner, "DEFAULT_POLICY", api_runner.RetryPolicy(base_delay=0.01, max_delay=0.05))


def setup(project: Path, pubmedqa: Path, url: str, n: int, **model: object) -> tuple[Path, list[dict]]:
    lines = pubmedqa.read_text(encoding="utf-8").splitlines()[:n]
    (project / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    keys = "".join(f"\n            {k}: {json.dumps(v)}" for k, v in model.items())
    cfg = write(project / "models.yaml", f"""
        name: faults
        questions: q.jsonl
        output: out
        models:
          - id: gpt-4o
            backend: openai
            base_url: {url}{keys}
        """)
    return cfg, [json.loads(line) for line in lines]


def model_folder(project: Path) -> Path:
    (run,) = (project / "out").iterdir()
    return run / "gpt-4o"


def assert_every_answer_on_its_question(folder: Path, qs: list[dict]) -> None:
    for i, q in enumerate(qs, start=1):
        assert q["question"] in (folder / f"{i}.txt").read_text(encoding="utf-8")
        record = json.loads((folder / "records" / f"{i:06d}.json").read_text())
        assert record["id"] == q["id"] and record.get("error") is None


def test_sporadic_429s_delay_only_their_own_request(project, pubmedqa):
    with FakeOpenAI(key=KEY, latency=0.1) as server:
        server.every(8, Fault.rate_limit(retry_after=1))  # 1 request in 8, a capacity hiccup
        cfg, qs = setup(project, pubmedqa, server.url, 40, concurrency=4)

        assert run_cli("run", cfg) == 0

    folder = model_folder(project)
    assert_every_answer_on_its_question(folder, qs)
    m = json.loads((folder / "manifest.json").read_text())
    limited = m["usage"]["this_session"]["rate_limited"]
    assert limited >= 4 and m["usage"]["this_session"]["failed_attempts"] == {"rate_limit": limited}
    assert m["throughput"]["concurrency"] == {"configured": 4, "at_end": 4}  # never cut
    # While the first 429'd question waits its second, the others keep going: requests keep
    # arriving (a shared pause would hold every one of them back for that second).
    arrivals = sorted(r.at for r in server.requests)
    first_429 = arrivals[7]
    during = [t for t in arrivals if first_429 + 0.3 < t < first_429 + 1.0]
    assert len(during) >= 2


def test_a_real_rate_limit_cuts_concurrency_and_requests_per_minute_still_holds(project, pubmedqa):
    with FakeOpenAI(key=KEY, latency=0.25) as server:
        # Capacity for two at a time; started every 50 ms, five would be in flight: most get 429.
        server.limit_in_flight(2, Fault.rate_limit(retry_after_ms=200))
        cfg, qs = setup(project, pubmedqa, server.url, 24, concurrency=8, requests_per_minute=1200,
                        max_retries=10)

        assert run_cli("run", cfg) == 0

    folder = model_folder(project)
    assert_every_answer_on_its_question(folder, qs)
    m = json.loads((folder / "manifest.json").read_text())
    assert server.refused_in_flight > 0
    assert m["usage"]["this_session"]["rate_limited"] == server.refused_in_flight
    assert m["throughput"]["concurrency"]["at_end"] < 8  # backed off
    # One request start per 50 ms at most (a lower bound on the span: not a speed check).
    arrivals = sorted(r.at for r in server.requests)
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * 0.05 * 0.9


def test_retry_after_of_an_hour_waits_max_wait_and_the_pod_log_says_so(project, pubmedqa):
    with FakeOpenAI(key=KEY) as server:
        server.enqueue(*[Fault.rate_limit(retry_after=3600)] * 2)  # both first requests: a real limit
        cfg, qs = setup(project, pubmedqa, server.url, 4, concurrency=2, max_wait=0.3)
        plan = make_plan(parse_config(cfg.read_text(), base_dir=project))
        stage_run(plan, open_storage("out"))

        assert runner_main(["--output", "out", "--run-id", plan.run_id, "--model", "gpt-4o"]) == 0

    folder = project / "out" / plan.run_id / "gpt-4o"
    assert_every_answer_on_its_question(folder, qs)
    log = (folder / "runner.log").read_text()
    assert "waiting: rate limited (2 of the last 4 requests got HTTP 429)" in log
    assert "the server asked for 3600s; max_wait is 0.3s" in log
    assert "concurrency 2 -> 1" in log


@pytest.mark.parametrize("max_wait", [0, -5, "soon"])
def test_max_wait_must_be_a_positive_number_of_seconds(project, pubmedqa, max_wait, capsys):
    cfg, _ = setup(project, pubmedqa, "http://127.0.0.1:9/v1", 2, max_wait=max_wait)

    assert run_cli("run", cfg) == 2

    err = capsys.readouterr().err
    assert "max_wait" in err and "Traceback" not in err
    assert not (project / "out").exists()
