"""Running the same run again (issue 17, items 2 and 3).

A rerun that is refused leaves the run exactly as it was; one that is accepted keeps every
warning that describes answers still in the run, whether or not it had anything left to do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from runner.engine import concurrent_driver
from tests.conftest import run_cli, write
from tests.fakes.openai_server import FakeOpenAI, Fault

KEY = "sk-test-0123456789abcdef"
QUESTIONS = [
    "Which receptor does trastuzumab target?",
    "Name one aromatase inhibitor.",
    "What does BRCA1 repair?",
]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(concurrent_driver, "DEFAULT_POLICY",
                        concurrent_driver.RetryPolicy(base_delay=0.01, max_delay=0.05))


def questions(project: Path) -> None:
    (project / "q.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a digest of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_rerun_writes_nothing_not_even_run_json(project, capsys):
    questions(project)
    cfg = write(project / "models.yaml", """
        name: rerun
        questions: q.jsonl
        output: out
        models:
          - {id: echo-check, backend: echo}
    """)
    assert run_cli("run", cfg, "--run-id", "same") == 0
    before = tree(project / "out")
    # One setting changed, the same run id: the stored answers were made otherwise.
    write(project / "models.yaml", (project / "models.yaml").read_text().replace(
        "backend: echo}", "backend: echo, generation: {max_new_tokens: 3}}"))
    capsys.readouterr()
    assert run_cli("run", cfg, "--run-id", "same") == 2
    err = capsys.readouterr().err.strip()
    assert "already holds answers made with other settings" in err and "\n" not in err
    assert tree(project / "out") == before


def test_an_accepted_rerun_keeps_run_json_as_first_written(project):
    questions(project)
    cfg = write(project / "models.yaml", """
        name: rerun
        questions: q.jsonl
        output: out
        models:
          - {id: echo-check, backend: echo}
    """)
    assert run_cli("run", cfg) == 0
    (run,) = (project / "out").iterdir()
    first = (run / "run.json").read_bytes()
    assert run_cli("run", cfg) == 0
    assert (run / "run.json").read_bytes() == first


@pytest.fixture
def openai_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(key=KEY) as server:
        yield server


def test_warnings_outlive_a_rerun_that_has_nothing_left_to_do(project, openai_server):
    questions(project)
    # o3-mini is a reasoning model: the temperature is not sent, which the manifest warns about;
    # one answer comes back empty at the token limit, which it warns about too.
    openai_server.on("aromatase", Fault.empty_length())
    cfg = write(project / "models.yaml", f"""
        name: warn
        questions: q.jsonl
        output: out
        models:
          - id: o3-mini
            backend: openai
            base_url: {openai_server.url}
    """)
    assert run_cli("run", cfg) == 0
    (run,) = (project / "out").iterdir()
    first = json.loads((run / "o3-mini" / "manifest.json").read_text())["warnings"]
    assert any("temperature" in w for w in first)
    assert any("empty with finish_reason 'length'" in w for w in first)

    sent = len(openai_server.requests)
    assert run_cli("run", cfg) == 0  # every answer is stored: nothing is sent again
    assert len(openai_server.requests) == sent
    again = json.loads((run / "o3-mini" / "manifest.json").read_text())["warnings"]
    assert again == first


def test_a_warning_derived_from_the_answers_is_counted_once_across_reruns(project, openai_server):
    questions(project)
    openai_server.on("aromatase", Fault.empty_length())
    openai_server.on("BRCA1", Fault.status_code(400, {"error": {"message": "bad request"}}))
    cfg = write(project / "models.yaml", f"""
        name: warn2
        questions: q.jsonl
        output: out
        models:
          - id: gpt-4o
            backend: openai
            base_url: {openai_server.url}
    """)
    assert run_cli("run", cfg) == 1  # the 400 leaves one question failed
    # The rerun answers the failed question; the empty answer is still there and still warned about, once.
    assert run_cli("run", cfg) == 0
    (run,) = (project / "out").iterdir()
    warnings = json.loads((run / "gpt-4o" / "manifest.json").read_text())["warnings"]
    assert [w for w in warnings if "empty with finish_reason" in w] == [
        "1 answer(s) empty with finish_reason 'length': the output-token limit was reached before any "
        "answer text (thinking/reasoning tokens count against it); raise generation.max_new_tokens "
        "(now 512); questions 2"
    ]
