"""`launcher report` and `launcher show` print folders, model ids and judge names as written.

A run folder, a model's id and the ``--judge`` argument are the user's text and may hold
square brackets: ``[/]`` must not end in a MarkupError, ``[bold]`` must not vanish into a style.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.fakes.openai_server import FakeOpenAI
from tests.report_fixtures import FakeModel, tiny_models, tiny_questions, write_run

KEY_ENV = "LAB_TEST_MARKUP_JUDGE_KEY"
JUDGE_ID = "lab/[bold]grader[/]v2"
JUDGE_DIR = "lab_[bold]grader[_]v2"  # the id with '/' made '_', as every model folder


class TerseJudge(FakeOpenAI):
    """Grades every answer the same, as a JSON verdict."""

    def respond(self, path, body, key_ok):
        status, payload, headers = super().respond(path, body, key_ok)
        if status == 200 and isinstance(payload, dict):
            verdict = {"accuracy": 3, "completeness": 3, "safety": 4, "rationale": "[/] fine [bold]"}
            payload["choices"][0]["message"]["content"] = json.dumps(verdict)
        return status, payload, headers


@pytest.fixture
def wide(monkeypatch):
    # rich wraps to the terminal; a fixed width keeps the looked-for phrases on one line.
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def judge_server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-markup-judge")
    with TerseJudge(key="sk-markup-judge") as server:
        yield server


def _run(root, server):
    judge = FakeModel(JUDGE_DIR, JUDGE_ID, backend="openai", answer=lambda q: f"[/]{q.question} [bold]",
                      entry={"base_url": server.url, "api_key_env": KEY_ENV, "max_retries": 1})
    return write_run(root, tiny_questions(), tiny_models() + [judge])


def test_report_with_a_judge_prints_the_folder_and_the_judge_as_written(tmp_path, judge_server, wide, capsys):
    run = _run(tmp_path / "results[/]2025 [bold]panel", judge_server)

    assert run_cli("report", run, "--judge", JUDGE_ID, "--encoder", "none") == 0

    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err and "MarkupError" not in captured.err
    out = " ".join(captured.out.split())
    assert f"judge verdicts → {run / 'judge' / JUDGE_DIR}" in out
    assert f"{JUDGE_DIR}: 4/4 answered" in out
    assert f"report → {run / 'report.html'}" in out
    verdicts = (run / "judge" / JUDGE_DIR / "verdicts.jsonl").read_text().splitlines()
    assert len(verdicts) == 15  # 4 models x 4 questions (the judge too), less flaky-model's error


def test_an_unknown_judge_with_brackets_is_one_plain_line(tmp_path, judge_server, capsys):
    run = _run(tmp_path / "results[/]2025 [bold]panel", judge_server)

    assert run_cli("report", run, "--judge", "[bold]gpt[/]-5", "--encoder", "none") == 2

    err = capsys.readouterr().err
    assert "--judge [bold]gpt[/]-5: no such model" in err and JUDGE_DIR in err
    assert not (run / "report.html").exists()


def test_show_prints_a_bracketed_model_folder_as_written(tmp_path, judge_server, wide, capsys):
    run = _run(tmp_path / "results[/]2025 [bold]panel", judge_server)

    assert run_cli("show", run, "2") == 0

    out = capsys.readouterr().out
    assert JUDGE_DIR in out and "[/]Which drug targets HER2? [bold]" in out
