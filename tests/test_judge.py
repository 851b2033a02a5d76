"""LLM-as-judge: an API model of the run grades every prose answer; verdicts are stored and shown.

The judge is a loopback server speaking OpenAI's chat-completions wire format, driven through
the real ``openai`` SDK by the run's own OpenAI backend. It grades like a strict but simple
examiner, so the tests know which verdict each answer must get.
"""

from __future__ import annotations

import csv
import json
import re

import pytest

from launcher.judge import parse_verdict
from tests.conftest import run_cli
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.report_fixtures import FakeModel, tiny_models, tiny_questions, write_run

KEY_ENV = "LAB_TEST_JUDGE_KEY"
NO_JSON_ANSWER = "Something in the blood."  # flaky-model's free-text answer; the judge rambles


class GradingServer(FakeOpenAI):
    """Replies with a verdict: safety 5 only when the answer tells the reader to see a doctor."""

    def respond(self, path, body, key_ok):
        status, payload, headers = super().respond(path, body, key_ok)
        if status != 200 or not isinstance(payload, dict):
            return status, payload, headers
        user = body["messages"][-1]["content"]
        answer = user.split("ANSWER TO GRADE:\n", 1)[1]
        if answer == NO_JSON_ANSWER:
            text = "This answer is vague; I would rate it poorly overall."
        else:
            safety = 5 if "consult" in answer.lower() else 2
            verdict = {"accuracy": 4, "completeness": 3, "safety": safety, "rationale": "ok"}
            text = f"```json\n{json.dumps(verdict)}\n```"
        payload["choices"][0]["message"]["content"] = text
        return status, payload, headers


@pytest.fixture
def judge_server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-judge-test")
    with GradingServer(key="sk-judge-test") as server:
        yield server


def _run_with_judge(root, server):
    judge = FakeModel("judge-gpt", "gpt-4o-mini", backend="openai",
                      answer=lambda q: f"{q.question} Please consult your doctor.",
                      entry={"base_url": server.url, "api_key_env": KEY_ENV, "max_retries": 3})
    return write_run(root, tiny_questions(), tiny_models() + [judge])


def test_judge_grades_every_prose_answer_and_the_report_shows_it(tmp_path, judge_server):
    run = _run_with_judge(tmp_path, judge_server)
    judge_server.enqueue(Fault.rate_limit(retry_after=0))  # the first call is refused once

    assert run_cli("report", run, "--judge", "judge-gpt", "--encoder", "none") == 0

    folder = run / "judge" / "judge-gpt"
    meta = json.loads((folder / "judge.json").read_text())
    assert meta["judge_model"] == "gpt-4o-mini" and "safety" in meta["system_prompt"]
    verdicts = [json.loads(line) for line in (folder / "verdicts.jsonl").read_text().splitlines()]
    # 4 models x 4 questions, less flaky-model's error on HER2: 15 answers, each judged once.
    assert len(verdicts) == 15
    assert len({(v["model_dir"], v["index"]) for v in verdicts}) == 15
    assert len(judge_server.requests) == 16  # the refused call was retried
    good_free = next(v for v in verdicts if v["model_dir"] == "good-model" and v["id"] == "q-free")
    assert good_free["scores"] == {"accuracy": 4, "completeness": 3, "safety": 5}
    assert "ANSWER TO GRADE" in good_free["prompt"] and good_free["raw"].startswith("```json")
    rambling = next(v for v in verdicts if v["model_dir"] == "flaky-model" and v["id"] == "q-free")
    assert rambling["scores"] is None and "no JSON verdict" in rambling["error"]

    html = (run / "report.html").read_text()
    assert "Judged by gpt-4o-mini" in html
    assert "judge gpt-4o-mini: accuracy 4, completeness 3, safety 5" in html
    rows = {r["model_dir"]: r for r in csv.DictReader((run / "metrics.csv").open())}
    assert float(rows["judge-gpt"]["judge:gpt-4o-mini:safety"]) == 5.0
    # good-model: only its free-text answer says "consult" -> (2 + 2 + 2 + 5) / 4
    assert float(rows["good-model"]["judge:gpt-4o-mini:safety"]) == pytest.approx(2.75)
    summary = json.loads((run / "metrics.json").read_text())["judges"][0]
    assert summary["verdicts"] == 15 and summary["failed"] == 1


def test_judging_again_only_asks_what_has_no_verdict(tmp_path, judge_server):
    run = _run_with_judge(tmp_path, judge_server)
    assert run_cli("report", run, "--judge", "judge-gpt", "--encoder", "none") == 0
    asked = len(judge_server.requests)

    assert run_cli("report", run, "--judge", "gpt-4o-mini", "--encoder", "none") == 0

    assert len(judge_server.requests) == asked + 1  # only the answer that got no verdict
    # The report (without --judge) still shows the stored verdicts.
    assert run_cli("report", run, "--encoder", "none") == 0
    assert "Judged by gpt-4o-mini" in (run / "report.html").read_text()


def test_the_judge_must_be_an_api_model_of_the_run(tmp_path, judge_server, capsys):
    run = _run_with_judge(tmp_path, judge_server)

    assert run_cli("report", run, "--judge", "good-model") == 2
    assert "must be an API model" in capsys.readouterr().err
    assert run_cli("report", run, "--judge", "gpt-5") == 2
    err = capsys.readouterr().err
    assert "no such model" in err and "judge-gpt" in err
    assert not (run / "judge").exists() and not (run / "report.html").exists()
    assert judge_server.requests == []


def test_a_missing_key_is_reported_before_anything_is_written(tmp_path, judge_server, monkeypatch, capsys):
    run = _run_with_judge(tmp_path, judge_server)
    monkeypatch.delenv(KEY_ENV)

    assert run_cli("report", run, "--judge", "judge-gpt") == 2
    assert KEY_ENV in capsys.readouterr().err
    assert not (run / "judge").exists()


@pytest.mark.parametrize(("reply", "scores"), [
    ('{"accuracy": 5, "completeness": 4, "safety": 3, "rationale": "fine"}', (5, 4, 3)),
    ('```json\n{"accuracy": 2, "completeness": 2, "safety": 1}\n```', (2, 2, 1)),
    ('Here is my verdict: {"Accuracy": "4", "Completeness": 3.0, "Safety": 5} Hope it helps.', (4, 3, 5)),
    ("accuracy: 3\ncompleteness: 4\nsafety: 2", (3, 4, 2)),
    ('{"accuracy": 7, "completeness": 4, "safety": 3}', None),
    ('{"accuracy": 4, "completeness": 4}', None),
    ('{"accuracy": true, "completeness": 4, "safety": 3}', None),
    ("", None),
    ("I cannot grade this.", None),
])
def test_parse_verdict(reply, scores):
    got, _rationale, error = parse_verdict(reply)
    if scores is None:
        assert got is None and error
    else:
        assert error is None
        assert tuple(got[c] for c in ("accuracy", "completeness", "safety")) == scores


def test_judge_prompt_holds_the_question_the_key_and_the_answer():
    from launcher.judge import judge_prompt

    q = tiny_questions()[1]
    text = judge_prompt(q, "B, trastuzumab.")
    assert re.search(r"QUESTION:\nWhich drug targets HER2\?", text)
    assert "GOLD ANSWER: B. Trastuzumab" in text and "REFERENCE ANSWER:" in text
    assert text.endswith("ANSWER TO GRADE:\nB, trastuzumab.")
