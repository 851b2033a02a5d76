"""``backend: openai`` through the real openai SDK against a loopback chat-completions server.

Each test is a user's story: write a models.yaml, run ``launcher run``, read the results.
The server misbehaves on cue (429, 5xx, hangs, garbage, a wrong key, no quota); whatever it
does, every question ends with an answer or a recorded error, and the key shows up nowhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.engine import concurrent_driver as api_runner
from tests.conftest import run_cli, write
from tests.fakes.openai_server import FakeOpenAI, Fault

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Back-off measured in milliseconds, so retries do not slow the suite."""
    monkeypatch.setattr(api_runner, "DEFAULT_POLICY", api_runner.RetryPolicy(base_delay=0.02, max_delay=0.1))


@pytest.fixture
def server():
    # Random latency: answers come back out of order, yet must land on their own question.
    with FakeOpenAI(key=KEY, latency=(0.0, 0.03)) as s:
        yield s


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def questions(project: Path, pubmedqa: Path, n: int) -> list[dict]:
    lines = pubmedqa.read_text(encoding="utf-8").splitlines()[:n]
    (project / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [json.loads(line) for line in lines]


def config(project: Path, model: str, url: str, **extra: object) -> Path:
    keys = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in extra.items())
    return write(project / "models.yaml", f"""
        name: api
        questions: q.jsonl
        output: out
        generation: {{max_new_tokens: 1024}}
        models:
          - id: {model}
            backend: openai
            base_url: {url}""" + keys.replace("\n", "\n        ") + "\n")


def model_dir(project: Path, name: str) -> Path:
    (run,) = (project / "out").iterdir()
    return run / name


def records(folder: Path) -> dict[int, dict]:
    out = {}
    for p in sorted((folder / "records").glob("*.json")):
        r = json.loads(p.read_text())
        out[r["index"]] = r
    return out


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_every_answer_lands_on_its_own_question(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 12)
    cfg = config(project, "gpt-4o", server.url, concurrency=4,
                 prices={"input_per_million": 2.5, "output_per_million": 10.0})

    assert run_cli("run", cfg) == 0

    out = model_dir(project, "gpt-4o")
    recs = records(out)
    for i, q in enumerate(qs, start=1):
        assert q["question"] in (out / f"{i}.txt").read_text()
        r = recs[i]
        assert r["id"] == q["id"] and r["attempts"] == 1 and r["finish_reason"] == "stop"
        assert r["input_tokens"] > 0 and r["output_tokens"] > 0 and r["cost_usd"] > 0
        assert r["prompt"][0]["role"] == "system" and r["prompt"][1]["role"] == "user"
    lines = (out / "responses.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(1, 13))

    m = manifest(out)
    assert m["status"] == "complete" and m["done"] == 12
    assert m["revision"] == "gpt-4o-2024-08-06"  # the version that answered, from the API
    assert m["parameters"]["resolved"]["request_params"] == {
        "model": "gpt-4o", "max_tokens": 1024, "temperature": 0.0, "seed": 0}
    usage = m["usage"]
    assert usage["input_tokens"] == sum(r["input_tokens"] for r in recs.values())
    assert usage["output_tokens"] == sum(r["output_tokens"] for r in recs.values())
    assert usage["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in recs.values()), abs=1e-6)
    assert all(r.key_ok for r in server.requests) and len(server.requests) == 12
    body = server.requests[0].body
    assert body["max_tokens"] == 1024 and body["temperature"] == 0.0 and "max_completion_tokens" not in body


@pytest.mark.parametrize("model", ["o3-mini", "gpt-5"])
def test_reasoning_models_get_max_completion_tokens_and_default_temperature(
        project, pubmedqa, server, key, model):
    questions(project, pubmedqa, 2)
    cfg = config(project, model, server.url, reasoning_effort="low")

    assert run_cli("run", cfg) == 0

    for req in server.requests:
        assert req.body["max_completion_tokens"] == 1024 and req.body["reasoning_effort"] == "low"
        assert "max_tokens" not in req.body and "temperature" not in req.body
    m = manifest(model_dir(project, model))
    sent = m["parameters"]["resolved"]["request_params"]
    assert sent["max_completion_tokens"] == 1024 and "temperature" not in sent
    assert any("temperature 0 not sent" in w for w in m["warnings"])
    assert all(r["reasoning_tokens"] > 0 for r in records(model_dir(project, model)).values())


def test_429_waits_as_long_as_retry_after_says(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 3)
    server.on(qs[1]["question"], Fault.rate_limit(retry_after=1))
    cfg = config(project, "gpt-4o", server.url)

    assert run_cli("run", cfg) == 0

    first, second = server.requests_matching(qs[1]["question"])
    assert second.at - first.at >= 1.0  # not a speed check: the retry must not come early
    out = model_dir(project, "gpt-4o")
    assert records(out)[2]["attempts"] == 2 and qs[1]["question"] in (out / "2.txt").read_text()
    assert manifest(out)["usage"]["this_session"]["rate_limited"] == 1


def test_server_errors_and_garbage_are_retried(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 4)
    server.on(qs[0]["question"], Fault.server_error(500), Fault.server_error(503))
    server.on(qs[2]["question"], Fault.malformed())
    cfg = config(project, "gpt-4o", server.url)

    assert run_cli("run", cfg) == 0

    recs = records(model_dir(project, "gpt-4o"))
    assert [recs[i]["attempts"] for i in (1, 2, 3, 4)] == [3, 1, 2, 1]
    assert all(r.get("error") is None for r in recs.values())
    failed = manifest(model_dir(project, "gpt-4o"))["usage"]["this_session"]["failed_attempts"]
    assert failed == {"server": 2, "malformed": 1}


def test_a_hanging_request_times_out_and_is_asked_again(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 3)
    server.on(qs[0]["question"], Fault.hang(10))
    cfg = config(project, "gpt-4o", server.url, timeout=0.5)

    assert run_cli("run", cfg) == 0

    recs = records(model_dir(project, "gpt-4o"))
    assert recs[1]["attempts"] == 2 and recs[1].get("error") is None


def test_a_question_that_keeps_failing_is_recorded_and_the_rest_go_on(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 4)
    server.on(qs[2]["question"], *[Fault.server_error(502)] * 3)
    cfg = config(project, "gpt-4o", server.url, max_retries=2)

    assert run_cli("run", cfg) == 1  # a failed run: one question has no answer

    out = model_dir(project, "gpt-4o")
    recs = records(out)
    assert recs[3]["attempts"] == 3 and "HTTP 502" in recs[3]["error"] and "gave up" in recs[3]["error"]
    assert not (out / "3.txt").exists()
    assert all((out / f"{i}.txt").exists() for i in (1, 2, 4))
    m = manifest(out)
    assert m["status"] == "failed" and m["done"] == 3 and m["errors"] == 1

    # The server has recovered: the same command asks only the missing question again.
    asked = len(server.requests)
    assert run_cli("run", cfg) == 0
    assert len(server.requests) == asked + 1
    assert qs[2]["question"] in (out / "3.txt").read_text()
    assert manifest(out)["status"] == "complete"


def test_a_bad_request_is_not_retried(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 2)
    server.on(qs[0]["question"], Fault.status_code(400, {"error": {
        "message": "This model's maximum context length is 128000 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}))
    cfg = config(project, "gpt-4o", server.url)

    assert run_cli("run", cfg) == 1

    rec = records(model_dir(project, "gpt-4o"))[1]
    assert rec["attempts"] == 1 and "maximum context length" in rec["error"]


def test_missing_key_is_a_clear_error_before_anything_is_written(
        project, pubmedqa, server, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.delenv("OPENAI_API_KEY")
    questions(project, pubmedqa, 2)
    cfg = config(project, "gpt-4o", server.url)

    assert run_cli("run", cfg) == 2

    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and ".env" in err and "Traceback" not in err
    assert not (project / "out").exists()
    assert server.requests == []


def test_the_key_may_come_from_a_dotenv_file(project, pubmedqa, server, monkeypatch):
    monkeypatch.setenv("LAB_TEST_OPENAI_KEY", "x")
    monkeypatch.delenv("LAB_TEST_OPENAI_KEY")  # restored (absent) after the test
    (project / ".env").write_text(f"LAB_TEST_OPENAI_KEY={KEY}\n")
    questions(project, pubmedqa, 2)
    cfg = config(project, "gpt-4o", server.url, api_key_env="LAB_TEST_OPENAI_KEY")

    assert run_cli("run", cfg) == 0
    assert all(r.key_ok for r in server.requests)


def _all_text(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_a_rejected_key_stops_the_model_at_once_and_is_never_written(
        project, pubmedqa, server, monkeypatch, capsys, caplog):
    wrong = "sk-wrong-key-that-must-not-leak"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    questions(project, pubmedqa, 20)
    cfg = config(project, "gpt-4o", server.url, concurrency=2)

    with caplog.at_level("DEBUG"):
        assert run_cli("-v", "run", cfg) == 1

    out = model_dir(project, "gpt-4o")
    m = manifest(out)
    assert m["status"] == "failed" and "rejected the API key from OPENAI_API_KEY" in m["error"]
    assert m["done"] == 0
    assert len(server.requests) <= 2  # stopped at once, not once per question
    captured = capsys.readouterr()
    assert "rejected the API key" in captured.out + captured.err
    for text in (_all_text(project / "out"), captured.out, captured.err, caplog.text):
        assert wrong not in text


def test_an_exhausted_quota_stops_the_model(project, pubmedqa, server, key):
    questions(project, pubmedqa, 10)
    server.enqueue(Fault.quota())
    cfg = config(project, "gpt-4o", server.url, concurrency=1)

    assert run_cli("run", cfg) == 1

    m = manifest(model_dir(project, "gpt-4o"))
    assert m["status"] == "failed" and "quota exhausted" in m["error"]
    assert len(server.requests) == 1
