"""`launcher show DIR N`: every model's answer to one question, in the terminal."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.report_fixtures import FakeModel, tiny_questions, tiny_run, write_run


@pytest.fixture
def wide(monkeypatch):
    # rich wraps to the terminal; a fixed width keeps the phrases the tests look for on one line.
    monkeypatch.setenv("COLUMNS", "160")


def test_show_prints_the_question_and_every_answer_with_its_verdict(tmp_path, capsys, wide):
    run = tiny_run(tmp_path)

    assert run_cli("show", run, "2") == 0
    out = capsys.readouterr().out

    assert "Question 2" in out and "Which drug targets HER2?" in out
    assert "B. Trastuzumab (gold)" in out
    assert "good-model" in out and "B ✓ correct" in out and "trastuzumab binds HER2" in out
    assert "weak-model" in out and "no answer" in out
    assert "flaky-model" in out and "RateLimitError: 429 after 5 attempts" in out


def test_show_finds_a_question_by_id_and_prints_answers_verbatim(tmp_path, capsys, wide):
    run = tiny_run(tmp_path)

    assert run_cli("show", run, "q-free") == 0
    out = capsys.readouterr().out

    assert "Explain what a tumour marker is." in out
    # Free text has no option to be right or wrong about, and markup-like text stays text.
    assert "correct" not in out and "wrong" not in out
    assert '<script>window.__pwned = 1</script>' in out


def test_show_shortens_a_long_context_unless_full(tmp_path, capsys, wide):
    q = tiny_questions()[0].model_copy(update={"context": "Background. " * 150 + "THE-END-OF-CONTEXT"})
    run = write_run(tmp_path, [q], [FakeModel("m", "m", answer=lambda _q: "Answer: A")])

    assert run_cli("show", run, "1") == 0
    short = capsys.readouterr().out
    assert "THE-END-OF-CONTEXT" not in short and "…" in short

    assert run_cli("show", run, "1", "--full") == 0
    assert "THE-END-OF-CONTEXT" in capsys.readouterr().out


def test_show_an_unknown_question_is_bad_input(tmp_path, capsys):
    run = tiny_run(tmp_path)

    assert run_cli("show", run, "9") == 2
    err = capsys.readouterr().err
    assert "question '9'" in err and "4 questions" in err


def test_a_huge_unbroken_answer_is_cut_with_a_note_of_its_size(tmp_path, capsys, wide):
    """A runaway model's 50 MB answer kept rich busy for minutes: a terminal gets the first
    20,000 characters, the size of the whole, and the file that holds it; --full too."""
    size = 300_000
    answer = "A" + "x" * (size - 2) + "Z"
    run = write_run(tmp_path, tiny_questions()[:1], [FakeModel("m", "m", answer=lambda _q: answer)])

    for extra in ((), ("--full",)):
        assert run_cli("show", run, "1", *extra) == 0
        out = capsys.readouterr().out
        assert f"20,000 of {size:,} characters shown" in out
        assert str(run / "m" / "1.txt") in out.replace("\n", "").replace("│", "").replace(" ", "")
        assert "xZ" not in out and len(out) < 40_000
