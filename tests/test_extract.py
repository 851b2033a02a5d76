"""Reading the chosen option out of a free-text answer: a table of answers models really give."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter

import pytest

from launcher.scoring.extract import extract, extract_choice, fold
from tests import extract_reference

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


# The fast extraction must choose exactly what the straightforward rules chose
# (tests/extract_reference.py, the module as first written), answer for answer.

ALL_CHARACTERS = "".join(map(chr, [*range(0xD800), *range(0xE000, sys.maxunicode + 1)]))


def test_fold_compares_as_the_regex_engine_ignores_case_for_every_character():
    folded = fold(ALL_CHARACTERS)
    assert len(folded) == len(ALL_CHARACTERS)  # one character for one: positions carry over
    # Words and spaces stay words and spaces, so \b, \w and \s read the same at every position;
    # str.isspace is \s (the marker search walks back over spaces with it).
    for cls in (r"\w", r"\s"):
        assert ([m.start() for m in re.finditer(cls, ALL_CHARACTERS)]
                == [m.start() for m in re.finditer(cls, folded)])
    assert [c for c in ALL_CHARACTERS if c.isspace()] == re.findall(r"\s", ALL_CHARACTERS)
    # A character matches an ASCII pattern character ignoring case exactly when it folds to it.
    ascii_like = {m.start() for m in re.finditer(r"[\x00-\x7f]", ALL_CHARACTERS, re.IGNORECASE)}
    assert ascii_like == {i for i, c in enumerate(folded) if c.isascii()}
    for i in ascii_like:
        for x in map(chr, range(128)):
            hit = re.match(re.escape(x), ALL_CHARACTERS[i], re.IGNORECASE) is not None
            assert hit == (folded[i] == x.lower()), (hex(i), x)
    assert all(c.lower() for c in ALL_CHARACTERS)  # lower() never drops a character


OPTION_SETS = [
    YNM, DRUGS,
    {"A": "Tamoxifen", "B": "Letrozole", "C": "Trastuzumab", "D": "Observation", "E": "Surgery"},
    {"A": "β-blocker", "B": "İnterferon alfa", "C": "ΣΑΣ regimen", "D": "Kelvin K"},
    {"A": "a statin", "B": "an ACE inhibitor", "C": "watchful waiting"},
    {"a": "yes", "b": "no"},
    {"1": "surgery", "2": "radiotherapy", "10": "none"},
]
HEADS = [
    "Answer: {L}", "answer: {l}", "ANSWER - {L}", "**Answer:** ({L}) {T}", "Final   answer:\n{L}",
    "The correct option is {L}", "my\tchoice would be {T}", "Best answer = {L}.", "The response is {l}",
    "I would choose {L}", "i will go with {T}", "I select option {L}", "İ choose {L}", "ı pick {l}",
    "reſponse: {L}", "The answer is {T}.", "{L} is correct.", "({L}) is the best", "{l}) is right",
    "{L}", "**{L}**", "({L})", "{T}", "{T}, because", "{T} and more", "{L}. Because", "{L}) {T}",
    "letter {l}", "choice: option {L}", "correct answer—{L}", "answer – {T}", "A patient with {T}",
    "a mix of {T}", "none of the above", "It cannot be determined.", "I can't answer that.",
    "Not enough information", "NONE OF THE OPTIONS", "I am unsure between {T} and {T2}.", "",
]
FILLER = [
    "The trial randomised 400 patients and found a clear survival benefit.",
    "Median follow-up was 5.2 years (range 1–9); HR 0.71 ± 0.08, p ≤ 0.05.",
    "Serum μ-opioid levels rose in ΣΑΣ patients; Ελληνικά ΣΟΦΟΣ.",
    "We analysed the data\u00a0with care\u3000and\u2003spaces.",
    "Selected patients were going to the clinic a year ago with pain.",
    "In my view the best approach is individualised; the right dose varies.",
    "Question: Does adjuvant radiotherapy improve survival?",
    "Options:", "**Bold claim**", "(see Table 2)", "</script><b>tag</b>", "I", "i", "answer", "Answer:",
]
SEPARATORS = [" ", "  ", "\n", "\r\n", "\n\n", "\t", "\u2028", "\x0b", "\x1c", "\u00a0", " \n "]


def _answer(rng: random.Random, options: dict[str, str]) -> str:
    labels = list(options)
    parts = []
    for _ in range(rng.randint(1, 7)):
        kind = rng.random()
        if kind < 0.45:
            label, other = rng.choice(labels), rng.choice(labels)
            part = rng.choice(HEADS).format(L=label, l=label.lower(), T=options[label], T2=options[other])
        elif kind < 0.55:  # the options restated, as a model copying the question does
            part = "\n".join(f"{x}. {options[x]}" for x in labels)
        else:
            part = rng.choice(FILLER)
        parts.append(rng.choice([str.upper, str.lower, str.swapcase, *[str] * 7])(part))
    opening, closing = rng.choice(["", "", "**", "> ", "  "]), rng.choice(["", ".", "\n"])
    return opening + rng.choice(SEPARATORS).join(parts) + closing


# Where folding case changes a text's length or a letter's class: each must read as before.
EDGES = [
    ("İnterferon alfa".lower(), OPTION_SETS[3]), ("İNTERFERON ALFA", OPTION_SETS[3]),
    ("ΣΑΣ regimen".lower(), OPTION_SETS[3]), ("Answer: σας regimen", OPTION_SETS[3]),
    ("İ CHOOSE B", YNM), ("ı choose b", YNM), ("final\u2028answer: C", YNM), ("my\u00a0choice: B", YNM),
    ("The reſponse is B", YNM), ("kelvin k", OPTION_SETS[3]), ("Answer: KELVIN K", OPTION_SETS[3]),
]


def test_the_fast_rules_choose_what_the_reference_rules_chose():
    for text, options in EDGES:
        expected, got = extract_reference.extract(text, options), extract(text, options)
        assert (got.choice, got.rule) == (expected.choice, expected.rule), (text, options)
    rng = random.Random(24)
    rules: Counter[str] = Counter()
    for n in range(8_000):
        options = rng.choice(OPTION_SETS)
        text = _answer(rng, options)
        expected, got = extract_reference.extract(text, options), extract(text, options)
        assert (got.choice, got.rule) == (expected.choice, expected.rule), (n, text, options)
        rules[got.rule] += 1
    # The sample reaches every rule, or it would prove less than it seems to.
    assert set(rules) >= {"answer phrase", "label", "option text", "leading label", "leading option text",
                          "label line", "marked label", "refusal", "ambiguous", "no answer"}, rules
