"""The questions file: JSONL, one object a line, seed-compatible.

``{"question": "..."}`` alone is valid. Optional keys: ``id`` (default: the 1-based line
number, as a string), ``context``, ``options`` (a list, or a mapping of letters to text),
``answer`` (an option letter or text), ``reference`` and ``meta``.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runner.artefacts import jsonl
from runner.errors import MB, QuestionsError

LETTERS = string.ascii_uppercase
#: The largest questions file read: some 230,000 questions with PubMedQA's long abstracts (200 of
#: them are 435 kB). /dev/zero, named by mistake, would otherwise be read for ever.
MAX_QUESTIONS_FILE = 500 * MB


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    question: str = Field(min_length=1)
    context: str | None = None
    options: dict[str, str] | None = None
    answer: str | None = None
    reference: str | None = None
    meta: Any = None
    # 1-based position in the file's questions (not its line): the N of N.txt.
    index: int = Field(0, exclude=True)

    @field_validator("id", mode="before")
    @classmethod
    def _id_str(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("id must be a string or a number")
        return str(v) if isinstance(v, int) else v

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question must not be blank")
        return v

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, list):
            if len(v) < 2:
                raise ValueError("options needs at least two choices")
            if len(v) > len(LETTERS):
                raise ValueError(f"options may have at most {len(LETTERS)} choices")
            if not all(isinstance(o, str | int | float) for o in v):
                raise ValueError("options must be strings")
            return {LETTERS[i]: str(o) for i, o in enumerate(v)}
        if isinstance(v, dict):
            if len(v) < 2:
                raise ValueError("options needs at least two choices")
            # Letters are read without their spaces: " A" and "A " would silently become one
            # option (and a question left with one option, which the report then refuses).
            out: dict[str, str] = {}
            written: dict[str, str] = {}
            for k, o in v.items():
                letter = str(k).strip()
                if not letter:
                    raise ValueError(f"option key {k!r} is blank; expected a letter such as 'A'")
                if letter in out:
                    raise ValueError(f"option keys {written[letter]!r} and {k!r} are the same letter "
                                     f"{letter!r}; each option needs its own")
                out[letter], written[letter] = str(o), str(k)
            return out
        raise ValueError("options must be a list or a mapping of letters to text")

    @field_validator("meta")
    @classmethod
    def _standard_json(cls, v: Any) -> Any:
        # A benchmark row can hold a float NaN; questions.jsonl must stay JSON every reader takes.
        if not _finite(v):
            raise ValueError("meta holds NaN or an infinite number, which JSON cannot (use null)")
        return v

    @property
    def gold_letter(self) -> str | None:
        """The gold answer as an option letter, whether given as a letter or as the text."""
        if not self.options or self.answer is None:
            return None
        a = self.answer.strip()
        if a in self.options:
            return a
        if a.upper() in self.options:
            return a.upper()
        for k, text in self.options.items():
            if text.strip().lower() == a.lower():
                return k
        return None

    def record(self) -> dict:
        """The question as stored in questions.jsonl (exactly what the run used)."""
        return self.model_dump(exclude_none=True)


def _finite(v: Any) -> bool:
    """No NaN or infinity anywhere in ``v`` (walked without recursion: JSON nests deep)."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            return False
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)
    return True


def parse_questions(text: str | list[str], source: str) -> list[Question]:
    """Every question of a JSONL text (or its lines); ``QuestionsError`` naming ``source:line``."""
    if isinstance(text, list):
        text = "\n".join(text)
    out: list[Question] = []
    seen: dict[str, int] = {}
    try:
        parsed = list(jsonl.parse(text))
    except jsonl.JSONLError as e:
        raise QuestionsError(f"{source}:{e.lineno}: {e.message}") from None
    for lineno, obj in parsed:
        if not isinstance(obj, dict):
            raise QuestionsError(f"{source}:{lineno}: expected a JSON object like {{\"question\": \"...\"}}")
        if "question" not in obj:
            raise QuestionsError(f"{source}:{lineno}: missing the 'question' key")
        obj.setdefault("id", str(lineno))
        try:
            q = Question.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (allowed: id, question, context, options, answer, reference, meta)"
            raise QuestionsError(f"{source}:{lineno}: {field}: {msg}") from None
        if q.answer is not None and q.options and q.gold_letter is None:
            raise QuestionsError(
                f"{source}:{lineno}: answer {q.answer!r} is neither an option letter nor an option's text"
            )
        if q.id in seen:
            raise QuestionsError(
                f"{source}:{lineno}: duplicate id {q.id!r} (first on line {seen[q.id]}); ids must be unique"
            )
        seen[q.id] = lineno
        q.index = len(out) + 1
        out.append(q)
    if not out:
        raise QuestionsError(f"{source}: no questions (expected JSONL lines like {{\"question\": \"...\"}})")
    return out


def load_questions(path: str | Path) -> list[Question]:
    p = Path(path)
    text = QuestionsError.read_text(p, missing="no such questions file", folder="expected a JSONL file",
                                    limit=MAX_QUESTIONS_FILE, what="a questions file")
    return parse_questions(text, str(p))


def dump_questions(questions: list[Question]) -> str:
    return jsonl.dumps_lines(q.record() for q in questions)
