"""``backend: gemini`` through the real google-genai SDK against a loopback generateContent server.

The server speaks ``/v1beta/models/{model}:generateContent`` with Google's error bodies
(RetryInfo, QuotaFailure, API_KEY_INVALID); the tests run ``launcher run`` and read what it left.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.engine import concurrent_driver as api_runner
from tests.conftest import run_cli, write
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import Fault

KEY = "AIza-test-0123456789abcdef"
MODEL = "gemini-3-pro-preview"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(api_runner, "DEFAULT_POLICY", api_runner.RetryPolicy(base_delay=0.02, max_delay=0.1))


@pytest.fixture
def server():
    with FakeGemini(key=KEY, latency=(0.0, 0.03), thoughts=11) as s:
        yield s


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)


def questions(project: Path, pubmedqa: Path, n: int) -> list[dict]:
    lines = pubmedqa.read_text(encoding="utf-8").splitlines()[:n]
    (project / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [json.loads(line) for line in lines]


def config(project: Path, url: str, max_new_tokens: int = 1024, **extra: object) -> Path:
    keys = "".join(f"\n            {k}: {json.dumps(v)}" for k, v in extra.items())
    return write(project / "models.yaml", f"""
        name: gem
        questions: q.jsonl
        output: out
        system_prompt: general-physician
        generation: {{max_new_tokens: {max_new_tokens}, temperature: 0.0}}
        models:
          - id: {MODEL}
            base_url: {url}{keys}
        """)


def out_dir(project: Path) -> Path:
    (run,) = (project / "out").iterdir()
    return run / MODEL


def records(folder: Path) -> dict[int, dict]:
    return {r["index"]: r for r in
            (json.loads(p.read_text()) for p in (folder / "records").glob("*.json"))}


def manifest(project: Path) -> dict:
    return json.loads((out_dir(project) / "manifest.json").read_text())


def test_answers_usage_and_what_was_sent(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 6)
    cfg = config(project, server.url, concurrency=3, thinking_budget=128,
                 prices={"input_per_million": 1.25, "output_per_million": 10.0})

    assert run_cli("run", cfg) == 0

    out = out_dir(project)
    recs = records(out)
    for i, q in enumerate(qs, start=1):
        assert q["question"] in (out / f"{i}.txt").read_text()
        r = recs[i]
        assert r["finish_reason"] == "stop" and r["native_finish_reason"] == "STOP"
        # Thinking is billed as output: output_tokens includes it, reasoning_tokens says how much.
        assert r["reasoning_tokens"] == 11 and r["output_tokens"] > 11 and r["cost_usd"] > 0
    sent = server.requests[0].body
    assert "general physician" not in json.dumps(sent["contents"])  # the system prompt is apart
    assert "physician" in sent["systemInstruction"]["parts"][0]["text"]
    assert sent["generationConfig"]["maxOutputTokens"] == 1024
    assert sent["generationConfig"]["temperature"] == 0.0
    # The SDK sends this nested message with proto field names; the API accepts both spellings.
    thinking = sent["generationConfig"]["thinkingConfig"]
    assert thinking.get("thinkingBudget", thinking.get("thinking_budget")) == 128
    assert all(r.key_ok and r.path.startswith(f"/v1beta/models/{MODEL}:") for r in server.requests)
    m = manifest(project)
    assert m["status"] == "complete" and m["revision"] == f"{MODEL}-001"
    assert m["usage"]["reasoning_tokens"] == 66 and m["usage"]["cost_usd"] > 0


def test_thinking_that_eats_the_whole_budget_is_recorded_and_warned_about(
        project, pubmedqa, server, key, capsys):
    qs = questions(project, pubmedqa, 3)
    server.on(qs[1]["question"], Fault.empty_length())
    cfg = config(project, server.url, max_new_tokens=256)

    run_cli("run", cfg)

    r = records(out_dir(project))[2]
    assert r["finish_reason"] == "length" and r["native_finish_reason"] == "MAX_TOKENS"
    assert r["response"] == "" and r["reasoning_tokens"] == 256
    (warning,) = manifest(project)["warnings"]
    assert "finish_reason 'length'" in warning and "max_new_tokens (now 256)" in warning
    assert qs[1]["id"] in warning
    assert "finish_reason 'length'" in capsys.readouterr().out


def test_retry_info_429_5xx_hang_and_garbage_all_end_answered(project, pubmedqa, server, key):
    qs = questions(project, pubmedqa, 5)
    server.on(qs[0]["question"], Fault.rate_limit(retry_after=1))  # RetryInfo retryDelay "1s"
    server.on(qs[1]["question"], Fault.server_error(500), Fault.server_error(503))
    server.on(qs[2]["question"], Fault.hang(10))
    server.on(qs[3]["question"], Fault.malformed())
    cfg = config(project, server.url, timeout=0.5)

    assert run_cli("run", cfg) == 0

    first, second = server.requests_matching(qs[0]["question"])
    assert second.at - first.at >= 1.0
    recs = records(out_dir(project))
    assert [recs[i]["attempts"] for i in range(1, 6)] == [2, 3, 2, 2, 1]
    failed = manifest(project)["usage"]["this_session"]["failed_attempts"]
    assert failed == {"rate_limit": 1, "server": 2, "timeout": 1, "malformed": 1}


def test_missing_key_exits_2_naming_the_variable(project, pubmedqa, server, monkeypatch, capsys):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    questions(project, pubmedqa, 2)

    assert run_cli("run", config(project, server.url)) == 2

    err = capsys.readouterr().err
    assert "GEMINI_API_KEY" in err and ".env" in err and "Traceback" not in err
    assert not (project / "out").exists() and server.requests == []


def test_google_api_key_is_accepted_as_the_sdk_documents(project, pubmedqa, server, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "x")
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    questions(project, pubmedqa, 1)

    assert run_cli("run", config(project, server.url)) == 0


def test_rejected_key_stops_the_model_and_never_leaks(
        project, pubmedqa, server, monkeypatch, capsys, caplog):
    wrong = "AIza-wrong-key-that-must-not-leak"
    monkeypatch.setenv("GEMINI_API_KEY", wrong)
    questions(project, pubmedqa, 10)

    with caplog.at_level("DEBUG"):
        assert run_cli("-v", "run", config(project, server.url, concurrency=2)) == 1

    m = manifest(project)
    assert m["status"] == "failed" and "rejected the API key from GEMINI_API_KEY" in m["error"]
    assert len(server.requests) <= 2
    captured = capsys.readouterr()
    files = "".join(p.read_text() for p in (project / "out").rglob("*") if p.is_file())
    assert wrong not in files + captured.out + captured.err + caplog.text


def test_exhausted_daily_quota_stops_the_model(project, pubmedqa, server, key):
    questions(project, pubmedqa, 10)
    server.enqueue(Fault.quota())

    assert run_cli("run", config(project, server.url, concurrency=1)) == 1

    m = manifest(project)
    assert m["status"] == "failed" and "daily quota exhausted" in m["error"]
    assert len(server.requests) == 1
