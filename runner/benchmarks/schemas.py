"""Each dataset's Hub schema mapped onto our question fields.

A mapper takes one row (a dict, as ``datasets`` yields it) and returns the fields of a
``runner.questions.Question`` except ``id`` (given by the loader). It raises ``ValueError``
with a short reason when a value is not what the schema promises; the loader turns that
into one ``SchemaChanged`` line naming the dataset, split and row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LETTERS = "ABCD"
PUBMEDQA_CHOICES = ("yes", "no", "maybe")


@dataclass(frozen=True)
class Schema:
    #: columns that must be present (others are ignored)
    columns: tuple[str, ...]
    to_fields: Callable[[dict[str, Any]], dict[str, Any]]


def _text(row: dict, column: str, *, blank_ok: bool = False) -> str:
    value = row[column]
    if not isinstance(value, str):
        raise ValueError(f"{column} is {type(value).__name__}, expected text")
    if not blank_ok and not value.strip():
        raise ValueError(f"{column} is blank")
    return value


def _texts(row: dict, column: str, n: int | None = None) -> list[str]:
    value = row[column]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{column} is {type(value).__name__}, expected a list of texts")
    if n is not None and len(value) != n:
        raise ValueError(f"{column} has {len(value)} entries, expected {n}")
    return list(value)


def _label(row: dict, column: str, n: int) -> int:
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{column} is {value!r}, expected an option number 0-{n - 1}")
    if not 0 <= value < n:
        raise ValueError(f"{column} is {value}, expected an option number 0-{n - 1}")
    return value


def _medqa(row: dict) -> dict[str, Any]:
    # GBaker's export of MedQA's US 4-option set: sent1 is the vignette and question, sent2 is
    # empty (a multiple-choice "swag" layout); the harness reads sent1 only, and so do we.
    return {
        "question": _text(row, "sent1"),
        "options": [_text(row, f"ending{i}", blank_ok=True) for i in range(4)],
        "answer": LETTERS[_label(row, "label", 4)],
        "meta": {"source_id": row["id"]},
    }


def _medmcqa(row: dict) -> dict[str, Any]:
    exp = row.get("exp")
    return {
        "question": _text(row, "question"),
        "options": [_text(row, f"op{x}", blank_ok=True) for x in "abcd"],
        "answer": LETTERS[_label(row, "cop", 4)],
        "meta": {
            "source_id": row["id"],
            "subject_name": row.get("subject_name"),
            "topic_name": row.get("topic_name"),
            "choice_type": row.get("choice_type"),
            "explanation": exp if isinstance(exp, str) and exp.strip() else None,
        },
    }


def _pubmedqa(row: dict) -> dict[str, Any]:
    decision = row["final_decision"]
    if decision not in PUBMEDQA_CHOICES:
        raise ValueError(f"final_decision is {decision!r}, expected one of yes, no, maybe")
    long_answer = row.get("LONG_ANSWER")
    return {
        "question": _text(row, "QUESTION"),
        # The harness joins the abstract's sections with "\n" (preprocess_pubmedqa).
        "context": "\n".join(_texts(row, "CONTEXTS")),
        "options": list(PUBMEDQA_CHOICES),
        "answer": decision,
        "reference": long_answer if isinstance(long_answer, str) and long_answer.strip() else None,
        "meta": {"year": row.get("YEAR"), "meshes": row.get("MESHES")},
    }


def _mmlu(row: dict) -> dict[str, Any]:
    return {
        # The harness renders {{question.strip()}}; stripping here keeps both prompts equal.
        "question": _text(row, "question").strip(),
        "options": _texts(row, "choices", 4),
        "answer": LETTERS[_label(row, "answer", 4)],
        "meta": {"subject": row.get("subject")},
    }


MEDQA = Schema(("id", "sent1", "ending0", "ending1", "ending2", "ending3", "label"), _medqa)
MEDMCQA = Schema(("id", "question", "opa", "opb", "opc", "opd", "cop"), _medmcqa)
PUBMEDQA = Schema(("QUESTION", "CONTEXTS", "final_decision", "LONG_ANSWER"), _pubmedqa)
MMLU = Schema(("question", "choices", "answer"), _mmlu)
