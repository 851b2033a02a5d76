"""Reading the chosen option out of a free-text answer: a table of answers models really give."""

from __future__ import annotations

import pytest

from launcher.scoring.extract import extract, extract_choice

YNM = {"A": "yes", "B": "no", "C": "maybe"}
DRUGS = {"A": "Tamoxifen", "B": "Letrozole", "C": "Trastuzumab", "D": "None of the above"}

RESTATED = """Question: Does adjuvant radiotherapy improve survival?
Options:
A. yes
B. no
C. maybe

The trial randomised 400 patients and found a clear survival benefit.
Final answer: A"""

CASES = [
    # (answer text, options, expected label)
    ("B", YNM, "B"),
    ("b", YNM, "B"),
    ("**B**", YNM, "B"),
    ("(C)", YNM, "C"),
    ("C.", YNM, "C"),
    ("Answer: B", YNM, "B"),
    ("answer: c", YNM, "C"),
    ("the answer is b because the effect vanished", YNM, "B"),
    ("The answer is a matter of debate; the data say no.", YNM, "B"),
    ("**Answer:** A", YNM, "A"),
    ("**Answer**: (B) no", YNM, "B"),
    ("Answer: (C) maybe", YNM, "C"),
    ("The answer is yes.", YNM, "A"),
    ("The correct answer is option B because the effect vanished.", YNM, "B"),
    ("yes", YNM, "A"),
    ("Maybe.", YNM, "C"),
    ("No, the difference was not significant.", YNM, "B"),
    ("B. The study found no difference between arms.", YNM, "B"),
    ("B) no", YNM, "B"),
    (RESTATED, YNM, "A"),
    ("A. yes\nB. no\nC. maybe\n\nB", YNM, "B"),
    ("Answer: A. On reflection, the answer is C.", YNM, "C"),
    ("I would choose C given the mixed evidence.", YNM, "C"),
    ("The evidence is mixed, so I lean to (C) here.", YNM, "C"),
    ("Based on the abstract, the intervention clearly worked: yes.", YNM, "A"),
    ("Letrozole is the usual choice after menopause.", DRUGS, "B"),
    ("The answer is trastuzumab.", DRUGS, "C"),
    ("Answer: None of the above", DRUGS, "D"),
    ("A patient with HER2-positive disease should get trastuzumab.", DRUGS, "C"),
    ("B is correct.", DRUGS, "B"),
]

NO_ANSWER = [
    ("", YNM),
    ("   ", YNM),
    (None, YNM),
    ("none of the above", YNM),
    ("None of the options fits this patient.", YNM),
    ("It cannot be determined from the abstract.", YNM),
    ("Yes and no: the study is small, so maybe.", YNM),
    ("A patient-level analysis would be needed.", YNM),
    ("I am not able to give medical advice.", YNM),
]


@pytest.mark.parametrize(("text", "options", "expected"), CASES)
def test_the_chosen_option_is_found(text, options, expected):
    assert extract_choice(text, options) == expected, extract(text, options)


@pytest.mark.parametrize(("text", "options"), NO_ANSWER)
def test_no_answer_is_not_a_guess(text, options):
    assert extract_choice(text, options) is None


def test_the_rule_that_found_it_is_named():
    assert extract("Final answer: A", YNM).rule == "answer phrase"
    assert extract("none of the above", YNM).rule == "refusal"
    assert extract("**B**", YNM).rule == "label"


def test_a_free_text_question_has_no_choice():
    assert extract_choice("B", None) is None
