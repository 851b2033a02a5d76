"""Synthetic run folders for the report, show and judge tests (and bench/bench_report.py).

A run folder written here has exactly the layout a real run leaves (run.json, questions.jsonl,
<model_dir>/{N.txt, responses.jsonl, manifest.json}), built from the same pydantic records the
runner writes, so the report reads it through the same code path as a real run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.artefacts.records import ModelManifest, ResponseRecord, RunInfo, package_versions
from runner.questions import Question, dump_questions, parse_questions

SYSTEM_PROMPT = "You are a careful oncologist. Answer with the option letter first."

# Hostile answer text: the page must show it as text, never run or render it.
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"></pre></div><b>bold?</b>'


def tiny_questions() -> list[Question]:
    """Four questions: three multiple choice (one with a context) and one free text."""
    lines = [
        {"id": "q-aspirin", "question": "Does low-dose aspirin reduce the risk of colorectal cancer?",
         "context": "A pooled analysis of randomised trials followed 14,033 patients for 20 years.",
         "options": ["yes", "no", "maybe"], "answer": "yes",
         "reference": "Yes: daily aspirin reduced colorectal cancer incidence in long-term follow-up."},
        {"id": "q-her2", "question": "Which drug targets HER2?",
         "options": {"A": "Imatinib", "B": "Trastuzumab", "C": "Rituximab", "D": "Cetuximab"}, "answer": "B",
         "reference": "Trastuzumab is a monoclonal antibody against HER2."},
        {"id": "q-bcg", "question": "Is BCG used for non-muscle-invasive bladder cancer?",
         "options": ["yes", "no", "maybe"], "answer": "yes",
         "reference": "Yes, intravesical BCG is standard for high-risk NMIBC."},
        {"id": "q-free", "question": "Explain what a tumour marker is.",
         "reference": "A substance, often a protein, whose level in blood or tissue relates to a cancer."},
    ]
    return parse_questions([json.dumps(x) for x in lines], "tiny.jsonl")


@dataclass
class FakeModel:
    """A model of the synthetic run and how it answers question ``q`` (index i)."""

    model_dir: str
    model: str
    backend: str = "echo"
    answer: Callable[[Question], str | None] | None = None
    error: Callable[[Question], str | None] | None = None
    latency: float = 1.0
    kind: str = "generate"
    entry: dict = field(default_factory=dict)  # extra keys of its models.yaml entry
    finish: Callable[[Question, str], str] | None = None  # finish_reason of an answer (default "stop")


def tiny_models() -> list[FakeModel]:
    """Three models with known answers to tiny_questions():

    - good-model: right on all three multiple-choice questions;
    - weak-model: wrong on q-aspirin ("no"), no answer on q-her2, right on q-bcg, hostile free text;
    - flaky-model: right on q-aspirin, an error on q-her2, wrong on q-bcg ("maybe").
    """
    good = {"q-aspirin": "Answer: A. yes\nLong-term follow-up shows a reduced incidence.",
            "q-her2": "**B** — trastuzumab binds HER2.",
            "q-bcg": "Yes (A). Intravesical BCG is standard of care.",
            "q-free": "A tumour marker is a substance in blood or tissue linked to a cancer. "
                      "Please consult your oncologist."}
    weak = {"q-aspirin": "Answer: B. no",
            "q-her2": "I am not sure which of these it is.",
            "q-bcg": "Answer: A",
            "q-free": HOSTILE}
    flaky = {"q-aspirin": "A", "q-her2": None, "q-bcg": "Answer: C. maybe",
             "q-free": "Something in the blood."}
    return [
        FakeModel("good-model", "good-model", latency=0.8, answer=lambda q: good[q.id]),
        FakeModel("weak-model", "weak-model", latency=2.5, answer=lambda q: weak[q.id]),
        FakeModel("flaky-model", "org/flaky-model", latency=1.6, answer=lambda q: flaky[q.id],
                  error=lambda q: "RateLimitError: 429 after 5 attempts" if q.id == "q-her2" else None),
    ]


def synthetic_models(n: int, seed: int = 0) -> list[FakeModel]:
    """``n`` models answering multiple-choice questions with different skill, words and speed."""
    out = []
    for k in range(n):
        skill = 0.35 + 0.1 * k
        rng_seed = seed * 1000 + k

        def answer(q: Question, skill=skill, rng_seed=rng_seed, k=k) -> str:
            rng = random.Random(f"{rng_seed}-{q.index}")
            letters = list(q.options or {"A": ""})
            gold = q.gold_letter or letters[0]
            r = rng.random()
            filler = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 60 + 40 * k)))
            if r < 0.08:
                return f"It is difficult to say without more data. {filler}"
            pick = gold if r < 0.08 + skill else rng.choice([x for x in letters if x != gold] or letters)
            return f"Answer: {pick}. {q.options[pick] if q.options else ''}\n\n{filler}"

        out.append(FakeModel(f"model-{k}", f"org/model-{k}", latency=0.5 + k, answer=answer))
    return out


_WORDS = ("the", "trial", "patients", "tumour", "survival", "dose", "risk", "cohort", "therapy", "evidence",
          "randomised", "outcome", "significant", "mortality", "biopsy", "staging", "response", "median")


# --- answers as long and as varied as real ones ------------------------------------------------

#: Median answer length in words of each model of a realistic panel, under a 512-token cap:
#: from a terse small model to chatty API models (real PubMedQA answers with an expert system
#: prompt run from a one-line verdict to several paragraphs).
PANEL_MEDIAN_WORDS = (45, 230, 120, 300, 180, 70, 260, 150, 210, 95)
CAP_WORDS = 380  # about 512 tokens of English: longer answers are cut, finish_reason "length"
# What real answers hold and the page must survive: line and paragraph separators, markup-like
# brackets, tags and entities (model output is untrusted text).
ODD_BITS = ("\u2028", "\u2029", "[/]", "</script>", "<!--", "&amp;", "\u00a0", "`<b>`", "]]>", "{{ x }}")


def scaled_questions(base: list[Question], n: int) -> list[Question]:
    """``n`` questions cycling through ``base`` (ids made unique), indexed 1..n."""
    out = []
    for i in range(n):
        q = base[i % len(base)]
        rnd = i // len(base)
        out.append(q.model_copy(update={"index": i + 1, "id": q.id if rnd == 0 else f"{q.id}~{rnd}"}))
    return out


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")) if len(s) > 20]


def realistic_models(n: int, questions: list[Question], seed: int = 0) -> list[FakeModel]:
    """``n`` models whose answers read like real ones: a verdict, then medical prose.

    Prose is drawn from the questions' own abstracts and references (real sentences, mostly
    the question's own), so lengths, vocabulary and tokenisation are those of real answers;
    each model has its own typical length, skill and style, and about one answer in 200 fails.
    """
    pool = [s for q in questions for s in _sentences((q.context or "") + " " + (q.reference or ""))]
    out = []
    for k in range(n):
        median = PANEL_MEDIAN_WORDS[k % len(PANEL_MEDIAN_WORDS)]
        skill = 0.45 + 0.4 * ((7 * k) % n) / max(1, n)

        def answer(q: Question, k=k, median=median, skill=skill) -> str:
            rng = random.Random(f"{seed}-{k}-{q.index}")
            letters = list(q.options or {})
            gold = q.gold_letter
            own = _sentences((q.context or "") + " " + (q.reference or "")) or pool[:3]
            target = min(CAP_WORDS + 40, max(3, int(rng.lognormvariate(math.log(median), 0.45))))
            r = rng.random()
            if not letters:
                head = ""
            elif r < 0.06:
                head = "It is difficult to give a definitive answer from this abstract alone."
            else:
                pick = gold if (gold and r < 0.06 + skill) else rng.choice(letters)
                head = (f"**Answer: {pick}. {q.options[pick]}**", f"{q.options[pick].capitalize()}.",
                        f"The answer is ({pick}).")[k % 3]
            words, parts = len(head.split()), [head] if head else []
            while words < target:
                s = rng.choice(own) if rng.random() < 0.7 else rng.choice(pool)
                if rng.random() < 0.03:
                    cut = rng.randrange(len(s))
                    s = s[:cut] + rng.choice(ODD_BITS) + s[cut:]
                if rng.random() < 0.12:
                    s = "\n\n- " + s
                parts.append(s)
                words += len(s.split())
            text = " ".join(parts)
            cut = text.split(" ")
            return " ".join(cut[:CAP_WORDS]) if len(cut) > CAP_WORDS else text

        def error(q: Question, k=k) -> str | None:
            hit = random.Random(f"{seed}-err-{k}-{q.index}").random() < 0.005
            return "TimeoutError: no reply in 120 s after 5 attempts" if hit else None

        def finish(q: Question, text: str) -> str:
            return "length" if len(text.split(" ")) >= CAP_WORDS else "stop"

        out.append(FakeModel(f"panel-{k:02d}", f"org/panel-model-{k:02d}", latency=0.6 + 0.37 * k,
                             answer=answer, error=error, finish=finish))
    return out


def write_run(root: Path, questions: list[Question], models: list[FakeModel], *, name: str = "tiny",
              run_id: str = "tiny-0000000001", extra_models: list[dict] | None = None,
              records: bool = False, questions_source: dict | None = None) -> Path:
    """Write a complete run folder under ``root`` and return its path (``root/run_id``).

    ``records``: also leave ``records/NNNNNN.json`` beside ``responses.jsonl``, as a finished
    run of the runner does (each the same JSON as its line). ``questions_source``: run.json's
    provenance block of a named benchmark (``benchmark_source`` builds one).
    """
    run = root / run_id
    run.mkdir(parents=True, exist_ok=True)
    qjsonl = dump_questions(questions)
    (run / "questions.jsonl").write_text(qjsonl, encoding="utf-8")
    entries = [{"id": m.model, "backend": m.backend, **({"name": m.model_dir}
                if m.model_dir != m.model.replace("/", "_") else {}), **m.entry} for m in models]
    entries += extra_models or []
    info = RunInfo(
        run_id=run_id, name=name, created_at="2025-01-02T03:04:05+00:00",
        config={"name": name, "questions": "questions.jsonl", "system_prompt": SYSTEM_PROMPT,
                "generation": {"max_new_tokens": 256, "temperature": 0.0, "seed": 0}, "models": entries},
        system_prompts={m.model_dir: SYSTEM_PROMPT for m in models},
        questions_sha256=hashlib.sha256(qjsonl.encode()).hexdigest(), n_questions=len(questions),
        versions=package_versions(), questions_source=questions_source,
    )
    (run / "run.json").write_text(info.model_dump_json(indent=2), encoding="utf-8")
    for m in models:
        folder = run / m.model_dir
        folder.mkdir(exist_ok=True)
        lines, errors = [], 0
        for q in questions:
            err = m.error(q) if m.error else None
            text = None if err else (m.answer(q) if m.answer else None)
            errors += bool(err)
            rec = ResponseRecord(
                id=q.id, index=q.index, prompt=[{"role": "system", "content": SYSTEM_PROMPT},
                                                {"role": "user", "content": q.question}],
                response=text, finish_reason=None if err else (m.finish(q, text) if m.finish else "stop"),
                input_tokens=40 + len(q.question) // 4,
                output_tokens=None if text is None else len(text.split()),
                latency_s=m.latency * (1 + (q.index % 3) / 10), error=err,
                attempts=5 if err else 1,
            )
            lines.append(rec.model_dump_json(exclude_none=True))
            if records:
                (folder / "records").mkdir(exist_ok=True)
                (folder / "records" / f"{q.index:06d}.json").write_text(lines[-1], encoding="utf-8")
            if text is not None:
                (folder / f"{q.index}.txt").write_text(text, encoding="utf-8")
        (folder / "responses.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        manifest = ModelManifest(
            run_id=run_id, model=m.model, model_dir=m.model_dir, backend=m.backend, kind=m.kind,
            parameters={"id": m.model, "backend": m.backend, "generation": {"max_new_tokens": 256}},
            status="complete", total=len(questions), done=len(questions) - errors, errors=errors,
            started_at="2025-01-02T03:04:06+00:00", finished_at="2025-01-02T03:05:06+00:00",
        )
        (folder / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return run


def benchmark_source(questions: list[Question], **changes) -> dict:
    """run.json's ``questions_source`` for a seeded MedQA sample, as runner.benchmarks writes it."""
    source = {
        "benchmark": "medqa", "title": "MedQA (USMLE, 4 options)", "subject": None, "split": "test",
        "dataset": "GBaker/MedQA-USMLE-4-options-hf", "config": None, "data_dir": None, "source": "hub",
        "path": None, "pinned_revision": "17af9355ef89fba60de966eabaeba797c695f86e",
        "revision": "17af9355ef89fba60de966eabaeba797c695f86e", "files_sha256": None,
        "license": "CC-BY-SA-4.0", "lm_eval_task": "medqa_4options", "rows_in_split": 1273,
        "limit": len(questions), "seed": 0, "n_questions": len(questions),
        "loglikelihood": {"prompt_template": "Question: {question}\n{options}\nAnswer:",
                          "continuations": "letters", "target_delimiter": " "},
        "instruction_template": "The following is a multiple-choice question ...",
    }
    return {**source, **changes}


def tiny_run(root: Path, **kw) -> Path:
    return write_run(root, tiny_questions(), tiny_models(), **kw)


_DATA = re.compile(r'<script type="application/json" id="report-data" '
                   r'data-encoding="([\w-]+)">(.*?)</script>', re.S)


def page_data(html: str) -> dict:
    """The questions and answers a report page carries, decoded as the page's script does."""
    m = _DATA.search(html)
    assert m, "the page has no data element"
    encoding, body = m.groups()
    if encoding == "deflate-base64":
        body = zlib.decompress(base64.b64decode(body)).decode("utf-8")
    return json.loads(body)
