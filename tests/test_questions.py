"""The questions file: the seed's one-key lines still work; richer items carry through."""

from __future__ import annotations

import json

import pytest

from runner.errors import QuestionsError
from runner.questions import dump_questions, load_questions, parse_questions
from tests.conftest import REPO


def test_seed_format_gets_line_number_ids():
    qs = parse_questions(['{"question": "What is HER2?"}', "", '{"question": "What is BRCA1?"}'], "q")
    assert [(q.id, q.index) for q in qs] == [("1", 1), ("3", 2)]


def test_options_list_becomes_lettered_and_gold_text_maps_to_letter():
    line = {"id": 7, "question": "Is it?", "context": "Abstract.", "options": ["yes", "no", "maybe"],
            "answer": "no", "reference": "It is not.", "meta": {"pmid": "1"}}
    (q,) = parse_questions([json.dumps(line)], "q")
    assert q.id == "7" and q.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert q.gold_letter == "B" and q.meta == {"pmid": "1"}
    again = parse_questions(dump_questions([q]).splitlines(), "q")[0]
    assert again.model_dump() == q.model_dump()


def test_options_mapping_and_letter_answer():
    (q,) = parse_questions(['{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "b"}'], "q")
    assert q.gold_letter == "B"


@pytest.mark.parametrize(("line", "message"), [
    ('{"questions": "typo"}', "missing the 'question' key"),
    ('["not", "an", "object"]', "expected a JSON object"),
    ('{"question": "   "}', "blank"),
    ('{"question": "Q?", "options": ["only one"]}', "at least two"),
    ('{"question": "Q?", "options": ["a", "b"], "answer": "c"}', "neither an option letter"),
    ('{"question": "Q?", "colour": "red"}', "unknown key"),
    ('{"question": "Q?", "options": {"A": "x", "a ": "y", "A ": "z"}}', "option keys 'A' and 'A '"),
    ('{"question": "Q?", "options": {"A": "x", " ": "y"}}', "option key ' ' is blank"),
    ('{"question": "Q?", "meta": {"auc": -Infinity}}', "-Infinity is not a JSON number"),
    ('{"question": "Q?", "meta": [1e400]}', "1e400 is too large for a number"),
])
def test_bad_lines_are_named_by_line_number(line, message):
    with pytest.raises(QuestionsError) as e:
        parse_questions(['{"question": "fine"}', line], "qs.jsonl")
    assert str(e.value).startswith("qs.jsonl:2:")
    assert message in str(e.value)


def test_shipped_seed_questions():
    qs = load_questions(REPO / "questions" / "seed.jsonl")
    assert len(qs) == 30
    first_five = [q.question for q in qs[:5]]
    assert first_five[0] == "What are the symptoms of type 2 diabetes?"
    assert "Explain the mechanism of action of statins." in first_five


def test_shared_pubmedqa_file_loads(pubmedqa):
    qs = load_questions(pubmedqa)
    assert len(qs) == 200
    assert all(q.options and q.gold_letter for q in qs)


def test_questions_jsonl_is_standard_json_whatever_made_the_questions():
    """A benchmark row can hold a float NaN, which Python's json would write as a bare NaN
    that every other JSON reader refuses: the question is refused, and the writer never writes one."""
    from runner.artefacts import jsonl
    from runner.questions import Question

    with pytest.raises(ValueError, match="meta holds NaN"):
        Question(id="medqa-test-1", question="Q?", meta={"year": float("nan")})
    with pytest.raises(ValueError):
        jsonl.dumps({"year": float("inf")})
